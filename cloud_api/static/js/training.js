// Training jobs (`GET /api/v1/training-jobs`): state, progress, reason, and for a version a
// job registered its lineage: parent version -> new version, from which dataset version.

import { el, fill } from "./dom.js";
import { formatAgo } from "./format.js";

function checks(report) {
  if (!report || !report.checks) return null;
  return el(
    "details",
    {},
    el("summary", {}, report.passed ? "gate passed" : "gate not met"),
    el("ul", { class: "plain" }, report.checks.map((check) =>
      el("li", { testid: "job-check", dataset: { passed: String(check.passed) } },
        `${check.passed ? "✓" : "✗"} ${check.detail}`),
    )),
  );
}

function lineage(job) {
  if (!job.result_version) return null;
  return el(
    "div",
    { testid: "job-lineage", class: "muted" },
    `${job.base_model}@${job.base_version} → ${job.base_model}@${job.result_version}`,
    job.dataset_version_id ? ` from dataset version ${job.dataset_version_id}` : "",
  );
}

/** Show `jobs` (the JSON of `GET /api/v1/training-jobs`) in the training panel. */
export function renderJobs(root, jobs, now = Date.now()) {
  const list = root.querySelector('[data-testid="training-jobs"]');
  root.querySelector('[data-testid="training-empty"]').hidden = jobs.length > 0;
  fill(
    list,
    jobs.map((job) =>
      el(
        "li",
        { testid: "job-row", dataset: { jobId: job.id, state: job.state } },
        el(
          "div",
          { class: "deployment-head" },
          el("span", { class: "model" }, `#${job.id} ${job.trainer}`),
          el("span", { class: "muted" }, ` on ${job.pipeline}, from ${job.base_model}@${job.base_version}`),
          el("span", { class: `badge ${job.state}`, testid: "job-state" }, job.state),
        ),
        job.state === "running"
          ? el("progress", { max: 1, value: job.progress, testid: "job-progress" })
          : null,
        job.reason ? el("div", { class: "reason", testid: "job-reason" }, job.reason) : null,
        lineage(job),
        checks(job.report),
        el("div", { class: "muted" }, `created ${formatAgo(job.created_at, now)} by ${job.created_by}`),
      ),
    ),
  );
}
