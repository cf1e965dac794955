// The review list: samples whose edge and cloud labels disagree, newest first, each with a
// link to the input itself (a window or a picture, as the device's privacy policy allowed).

import { el } from "./dom.js";
import { formatTime } from "./format.js";

/** Fill the review panel from the first page of `GET /api/v1/samples/review`. */
export function renderReview(panel, rows) {
  const body = panel.querySelector('[data-testid="review-rows"]');
  const empty = panel.querySelector('[data-testid="review-empty"]');
  body.replaceChildren(
    ...rows.map((row) =>
      el(
        "tr",
        { testid: "review-row", dataset: { sampleId: row.sample.id } },
        el("td", {}, el("time", { datetime: row.sample.ts }, formatTime(row.sample.ts))),
        el("td", {}, `${row.sample.agent_id} / ${row.sample.pipeline}`),
        el("td", { testid: "review-edge" }, row.edge_label),
        el("td", { testid: "review-cloud" }, row.cloud_label),
        el("td", {}, row.sample.reason),
      ),
    ),
  );
  empty.hidden = rows.length > 0;
}
