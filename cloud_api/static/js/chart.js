// Events per label over time: `GET /api/v1/aggregates?metric=count&group_by=label`, drawn
// with uPlot (vendored). Empty buckets come back left out; they are zero here.

import uPlot from "../vendor/uPlot.esm.js";

import { el, fill } from "./dom.js";

export const RANGES = {
  hour: { bucket: "minute", seconds: 3600, step: 60 },
  day: { bucket: "hour", seconds: 86400, step: 3600 },
};

const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

/** uPlot's aligned data: bucket starts (s) and one zero-filled count series per label. */
export function alignSeries(report, range) {
  const step = range.step;
  const first = Math.floor(Date.parse(report.since) / 1000 / step) * step;
  const last = Math.floor((Date.parse(report.until) - 1) / 1000 / step) * step;
  const times = new Set();
  for (let t = first; t <= last; t += step) times.add(t);
  for (const series of report.series) {
    for (const point of series.points) times.add(Date.parse(point.ts) / 1000);
  }
  const xs = [...times].sort((a, b) => a - b);
  const index = new Map(xs.map((t, i) => [t, i]));
  const labels = report.series.map((series) => series.group.label ?? "(all)");
  const ys = report.series.map((series) => {
    const values = new Array(xs.length).fill(0);
    for (const point of series.points) values[index.get(Date.parse(point.ts) / 1000)] = point.value;
    return values;
  });
  return { labels, data: [xs, ...ys] };
}

/** Axis ticks as a 24-hour clock in the viewer's time zone. */
function clockTime(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
}

export class LabelChart {
  constructor(root) {
    this.root = root;
    this.plot = null;
    this.labels = [];
    this.observer = new ResizeObserver(() => this.resize());
    this.observer.observe(root);
  }

  size() {
    return { width: Math.max(200, this.root.clientWidth), height: 240 };
  }

  resize() {
    this.plot?.setSize(this.size());
  }

  /** Draw `report` (an AggregateReport grouped by label) over `range` (one of RANGES). */
  update(report, range) {
    const { labels, data } = alignSeries(report, range);
    const totals = data.slice(1).map((values) => values.reduce((sum, value) => sum + value, 0));
    this.root.dataset.series = String(labels.length);
    this.root.dataset.total = String(totals.reduce((sum, value) => sum + value, 0));
    if (labels.length === 0) {
      this.destroy();
      fill(this.root, el("p", { class: "muted", testid: "chart-empty" }, "no events in this range"));
      return;
    }
    if (this.plot && labels.join("\n") === this.labels.join("\n")) {
      this.plot.setData(data);
      return;
    }
    this.destroy();
    fill(this.root);
    this.labels = labels;
    this.plot = new uPlot(
      {
        ...this.size(),
        scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
        legend: { live: false },
        axes: [
          { space: 60, values: (_u, splits) => splits.map(clockTime) },
          { label: `events per ${range.bucket}`, size: 40 },
        ],
        series: [
          {},
          ...labels.map((label, i) => ({
            label,
            stroke: COLOURS[i % COLOURS.length],
            width: 2,
          })),
        ],
      },
      data,
      this.root,
    );
    this.plot.root.dataset.testid = "chart-plot";
  }

  destroy() {
    this.plot?.destroy();
    this.plot = null;
    this.labels = [];
  }

  /** Remove the chart for good (the page goes back to the key form). */
  close() {
    this.observer.disconnect();
    this.destroy();
    fill(this.root);
  }
}
