// Shadow evaluation (`GET /api/v1/deployments/{id}/shadow`): each shadow deployment's
// candidate against the serving model on the same inputs, and the operator's buttons to
// promote it into a canary or discard it while it is still in shadow.

import { el, fill } from "./dom.js";

/** The shadow deployments among `deployments` (the JSON of `GET /api/v1/deployments`). */
export function shadowDeployments(deployments) {
  return deployments.filter((deployment) => deployment.strategy?.kind === "shadow");
}

function rate(value) {
  return value === null || value === undefined ? "–" : `${Number(value).toFixed(1)}/1k`;
}

function ms(value) {
  return value === null || value === undefined ? "–" : `${(Number(value) * 1e3).toPrecision(3)} ms`;
}

function share(value) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(3);
}

function buttons(report, onDecide) {
  if (report.state !== "shadow" || !onDecide) return null;
  return ["promote", "discard"].map((action) => {
    const button = el("button", { type: "button", testid: `shadow-${action}` }, action);
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await onDecide(report.deployment_id, action);
      } finally {
        button.disabled = false;
      }
    });
    return button;
  });
}

/** Show `reports` (ShadowOut bodies, each with its deployment's `model` and `version`) in the
 * shadow panel; `onDecide(id, "promote" | "discard")` answers the buttons. */
export function renderShadows(root, reports, onDecide = null) {
  root.querySelector('[data-testid="shadows-empty"]').hidden = reports.length > 0;
  fill(
    root.querySelector('[data-testid="shadow-rows"]'),
    reports.map((report) => {
      const f = report.figures;
      return el(
        "tr",
        { testid: "shadow-row", dataset: { deploymentId: report.deployment_id, state: report.state } },
        el("td", {}, `${report.model ?? ""}@${report.version ?? ""}`),
        el("td", {}, el("span", { class: `badge ${report.state}`, testid: "shadow-state" }, report.state)),
        el("td", { class: "num", testid: "shadow-inputs" }, f ? `${f.inputs_shadowed} / ${f.inputs_seen}` : "–"),
        el("td", { class: "num", testid: "shadow-agreement" }, f ? share(f.agreement) : "–"),
        el("td", { class: "num", testid: "shadow-alarms" }, f ? `${rate(f.candidate_alarm_rate_per_1k)} vs ${rate(f.serving_alarm_rate_per_1k)}` : "–"),
        el("td", { class: "num", testid: "shadow-p99" }, f ? `${ms(f.candidate_p99_s)} vs ${ms(f.serving_p99_s)}` : "–"),
        el("td", { class: "muted", testid: "shadow-reason" }, report.reason),
        el("td", {}, buttons(report, onDecide)),
      );
    }),
  );
}
