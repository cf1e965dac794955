// How numbers, sizes and times read on the page. Pure functions: no DOM.

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/** 1536 -> "1.5 KiB". */
export function formatBytes(bytes) {
  if (!Number.isFinite(bytes)) return "–";
  let value = Math.abs(bytes);
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 ? 0 : 1;
  return `${bytes < 0 ? "-" : ""}${value.toFixed(digits)} ${UNITS[unit]}`;
}

/** 0.25 -> "25.0 %"; null -> "–". */
export function formatPercent(fraction) {
  if (fraction === null || fraction === undefined || !Number.isFinite(fraction)) return "–";
  return `${(fraction * 100).toFixed(fraction > 0 && fraction < 0.001 ? 3 : 1)} %`;
}

/** A duration in seconds, coarsely: "42 s", "3 min", "5 h", "2 d". */
export function formatDuration(seconds) {
  if (!Number.isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}

/** How long ago an ISO time was, relative to `now` (ms): "12 s ago"; null -> "never". */
export function formatAgo(iso, now = Date.now()) {
  if (!iso) return "never";
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return iso;
  return `${formatDuration((now - then) / 1000)} ago`;
}

/** An ISO time as the viewer's local clock time, with the date when it is not today. */
export function formatTime(iso, now = new Date()) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const time = date.toLocaleTimeString([], { hour12: false });
  return date.toDateString() === now.toDateString()
    ? time
    : `${date.toLocaleDateString()} ${time}`;
}

/** A score or attribute value, short. */
export function formatNumber(value) {
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return String(value);
  return Math.abs(value) >= 100 ? value.toFixed(0) : value.toPrecision(3);
}
