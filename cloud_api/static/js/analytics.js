// A machine's health trend (`GET /api/v1/signals`: each sensor pipeline's score per hour over
// the last week, as a sparkline of the hourly mean with the week's peak) and traffic counts
// (`GET /api/v1/aggregates` grouped by the crossings' line and direction, last 24 h).

import { el, fill } from "./dom.js";

const WIDTH = 160;
const HEIGHT = 28;

/** The polyline points of `values` scaled into the sparkline's box (min at the bottom). */
export function sparkline(values) {
  if (values.length === 0) return "";
  const low = Math.min(...values);
  const high = Math.max(...values);
  const span = high - low || 1;
  const step = values.length > 1 ? WIDTH / (values.length - 1) : 0;
  return values
    .map((value, i) => `${(i * step).toFixed(1)},${(HEIGHT - ((value - low) / span) * HEIGHT).toFixed(1)}`)
    .join(" ");
}

/** An inline SVG sparkline; the HTML parser puts <svg> in its namespace. `points` holds only
 * numbers, commas and spaces (from `sparkline`), never text from the API. */
function svgLine(points) {
  const template = document.createElement("template");
  template.innerHTML =
    `<svg viewBox="0 0 ${WIDTH} ${HEIGHT}" width="${WIDTH}" height="${HEIGHT}">` +
    `<polyline points="${points}" fill="none" stroke="currentColor"/></svg>`;
  return template.content.firstElementChild;
}

function number(value) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(3);
}

/** Show `report` (a SignalReport) in the health panel: a row per agent and pipeline. */
export function renderHealth(root, report) {
  const rows = report.series.map((series) => {
    const means = series.points.map((point) => point.mean ?? point.max);
    const latest = series.points.at(-1);
    const peak = Math.max(...series.points.map((point) => point.max));
    return el(
      "tr",
      {
        testid: "health-row",
        dataset: { agentId: series.agent_id, pipeline: series.pipeline, points: series.points.length, peak },
      },
      el("td", {}, series.agent_id),
      el("td", {}, series.pipeline),
      el("td", { class: "num", testid: "health-latest" }, number(latest?.mean)),
      el("td", { class: "num", testid: "health-peak" }, number(peak)),
      el("td", { class: "spark" }, svgLine(sparkline(means))),
    );
  });
  fill(
    root.querySelector('[data-testid="health-rows"]'),
    rows.length > 0
      ? rows
      : el("tr", {}, el("td", { colspan: 5, class: "muted" }, "no sensor summaries this week")),
  );
}

/** Show `report` (an AggregateReport grouped by the attributes line and direction). */
export function renderLineCounts(root, report) {
  const rows = report.series
    .map((series) => ({
      line: series.group["attributes.line"],
      direction: series.group["attributes.direction"],
      count: series.points.reduce((sum, point) => sum + point.count, 0),
    }))
    .sort((a, b) => a.line.localeCompare(b.line) || a.direction.localeCompare(b.direction))
    .map((row) =>
      el(
        "tr",
        { testid: "line-row", dataset: { line: row.line, direction: row.direction, count: row.count } },
        el("td", {}, row.line),
        el("td", {}, row.direction.replaceAll("_", " ")),
        el("td", { class: "num" }, row.count),
      ),
    );
  fill(
    root.querySelector('[data-testid="line-rows"]'),
    rows.length > 0 ? rows : el("tr", {}, el("td", { colspan: 3, class: "muted" }, "no crossings today")),
  );
}
