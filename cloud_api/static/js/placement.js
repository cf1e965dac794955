// Where each pipeline's model should run (`GET /api/v1/placement`): the edge's measured
// figures beside the cloud alternative (at the agent's link rate: its label, its measurement
// or the default), each side's cost per month, and the verdict.

import { el, fill } from "./dom.js";

function ms(value) {
  return value === null || value === undefined ? "–" : Number(value).toPrecision(3);
}

/** The link rate and where it comes from: "0.2 Mbit/s configured", "9.6 Mbit/s measured". */
function link(row) {
  if (row.link_mbps === null || row.link_mbps === undefined) return "–";
  return `${Number(row.link_mbps).toPrecision(3)} Mbit/s ${row.link_source ?? ""}`.trim();
}

function money(value) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(2);
}

/** Show `report` (a PlacementReport) in the placement panel: a row per agent's pipeline. */
export function renderPlacement(root, report) {
  const rows = report.pipelines.map((row) =>
    el(
      "tr",
      { testid: "placement-row", dataset: { agentId: row.agent_id, pipeline: row.pipeline, verdict: row.verdict } },
      el("td", {}, row.agent_id),
      el("td", {}, row.pipeline),
      el("td", { class: "num" }, `${ms(row.edge_inference_p50_ms)} / ${ms(row.round_trip_ms)}`),
      el("td", { class: "num", testid: "placement-link", dataset: { source: row.link_source ?? "" } }, link(row)),
      el("td", { class: "num" }, `${money(row.edge_cost_per_month)} / ${money(row.cloud_cost_per_month)}`),
      el("td", { testid: "placement-verdict", title: row.reason }, `${row.verdict}: ${row.reason}`),
    ),
  );
  fill(
    root.querySelector('[data-testid="placement-rows"]'),
    rows.length > 0
      ? rows
      : el("tr", {}, el("td", { colspan: 6, class: "muted" }, "no summaries in the last 24 h")),
  );
}
