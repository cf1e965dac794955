// The live event feed: newest on top, a bounded list, each event shown once however often
// it arrives (the list on load and the stream may overlap; delivery is at-least-once).

import { el } from "./dom.js";
import { formatNumber, formatTime } from "./format.js";

export class Feed {
  constructor(list, empty, limit = 100) {
    this.list = list;
    this.empty = empty;
    this.limit = limit;
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
    );
  }
}
