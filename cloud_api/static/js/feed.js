// The live event feed: newest on top, a bounded list, each event shown once however often
// it arrives (the list on load and the stream may overlap; delivery is at-least-once). Each
// event that starts something has a confirm / false-alarm control (an operate key's feedback).

import { el } from "./dom.js";
import { formatNumber, formatTime } from "./format.js";

/** The events a person can judge: the ones that start an incident or stand alone. */
const JUDGED = new Set(["start", "instant"]);

export class Feed {
  /** `onFeedback(event, verdict)` records a verdict and resolves to the API's answer. */
  constructor(list, empty, limit = 100, onFeedback = null) {
    this.list = list;
    this.empty = empty;
    this.limit = limit;
    this.onFeedback = onFeedback;
    this.shown = new Set();
    // A new key starts a new feed: events shown under the previous one go.
    list.replaceChildren();
    empty.hidden = false;
  }

  /** Add events (any order) above those shown, oldest first so the newest ends on top. */
  add(events) {
    const fresh = events.filter((event) => !this.shown.has(event.id));
    fresh.sort((a, b) => Date.parse(a.received_at) - Date.parse(b.received_at));
    for (const event of fresh) {
      this.shown.add(event.id);
      this.list.prepend(this.item(event));
    }
    while (this.list.children.length > this.limit) {
      const last = this.list.lastElementChild;
      this.shown.delete(last.dataset.eventId);
      last.remove();
    }
    this.empty.hidden = this.list.children.length > 0;
    return fresh.length;
  }

  item(event) {
    const attributes = Object.entries(event.attributes || {})
      .slice(0, 4)
      .map(([name, value]) => `${name}=${formatNumber(value)}`)
      .join(" ");
    return el(
      "li",
      { testid: "feed-item", class: `feed-item ${event.kind}`, dataset: { eventId: event.id, label: event.label } },
      el(
        "div",
        { class: "feed-head" },
        el("time", { datetime: event.ts, title: `received ${event.received_at}` }, formatTime(event.ts)),
        el("span", { class: "label", testid: "feed-label" }, event.label),
        el("span", { class: "state" }, event.state),
        el("span", { class: "score", title: "score" }, formatNumber(event.score)),
      ),
      el(
        "div",
        { class: "feed-detail muted" },
        `${event.agent_id} / ${event.pipeline} · ${event.model_name}@${event.model_version}`,
        attributes ? ` · ${attributes}` : "",
      ),
      this.onFeedback && JUDGED.has(event.state) ? this.controls(event) : "",
    );
  }

  /** Confirm / false alarm buttons; once answered, what was recorded replaces them. */
  controls(event) {
    const outcome = el("span", { class: "muted", testid: "feedback-outcome" });
    const box = el("div", { class: "feedback" });
    const button = (verdict, text) => {
      const node = el("button", { type: "button", testid: `feedback-${verdict}` }, text);
      node.addEventListener("click", async () => {
        for (const other of box.querySelectorAll("button")) other.disabled = true;
        try {
          const answer = await this.onFeedback(event, verdict);
          box.dataset.verdict = verdict;
          outcome.textContent = `${verdict.replace("_", " ")} by ${answer.author} · ` +
            `${answer.samples_labelled} sample(s) labelled ${answer.label}`;
        } catch (failure) {
          outcome.textContent = failure.message;
          for (const other of box.querySelectorAll("button")) other.disabled = false;
        }
      });
      return node;
    };
    box.append(button("confirmed", "confirm"), button("false_alarm", "false alarm"), outcome);
    return box;
  }
}
