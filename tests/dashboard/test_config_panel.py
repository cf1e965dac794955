"""The remote configuration panel, run in Chromium on the module the app serves."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.dashboard.test_modules import blank as blank  # the page without a key

pytestmark = pytest.mark.browser

RENDER = """async (body) => {
  const { renderAgentConfigs } = await import("./static/js/agent_config.js");
  renderAgentConfigs(document.querySelector('[data-testid="configs-panel"]'), body);
}"""

OVERLAY = {"pipelines": {"spindle": {"filters": {"threshold": {"threshold": 0.5}}}}}


def test_the_panel_shows_desired_and_reported_config_per_agent(blank: Page) -> None:
    configs = [
        {"agent_id": "press-1", "state": "applied",
         "desired": {"version": 2, "overlay": OVERLAY, "updated_at": "2026-12-03T10:00:00Z"},
         "reported": {"desired_version": 2, "applied_version": 2, "applied": OVERLAY,
                      "refused": ""}},
        {"agent_id": "press-2", "state": "refused",
         "desired": {"version": 3, "overlay": {"mqtt": {}}, "updated_at": "2026-12-03T10:00:00Z"},
         "reported": {"desired_version": 3, "applied_version": None, "applied": {},
                      "refused": "mqtt cannot change at run time (edit the file, restart)"}},
        {"agent_id": "press-3", "state": "none", "desired": None, "reported": None},
    ]  # fmt: skip
    panel = blank.get_by_test_id("configs-panel")
    blank.evaluate(RENDER, {"items": configs, "next_cursor": None})
    rows = panel.get_by_test_id("config-row")
    expect(rows).to_have_count(2)  # an agent with no overlay, desired or applied, is left out
    applied = panel.locator('[data-testid="config-row"][data-agent-id="press-1"]')
    expect(applied.get_by_test_id("config-state")).to_have_text("applied")
    expect(applied.get_by_test_id("config-desired")).to_contain_text('v2 {"pipelines"')
    expect(applied.get_by_test_id("config-reported")).to_contain_text('"threshold":0.5')
    refused = panel.locator('[data-testid="config-row"][data-agent-id="press-2"]')
    expect(refused.get_by_test_id("config-reported")).to_have_text("file only")
    expect(refused.get_by_test_id("config-refused")).to_contain_text("mqtt cannot change")
    expect(panel.get_by_test_id("configs-empty")).to_have_js_property("hidden", True)

    blank.evaluate(RENDER, None)  # a server without the route
    expect(rows).to_have_count(0)
    expect(panel.get_by_test_id("configs-empty")).to_have_js_property("hidden", False)
