// The dashboard: asks for an API key once, then shows the fleet, a live event feed, events per
// label over time, bandwidth saved and rollout state, from the public REST API only.

import { renderAgentConfigs } from "./agent_config.js";
import { renderHealth, renderLineCounts } from "./analytics.js";
import { Api, ApiError, AuthError } from "./api.js";
import { SavedChart, renderBandwidth } from "./bandwidth.js";
import { LabelChart, RANGES } from "./chart.js";
import { byTestId } from "./dom.js";
import { renderEscalations } from "./escalations.js";
import { Feed } from "./feed.js";
import { renderFleet } from "./fleet.js";
import { forgetKey, keyProblem, loadKey, saveKey, takeKeyFromFragment } from "./key.js";
import { renderReview } from "./review.js";
import { renderPlacement } from "./placement.js";
import { deploymentsOf, renderDeployments } from "./rollouts.js";
import { renderShadows, shadowDeployments } from "./shadow.js";
import { renderJobs } from "./training.js";
import { EventStream } from "./sse.js";

const REFRESH_MS = 5000;
const DAY_MS = 86_400_000;
const WEEK_MS = 7 * DAY_MS;
const FEED_LIMIT = 100;
const FEED_INITIAL = 50;
/** A burst of live events redraws the chart once. */
const CHART_DEBOUNCE_MS = 1000;
/** Shadow deployments whose reports are drawn (the newest). */
const SHADOWS_SHOWN = 5;

class Dashboard {
  constructor(key, onAuthError) {
    this.api = new Api(key);
    this.onAuthError = onAuthError;
    this.feed = new Feed(byTestId("feed"), byTestId("feed-empty"), FEED_LIMIT, (event, verdict) =>
      this.api.post(`api/v1/events/${event.id}/feedback`, { verdict }),
    );
    this.chart = new LabelChart(byTestId("chart"));
    this.saved = new SavedChart(byTestId("bandwidth-chart"));
    this.range = byTestId("chart-range");
    this.timer = null;
    this.chartTimer = null;
    this.stopped = false;
    this.stream = new EventStream({
      url: () => this.api.url("api/v1/events/stream"),
      headers: (extra) => this.api.headers(extra),
      onEvent: (event) => this.live(event),
      onState: (state, detail) => showConnection(state, detail),
      onAuthError: (error) => this.refused(error),
    });
    this.onRangeChange = () => this.panel("chart", () => this.drawChart());
  }

  async start() {
    this.range.addEventListener("change", this.onRangeChange);
    // The stream resumes after the last listed event to arrive: nothing falls between the
    // list and the stream (the list is ordered by the edge's ts, the stream by arrival).
    await this.panel("feed", async () => {
      const page = await this.api.get("api/v1/events", { limit: FEED_INITIAL });
      this.feed.add(page.items);
      this.stream.lastEventId = lastReceived(page.items)?.id ?? "";
    });
    if (this.stopped) return;
    this.stream.start();
    await this.refresh();
  }

  stop() {
    this.stopped = true;
    this.stream.stop();
    clearTimeout(this.timer);
    clearTimeout(this.chartTimer);
    this.range.removeEventListener("change", this.onRangeChange);
    this.chart.close();
    this.saved.close();
  }

  async refresh() {
    await Promise.all([
      this.panel("fleet", async () => {
        renderFleet(byTestId("fleet-panel"), await this.api.get("api/v1/agents"));
      }),
      this.panel("configs", async () => {
        const configs = await this.api.getOptional("api/v1/agent-configs", { configured: true, limit: 1000 });
        renderAgentConfigs(byTestId("configs-panel"), configs);
      }),
      this.panel("chart", () => this.drawChart()),
      this.panel("bandwidth", async () => {
        const [report, series] = await Promise.all([
          this.api.get("api/v1/stats/bandwidth"),
          this.api.get("api/v1/stats/bandwidth/series", { bucket: "hour" }),
        ]);
        renderBandwidth(byTestId("bandwidth-panel"), report);
        if (!this.stopped) this.saved.update(series);
      }),
      this.panel("health", async () => {
        const params = { signal: "score", since: new Date(Date.now() - WEEK_MS).toISOString() };
        // A large fleet's week by hour is past the route's points bound: then by day.
        const byHour = this.api.get("api/v1/signals", { ...params, bucket: "hour" });
        const report = await byHour.catch((error) => {
          if (!(error instanceof ApiError) || error.status !== 422) throw error;
          return this.api.get("api/v1/signals", { ...params, bucket: "day" });
        });
        renderHealth(byTestId("health-panel"), report);
      }),
      this.panel("lines", async () => {
        const report = await this.api.get("api/v1/aggregates", {
          kind: "line_crossing",
          bucket: "day",
          group_by_attribute: ["line", "direction"],
          since: new Date(Date.now() - DAY_MS).toISOString(),
        });
        renderLineCounts(byTestId("lines-panel"), report);
      }),
      this.panel("review", async () => {
        const review = await this.api.get("api/v1/samples/review", { limit: 50 });
        renderReview(byTestId("review-panel"), review.items);
      }),
      this.panel("escalations", async () => {
        renderEscalations(byTestId("escalations-panel"), await this.api.get("api/v1/escalations/stats"));
      }),
      this.panel("placement", async () => {
        renderPlacement(byTestId("placement-panel"), await this.api.get("api/v1/placement"));
      }),
      this.panel("training", async () => {
        renderJobs(byTestId("training-panel"), await this.api.get("api/v1/training-jobs", { limit: 20 }));
      }),
      this.panel("deployments", async () => {
        const body = await this.api.getOptional("api/v1/deployments");
        renderDeployments(byTestId("deployments-panel"), body);
        await this.panel("shadows", () => this.drawShadows(deploymentsOf(body)));
      }),
    ]);
    if (this.stopped) return;
    const updated = byTestId("updated");
    updated.textContent = `updated ${new Date().toLocaleTimeString([], { hour12: false })}`;
    updated.dataset.refreshes = String(Number(updated.dataset.refreshes ?? 0) + 1);
    this.timer = setTimeout(() => this.refresh(), REFRESH_MS);
  }

