"""The page's pure logic, run in Chromium on the modules the app serves: the SSE parser and
the rollouts panel (whose route is not on every server yet)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.dashboard.conftest import LiveServer

pytestmark = pytest.mark.browser

STREAM = (
    'id: 01A\nevent: event\ndata: {"label": "impact"}\n\n'
    ": keep-alive\n\n"
    "data: first line\r\ndata: second line\r\n\r\n"
    "id: 01B\rdata:no space\r\r"
    "event: event\nid\ndata\n\n"
    "id: 01C\n\n"  # an id alone dispatches nothing but is remembered
    "retry: 10\nunknown: x\ndata: after\n\n"
)
EXPECTED = [
    {"id": "01A", "event": "event", "data": '{"label": "impact"}'},
    {"id": "01A", "event": "message", "data": "first line\nsecond line"},
    {"id": "01B", "event": "message", "data": "no space"},
    {"id": "", "event": "event", "data": ""},
    {"id": "01C", "event": "message", "data": "after"},
]

PARSE = """async ({text, sizes}) => {
  const { SseParser } = await import("./static/js/sse.js");
  const runs = [];
  for (const size of sizes) {
    // Two chunks split at every offset when size is negative, else chunks of `size`.
    const splits = size < 0
      ? [...Array(text.length + 1).keys()].map((i) => [text.slice(0, i), text.slice(i)])
      : [text.match(new RegExp(`[\\\\s\\\\S]{1,${size}}`, "g"))];
    for (const chunks of splits) {
      const messages = [];
      const comments = [];
      const parser = new SseParser((m) => messages.push(m), (c) => comments.push(c));
      for (const chunk of chunks) parser.push(chunk);
      runs.push({ messages, comments });
    }
  }
  return runs;
}"""


@pytest.fixture
def blank(page: Page, quiet_api: LiveServer) -> Page:
    """The page without a key: its modules load, the dashboard does not start."""
    page.goto(f"{quiet_api.url}/")
    expect(page.get_by_test_id("key-form")).to_be_visible()
    return page


def test_the_sse_parser_gives_the_same_messages_however_the_stream_is_cut(blank: Page) -> None:
    runs: list[dict[str, Any]] = blank.evaluate(PARSE, {"text": STREAM, "sizes": [-1, 1, 3, 1000]})
    assert len(runs) == len(STREAM) + 1 + 3
    for run in runs:
        assert run["messages"] == EXPECTED
        assert run["comments"] == ["keep-alive"]


def test_the_rollouts_panel_shows_each_deployment_and_its_agents(blank: Page) -> None:
    deployment = {
        "id": 7, "model": "vibration-anomaly", "version": "1.1.0", "pipeline": "spindle-vibration",
        "state": "canary", "reason": "", "created_at": "2026-11-22T10:00:00Z",
        "updated_at": "2026-11-22T10:05:00Z",
        "counts": {"pending": 3, "updating": 1, "healthy": 2, "failed": 0, "rolled_back": 1,
                   "cancelled": 0},
        "agents": [
            {"agent_id": "press-1", "phase": "canary", "state": "healthy",
             "running_version": "1.1.0", "reason": "", "updated_at": "2026-11-22T10:04:00Z"},
            {"agent_id": "press-2", "phase": "canary", "state": "rolled_back",
             "running_version": "1.0.0", "reason": "self-test failed",
             "updated_at": "2026-11-22T10:05:00Z"},
        ],
    }  # fmt: skip
    render = """async (body) => {
      const { renderDeployments } = await import("./static/js/rollouts.js");
      renderDeployments(document.querySelector('[data-testid="deployments-panel"]'), body);
    }"""
    panel = blank.get_by_test_id("deployments-panel")
    blank.evaluate(render, [deployment])
    row = panel.locator('[data-testid="deployment-row"][data-deployment-id="7"]')
    expect(row).to_contain_text("vibration-anomaly@1.1.0")
    expect(row.get_by_test_id("deployment-state")).to_have_text("canary")
    counts = row.get_by_test_id("deployment-counts")
    expect(counts.locator("[data-phase]")).to_have_count(4)  # phases at zero are left out
    expect(counts.locator('[data-phase="rolled_back"]')).to_have_text("1 rolled back")
    agent = row.locator('[data-testid="deployment-agent"][data-agent-id="press-2"]')
    expect(agent).to_contain_text("self-test failed")
    expect(panel.get_by_test_id("deployments-empty")).to_be_hidden()

    blank.evaluate(render, {"items": [], "next_cursor": None})
    expect(panel.get_by_test_id("deployment-row")).to_have_count(0)
    expect(panel.get_by_test_id("deployments-empty")).to_have_text("no deployments")


ALIGN_SAVED = """async (series) => {
  const { alignSaved } = await import("./static/js/bandwidth.js");
  return alignSaved(series);
}"""


def test_the_saved_bytes_chart_has_every_hour_of_the_range_empty_ones_zero(blank: Page) -> None:
    series = {
        "bucket": "hour", "since": "2026-11-22T10:30:00Z", "until": "2026-11-22T14:00:00Z",
        "agent_id": None, "pipeline": None,
        "points": [
            {"ts": "2026-11-22T10:00:00Z", "summaries": 2, "raw_bytes": 900, "sent_bytes": 100,
             "saved_bytes": 800, "ratio": 0.111},
            {"ts": "2026-11-22T13:00:00Z", "summaries": 1, "raw_bytes": 50, "sent_bytes": 20,
             "saved_bytes": 30, "ratio": 0.4},
        ],
    }  # fmt: skip
    hours, saved = blank.evaluate(ALIGN_SAVED, series)
    start = 1795341600  # 2026-11-22T10:00:00Z
    assert hours == [start + 3600 * n for n in range(4)]
    assert saved == [800, 0, 0, 30]


def test_the_placement_panel_shows_each_pipelines_verdict_and_why(blank: Page) -> None:
    row = {
        "agent_id": "press-1", "pipeline": "spindle-vibration", "model": "vibration-anomaly",
        "version": "1.0.0", "windows_per_s": 6.25, "raw_bytes_per_s": 51200.0,
        "sent_bytes_per_s": 40.0, "edge_inference_p50_ms": 0.6, "edge_inference_p99_ms": 1.1,
        "round_trip_ms": 30.0, "link_mbps": 0.2, "link_source": "measured",
        "cloud_inference_ms": 0.5,
        "edge_cost_per_month": 0.0093, "cloud_cost_per_month": 12.06, "verdict": "edge",
        "reason": "the link (0.2 Mbit/s) cannot carry the raw 0.41 Mbit/s",
    }  # fmt: skip
    report = {"since": "2026-11-22T10:00:00Z", "until": "2026-11-23T10:00:00Z",
              "prices": {"per_gb": 0.09, "cloud_cpu_hour": 0.05, "edge_cpu_hour": 0.0},
              "latency_budget_ms": 100.0, "pipelines": [row]}  # fmt: skip
    render = """async (body) => {
      const { renderPlacement } = await import("./static/js/placement.js");
      renderPlacement(document.querySelector('[data-testid="placement-panel"]'), body);
    }"""
    panel = blank.get_by_test_id("placement-panel")
    blank.evaluate(render, report)
    shown = panel.locator('[data-testid="placement-row"][data-agent-id="press-1"]')
    expect(shown).to_have_attribute("data-verdict", "edge")
    expect(shown.get_by_test_id("placement-verdict")).to_have_text(
        "edge: the link (0.2 Mbit/s) cannot carry the raw 0.41 Mbit/s"
    )
    expect(shown).to_contain_text("0.01 / 12.06")
    expect(shown.get_by_test_id("placement-link")).to_have_text("0.200 Mbit/s measured")
    expect(shown.get_by_test_id("placement-link")).to_have_attribute("data-source", "measured")

    blank.evaluate(render, {**report, "pipelines": []})
    expect(panel.get_by_test_id("placement-row")).to_have_count(0)
    expect(panel).to_contain_text("no summaries in the last 24 h")
