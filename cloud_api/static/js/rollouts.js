// Rollout state: each deployment of a model version with its per-agent counts
// (`GET /api/v1/deployments`). A server without that route (404) has no deployments.

import { el, fill } from "./dom.js";
import { formatAgo } from "./format.js";

const PHASES = ["healthy", "updating", "pending", "failed", "rolled_back", "cancelled"];

/** `GET /api/v1/deployments` answers a list (or a page with `items`); null means 404. */
export function deploymentsOf(body) {
  if (body === null) return [];
  return Array.isArray(body) ? body : (body.items ?? []);
}

function counts(deployment) {
  const known = deployment.counts || {};
  return el(
    "div",
    { class: "counts", testid: "deployment-counts" },
    PHASES.filter((phase) => (known[phase] ?? 0) > 0).map((phase) =>
      el("span", { class: `count ${phase}`, dataset: { phase, value: known[phase] } }, `${known[phase]} ${phase.replace("_", " ")}`),
    ),
  );
}

function agentsTable(agents, now) {
  if (!agents || agents.length === 0) return null;
  return el(
    "details",
    {},
    el("summary", {}, `${agents.length} agents`),
    el(
      "table",
      { class: "compact" },
      el("tbody", {}, agents.map((agent) =>
        el(
          "tr",
          { testid: "deployment-agent", dataset: { agentId: agent.agent_id, state: agent.state } },
          el("td", {}, agent.agent_id),
          el("td", {}, agent.phase ?? ""),
          el("td", {}, agent.state),
          el("td", {}, agent.running_version ?? "–"),
          el("td", { class: "muted" }, agent.reason || formatAgo(agent.updated_at, now)),
        ),
      )),
    ),
  );
}

/** Show `body` (the JSON of `GET /api/v1/deployments`, or null on 404) in the rollouts panel. */
export function renderDeployments(root, body, now = Date.now()) {
  const deployments = deploymentsOf(body);
  const list = root.querySelector('[data-testid="deployments"]');
  root.querySelector('[data-testid="deployments-empty"]').hidden = deployments.length > 0;
  fill(
    list,
    deployments.map((deployment) =>
      el(
        "li",
        { testid: "deployment-row", dataset: { deploymentId: deployment.id, state: deployment.state } },
        el(
          "div",
          { class: "deployment-head" },
          el("span", { class: "model" }, `${deployment.model}@${deployment.version}`),
          el("span", { class: "muted" }, ` on ${deployment.pipeline}`),
          el("span", { class: `badge ${deployment.state}`, testid: "deployment-state" }, deployment.state),
        ),
        deployment.reason ? el("div", { class: "reason" }, deployment.reason) : null,
        counts(deployment),
        el("div", { class: "muted" }, `updated ${formatAgo(deployment.updated_at, now)}`),
        agentsTable(deployment.agents, now),
      ),
    ),
  );
}
