// Server-Sent Events over fetch(). A browser's EventSource cannot send an Authorization
// header, so the stream is read with fetch() and a ReadableStream, parsed here as the HTML
// standard's event-stream format says, and reconnected with Last-Event-ID and backoff.

import { AuthError, errorOf } from "./api.js";

/** Incremental event-stream parser: feed it text in chunks of any size, get whole messages. */
export class SseParser {
  /** `onMessage({id, event, data})` per dispatched message; `onComment(text)` per `:` line. */
  constructor(onMessage, onComment = () => {}) {
    this.onMessage = onMessage;
    this.onComment = onComment;
    this.buffer = "";
    this.afterCR = false;
    this.data = [];
    this.event = "";
    this.lastEventId = "";
  }

  push(text) {
    if (text === "") return;
    // A chunk that ended in "\r" may have split a "\r\n": its "\n" is not another line.
    if (this.afterCR && text.startsWith("\n")) text = text.slice(1);
    this.buffer += text;
    const pattern = /\r\n|\n|\r/g;
    let start = 0;
    let match;
    while ((match = pattern.exec(this.buffer)) !== null) {
      this.line(this.buffer.slice(start, match.index));
      start = match.index + match[0].length;
    }
    this.afterCR = start > 0 && start === this.buffer.length && this.buffer[start - 1] === "\r";
    this.buffer = this.buffer.slice(start);
  }

  line(line) {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line.startsWith(":")) {
      this.onComment(line.slice(1).trimStart());
      return;
    }
    const colon = line.indexOf(":");
    const name = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "data") this.data.push(value);
    else if (name === "event") this.event = value;
    else if (name === "id" && !value.includes("\0")) this.lastEventId = value;
    // "retry" and unknown fields are ignored: the reconnect policy is ours.
  }

  dispatch() {
    const data = this.data;
    const event = this.event || "message";
    const sawData = data.length > 0;
    this.data = [];
    this.event = "";
    if (sawData) this.onMessage({ id: this.lastEventId, event, data: data.join("\n") });
  }
}

const MIN_DELAY_MS = 500;
const MAX_DELAY_MS = 30_000;
/** No byte (not even a heartbeat) for this long means a dead connection: reconnect. */
const IDLE_MS = 60_000;

/**
 * One live stream that stays connected: after a drop it waits (backoff with jitter, reset once
 * bytes flow again) and resumes with `Last-Event-ID`, so no event is missed or repeated.
 *
 * States passed to `onState(state, detail)`: "connecting", "open", "reconnecting", "stopped".
 * A 401/403 stops the stream and calls `onAuthError(error)`.
 */
export class EventStream {
  constructor({ url, headers, onEvent, onState = () => {}, onAuthError = () => {}, lastEventId = "" }) {
    this.url = url;
    this.headers = headers;
    this.onEvent = onEvent;
    this.onState = onState;
    this.onAuthError = onAuthError;
    this.lastEventId = lastEventId;
    this.controller = null;
    this.stopped = true;
    this.generation = 0;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.generation += 1;
    this.run(this.generation);
  }

  stop() {
    this.stopped = true;
    this.controller?.abort();
    this.onState("stopped", "");
  }

  async run(generation) {
    let delay = MIN_DELAY_MS;
    // A stop() and start() during the wait below leave this loop to the newer one.
    while (!this.stopped && generation === this.generation) {
      this.onState("connecting", this.lastEventId ? `resuming after ${this.lastEventId}` : "");
      const outcome = await this.connect(() => {
        delay = MIN_DELAY_MS;
      });
      if (this.stopped || outcome.stop || generation !== this.generation) return;
      const wait = Math.max(outcome.retryAfterMs ?? 0, delay * (0.5 + Math.random() / 2));
      this.onState("reconnecting", `${outcome.reason}; retrying in ${Math.ceil(wait / 1000)} s`);
      await new Promise((resolve) => setTimeout(resolve, wait));
      delay = Math.min(delay * 2, MAX_DELAY_MS);
    }
  }

  /** One connection until it ends; says why and whether to try again. */
  async connect(onBytes) {
    const controller = new AbortController();
    this.controller = controller;
    const headers = this.headers({ Accept: "text/event-stream" });
    if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
    let response;
    try {
      response = await fetch(this.url(), { headers, signal: controller.signal, cache: "no-store" });
    } catch (error) {
      return { reason: `cannot reach the API (${error.message})` };
    }
    if (!response.ok) return this.refused(response);
    this.onState("open", "");
    const parser = new SseParser((message) => {
      if (message.id) this.lastEventId = message.id;
      if (message.event === "event") this.onEvent(JSON.parse(message.data));
    });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let idle = setTimeout(() => controller.abort(), IDLE_MS);
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return { reason: "the server closed the stream" };
        clearTimeout(idle);
        idle = setTimeout(() => controller.abort(), IDLE_MS);
        onBytes();
        parser.push(value);
      }
    } catch (error) {
      return { reason: `the stream broke (${error.message})` };
    } finally {
      clearTimeout(idle);
    }
  }

  async refused(response) {
    const error = await errorOf("api/v1/events/stream", response);
    if (error instanceof AuthError) {
      this.stopped = true;
      this.onAuthError(error);
      return { stop: true, reason: error.message };
    }
    if (response.status === 400 && this.lastEventId) {
      // The event to resume after is gone (a new database): stream from now instead.
      this.lastEventId = "";
      return { reason: error.detail, retryAfterMs: 0 };
    }
    const retryAfter = Number(response.headers.get("Retry-After"));
    return {
      reason: error.message,
      retryAfterMs: Number.isFinite(retryAfter) ? retryAfter * 1000 : 0,
    };
  }
}
