// Escalations per agent and pipeline (`GET /api/v1/escalations/stats`): how often the edge
// asked the cloud model, how often they agreed, what was refused, and from the agent's last
// status its spool, its uploads and its escalation budget's drops.

import { el, fill } from "./dom.js";

function percent(value) {
  return value === null || value === undefined ? "–" : `${Math.round(value * 100)} %`;
}

function budget(status) {
  const parts = Object.entries(status)
    .filter(([name, value]) => name.startsWith("escalation") && typeof value === "number")
    .map(([name, value]) => `${name.replace(/^escalations?_/, "")} ${value}`);
  return parts.length > 0 ? parts.join(", ") : "–";
}

function kept(status) {
  const byReason = status.samples_kept ?? {};
  const total = Object.values(byReason).reduce((sum, count) => sum + count, 0);
  const bytes = status.sample_bytes_uploaded ?? 0;
  return `${total} kept, ${(bytes / 1024).toFixed(0)} KiB up, spool ${status.spool_depth ?? 0}`;
}

/** Show `report` (EscalationStats) in the escalations panel: a row per agent's pipeline. */
export function renderEscalations(root, report) {
  const rows = report.pipelines.map((row) =>
    el(
      "tr",
      { testid: "escalation-row", dataset: { agentId: row.agent_id, pipeline: row.pipeline } },
      el("td", {}, row.agent_id),
      el("td", {}, row.pipeline),
      el("td", { class: "num", testid: "escalation-count" }, `${row.escalations} (${row.rate_per_min.toFixed(2)}/min)`),
      el("td", { class: "num", testid: "escalation-agreement" }, percent(row.agreement)),
      el("td", { class: "num", testid: "escalation-refused" }, String(row.refused)),
      el("td", {}, budget(row.status)),
      el("td", {}, kept(row.status)),
    ),
  );
  fill(
    root.querySelector('[data-testid="escalation-rows"]'),
    rows.length > 0
      ? rows
      : el("tr", {}, el("td", { colspan: 7, class: "muted" }, "no escalations in the last hour")),
  );
}
