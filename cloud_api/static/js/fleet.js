// The fleet panel: every agent, online or offline with the reason, what each pipeline runs,
// and how much is waiting in its outbox.

import { el, fill } from "./dom.js";
import { formatAgo, formatDuration } from "./format.js";

function pipelineCell(pipelines) {
  if (pipelines.length === 0) return el("span", { class: "muted" }, "no pipelines");
  return el(
    "ul",
    { class: "plain" },
    pipelines.map((pipeline) =>
      el(
        "li",
        { testid: "agent-pipeline", dataset: { pipeline: pipeline.name } },
        el("span", { class: "name" }, pipeline.name),
        " ",
        pipeline.model
          ? el("span", { class: "model" }, `${pipeline.model.name}@${pipeline.model.version}`)
          : el("span", { class: "muted" }, "no model"),
        pipeline.errors > 0 ? el("span", { class: "bad" }, ` ${pipeline.errors} errors`) : null,
      ),
    ),
  );
}

function agentRow(agent, now) {
  const outbox =
    agent.outbox_depth > 0
      ? `${agent.outbox_depth} queued, oldest ${formatDuration(agent.outbox_oldest_age_s)}`
      : "empty";
  return el(
    "tr",
    { testid: "agent-row", dataset: { agentId: agent.agent_id, state: agent.state } },
    el("td", { testid: "agent-id" }, agent.agent_id),
    el("td", {}, el("span", { testid: "agent-state", class: `badge ${agent.state}` }, agent.state)),
    el("td", { testid: "agent-reason" }, agent.reason || ""),
    el("td", { testid: "agent-last-seen", title: agent.last_seen || "" }, formatAgo(agent.last_seen, now)),
    el("td", { testid: "agent-pipelines" }, pipelineCell(agent.pipelines)),
    el("td", { testid: "agent-outbox", dataset: { depth: agent.outbox_depth } }, outbox),
  );
}

/** Show `agents` (the items of `GET /api/v1/agents`) in the fleet panel. */
export function renderFleet(root, agents, now = Date.now()) {
  const online = agents.filter((agent) => agent.state === "online").length;
  const summary = root.querySelector('[data-testid="fleet-summary"]');
  summary.querySelector('[data-testid="fleet-online"]').textContent = String(online);
  summary.querySelector('[data-testid="fleet-total"]').textContent = String(agents.length);
  const body = root.querySelector('[data-testid="fleet-rows"]');
  if (agents.length === 0) {
    fill(body, el("tr", {}, el("td", { colspan: 6, class: "muted", testid: "fleet-empty" }, "no agent has reported yet")));
    return;
  }
  fill(body, agents.map((agent) => agentRow(agent, now)));
}
