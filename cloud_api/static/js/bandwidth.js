// Bandwidth saved: what the pipelines read at the edge against what they sent to the cloud
// (`GET /api/v1/stats/bandwidth`), for the fleet and per pipeline.

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
