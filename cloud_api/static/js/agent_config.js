// The remote configuration panel: per agent, the overlay an operator set (desired) and what
// the agent reported (applied, or refused with the reason), from `GET /api/v1/agent-configs`.
// A server without that route (404) shows no agents.

import { el, fill } from "./dom.js";

function overlayText(overlay) {
  const text = JSON.stringify(overlay ?? {});
  return text === "{}" ? "file only" : text;
}

function configRow(config) {
  const desired = config.desired;
  const reported = config.reported;
  return el(
    "tr",
    { testid: "config-row", dataset: { agentId: config.agent_id, state: config.state } },
    el("td", {}, config.agent_id),
    el("td", {}, el("span", { testid: "config-state", class: `badge ${config.state}` }, config.state)),
    el(
      "td",
      { testid: "config-desired" },
      desired ? [el("span", { class: "muted" }, `v${desired.version} `), el("code", {}, overlayText(desired.overlay))] : "–",
    ),
    el(
      "td",
      { testid: "config-reported" },
      reported && reported.applied_version !== null
        ? [el("span", { class: "muted" }, `v${reported.applied_version} `), el("code", {}, overlayText(reported.applied))]
        : "file only",
    ),
    el("td", { testid: "config-refused", class: "bad" }, reported?.refused ?? ""),
  );
}

/** Show `body` (a page of `GET /api/v1/agent-configs`, or null on 404) in the panel. */
export function renderAgentConfigs(root, body) {
  const configs = (body?.items ?? []).filter((config) => config.state !== "none" || config.reported?.applied_version);
  root.querySelector('[data-testid="configs-empty"]').hidden = configs.length > 0;
  fill(root.querySelector('[data-testid="config-rows"]'), configs.map(configRow));
}
