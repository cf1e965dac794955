// Bandwidth saved: what the pipelines read at the edge against what they sent to the cloud
// (`GET /api/v1/stats/bandwidth`), for the fleet and per pipeline, and the bytes saved per hour
// of the last day (`GET /api/v1/stats/bandwidth/series`) as a small uPlot chart.

import uPlot from "../vendor/uPlot.esm.js";

import { el, fill } from "./dom.js";
import { formatBytes, formatPercent } from "./format.js";

function figure(testid, label, bytes) {
  return el(
    "div",
    { class: "figure" },
    el("span", { class: "figure-label" }, label),
    el("span", { class: "figure-value", testid, dataset: { value: bytes } }, formatBytes(bytes)),
  );
}

/** 1 - sent/raw: the share of raw bytes that never crossed the network. */
function savedShare(usage) {
  return usage.ratio === null ? null : 1 - usage.ratio;
}

/** Show `report` (a BandwidthReport) in the bandwidth panel. */
export function renderBandwidth(root, report) {
  const total = report.total;
  const share = savedShare(total);
  fill(
    root.querySelector('[data-testid="bandwidth-figures"]'),
    el(
      "div",
      { class: "headline" },
      el("span", { testid: "bandwidth-saved-share", dataset: { value: share ?? "" } }, formatPercent(share)),
      el("span", { class: "muted" }, " of the raw data never left the edge"),
    ),
    figure("bandwidth-raw", "read at the edge", total.raw_bytes),
    figure("bandwidth-sent", "sent to the cloud", total.sent_bytes),
    figure("bandwidth-saved", "saved", total.saved_bytes),
  );
  const rows = report.pipelines.map((usage) =>
    el(
      "tr",
      { testid: "bandwidth-row", dataset: { agentId: usage.agent_id, pipeline: usage.pipeline } },
      el("td", {}, usage.agent_id),
      el("td", {}, usage.pipeline),
      el("td", { class: "num" }, formatBytes(usage.raw_bytes)),
      el("td", { class: "num" }, formatBytes(usage.sent_bytes)),
      el("td", { class: "num" }, formatPercent(savedShare(usage))),
    ),
  );
  fill(
    root.querySelector('[data-testid="bandwidth-rows"]'),
    rows.length > 0
      ? rows
      : el("tr", {}, el("td", { colspan: 5, class: "muted" }, "no summaries received yet")),
  );
}

const HOUR_S = 3600;

/** uPlot's aligned data: hour starts (s) over the series' range and bytes saved in each, hours
 * without summaries as zero (the API leaves them out). */
export function alignSaved(series) {
  const first = Math.floor(Date.parse(series.since) / 1000 / HOUR_S) * HOUR_S;
  const last = Math.floor((Date.parse(series.until) - 1) / 1000 / HOUR_S) * HOUR_S;
  const saved = new Map(series.points.map((point) => [Date.parse(point.ts) / 1000, point.saved_bytes]));
  const xs = [];
  for (let t = first; t <= last; t += HOUR_S) xs.push(t);
  return [xs, xs.map((t) => saved.get(t) ?? 0)];
}

/** Bytes saved per hour of the last day; `update` takes a BandwidthSeries with hour buckets. */
export class SavedChart {
  constructor(root) {
    this.root = root;
    this.plot = null;
  }

  update(series) {
    const data = alignSaved(series);
    this.root.dataset.points = String(series.points.length);
    this.root.dataset.saved = String(data[1].reduce((sum, value) => sum + value, 0));
    if (this.plot) {
      this.plot.setData(data);
      return;
    }
    fill(this.root);
    this.plot = new uPlot(
      {
        width: Math.max(200, this.root.clientWidth),
        height: 120,
        scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
        legend: { show: false },
        axes: [{ space: 60 }, { size: 60, values: (_u, splits) => splits.map(formatBytes) }],
        series: [{}, { label: "saved per hour", stroke: "#16a34a", fill: "#16a34a22", width: 2 }],
      },
      data,
      this.root,
    );
  }

  close() {
    this.plot?.destroy();
    this.plot = null;
    fill(this.root);
  }
}