  async drawShadows(deployments) {
    const shown = shadowDeployments(deployments).slice(0, SHADOWS_SHOWN);
    const reports = await Promise.all(
      shown.map(async (d) => ({ ...(await this.api.get(`api/v1/deployments/${d.id}/shadow`)), model: d.model, version: d.version })),
    );
    renderShadows(byTestId("shadows-panel"), reports, (id, action) => this.decideShadow(id, action));
  }

  /** An operator's promote or discard; a refusal (a key without the operate scope, a
   * deployment that left shadow) is shown in the panel, never ends the session. */
  async decideShadow(id, action) {
    const error = byTestId("shadows-error");
    try {
      await this.api.post(`api/v1/deployments/${id}/shadow/${action}`, {});
    } catch (failure) {
      error.textContent = failure.message;
      error.hidden = false;
      return;
    }
    clearTimeout(this.timer);
    await this.refresh();
  }

  async drawChart() {
    const range = RANGES[this.range.value] ?? RANGES.hour;
    const report = await this.api.get("api/v1/aggregates", {
      metric: "count",
      bucket: range.bucket,
      group_by: "label",
      since: new Date(Date.now() - range.seconds * 1000).toISOString(),
    });
    if (!this.stopped) this.chart.update(report, range);
  }

  live(event) {
    this.feed.add([event]);
    if (this.chartTimer === null) {
      this.chartTimer = setTimeout(() => {
        this.chartTimer = null;
        this.panel("chart", () => this.drawChart());
      }, CHART_DEBOUNCE_MS);
    }
  }

  /** Run one panel's update; its error line says what failed, a refused key ends the page. */
  async panel(name, work) {
    const error = byTestId(`${name}-error`);
    try {
      await work();
      error.hidden = true;
    } catch (failure) {
      if (failure instanceof AuthError) {
        this.refused(failure);
        return;
      }
      error.textContent = failure.message;
      error.hidden = false;
    }
  }

  refused(error) {
    if (this.stopped) return;
    this.stop();
    this.onAuthError(error);
  }
}

/** The event the server stored last, by (received_at, id) as the stream orders them;
 * milliseconds are enough: a tie only makes the stream resend events the feed already shows. */
function lastReceived(events) {
  let last = null;
  for (const event of events) {
    const at = Date.parse(event.received_at);
    const lastAt = last === null ? -Infinity : Date.parse(last.received_at);
    if (at > lastAt || (at === lastAt && event.id > last.id)) last = event;
  }
  return last;
}

function showConnection(state, detail) {
  const node = byTestId("connection");
  node.dataset.state = state;
  node.textContent = { open: "live", connecting: "connecting…", reconnecting: "reconnecting", stopped: "stopped" }[state];
  node.title = detail;
}

let dashboard = null;

function showKeyForm(message) {
  dashboard?.stop();
  dashboard = null;
  byTestId("main").hidden = true;
  byTestId("key-panel").hidden = false;
  const text = byTestId("auth-message");
  text.textContent = message;
  text.hidden = !message;
  byTestId("key-input").value = "";
  byTestId("key-input").focus();
}

function startDashboard(key) {
  byTestId("key-panel").hidden = true;
  byTestId("main").hidden = false;
  dashboard = new Dashboard(key, (error) => {
    forgetKey();
    const verb = error.status === 403 ? "does not allow reading" : "was refused";
    showKeyForm(`The API key ${verb} (${error.status}: ${error.detail}). Enter another key.`);
  });
  dashboard.start();
}

function boot() {
  const given = takeKeyFromFragment();
  if (given !== null) {
    const problem = keyProblem(given);
    if (problem !== null) {
      showKeyForm(`The key in the link is not usable: ${problem}.`);
      return;
    }
    saveKey(given);
  }
  byTestId("key-form").addEventListener("submit", (submit) => {
    submit.preventDefault();
    const key = byTestId("key-input").value.trim();
    const problem = keyProblem(key);
    if (problem !== null) {
      showKeyForm(`${problem[0].toUpperCase()}${problem.slice(1)}.`);
      return;
    }
    saveKey(key);
    startDashboard(key);
  });
  byTestId("key-change").addEventListener("click", () => {
    forgetKey();
    showKeyForm("");
  });
  const key = loadKey();
  if (key === null) showKeyForm("");
  else startDashboard(key);
}

boot();
