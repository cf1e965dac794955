"""The placement report: each pipeline's measured edge figures beside the cloud alternative,
their cost per month, and a verdict that follows the link rate, the round trip and the
prices; pure, then through the real app on both databases."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cli.main import app as cli_app
from cli.server import serve_in_thread
from cloud_api.analytics.placement import Figures, Prices, fleet_figures, place, window
from cloud_api.auth import create_api_key
from cloud_api.config import Settings
from cloud_api.db import create_db_engine, create_sessionmaker, migrate
from cloud_api.main import create_app
from cloud_api.tables import AgentRow, SummaryRow
from shared.messages import utcnow
from tests.model_fixtures import SHIPPED_MODEL

VIBRATION = Figures(
    agent_id="press-1", pipeline="spindle-vibration", model="vibration-anomaly",
    version="1.0.0", windows_per_s=6.25, raw_bps=51_200.0, sent_bps=40.0, edge_p50_ms=0.6,
    edge_p99_ms=1.1, rtt_ms=30.0, link_mbps=None, cloud_ms=0.5,
)  # fmt: skip


def test_the_edge_wins_on_bytes_at_default_prices() -> None:
    placed = place(VIBRATION, Prices(), latency_budget_ms=100)

    assert placed.verdict == "edge"
    assert placed.reason.startswith("edge costs ")
    # 51.2 kB/s for 30 days is 132.7 GB, 11.94 at 0.09/GB; 0.5 ms x 6.25 windows/s is
    # 2.25 CPU-hours, 0.11 at 0.05.
    assert placed.cloud_per_month == pytest.approx(132.7104 * 0.09 + 2.25 * 0.05, rel=1e-6)
    assert placed.edge_per_month == pytest.approx(0.1037 * 0.09, rel=1e-2)


def test_a_link_too_slow_for_the_raw_data_keeps_the_model_on_the_edge() -> None:
    cheap_cloud = Prices(per_gb=0.0, cloud_cpu_hour=0.0, edge_cpu_hour=1.0)
    assert place(VIBRATION, cheap_cloud, latency_budget_ms=100).verdict == "cloud"

    slow = place(replace(VIBRATION, link_mbps=0.2), cheap_cloud, latency_budget_ms=100)
    assert slow.verdict == "edge"
    assert slow.reason == "the link (0.2 Mbit/s) cannot carry the raw 0.41 Mbit/s"


def test_a_round_trip_over_the_budget_keeps_the_model_on_the_edge() -> None:
    cheap_cloud = Prices(per_gb=0.0, cloud_cpu_hour=0.0, edge_cpu_hour=1.0)
    placed = place(replace(VIBRATION, rtt_ms=180.0), cheap_cloud, latency_budget_ms=100)

    assert placed.verdict == "edge"
    assert placed.reason == "the cloud answers in 180 ms, over the 100 ms budget"
    assert place(replace(VIBRATION, rtt_ms=180.0), cheap_cloud, 500).verdict == "cloud"


def test_without_a_cloud_time_there_is_no_cloud_alternative() -> None:
    placed = place(replace(VIBRATION, cloud_ms=None), Prices(), latency_budget_ms=100)

    assert (placed.verdict, placed.cloud_per_month) == ("edge", None)


def seed(client: TestClient | httpx.Client, sessions: Any) -> None:
    """A press sending a summary a minute for an hour (51.2 kB/s read, 40 B/s sent), its
    status with its inference times and round trip, and its model in the registry."""
    now = utcnow()
    with SHIPPED_MODEL.open("rb") as model:
        response = client.post(
            "/api/v1/models/vibration-anomaly/versions",
            data={"version": "1.0.0", "task": "anomaly"},
            files={"file": ("model.onnx", model, "application/octet-stream")},
        )
    assert response.status_code == 201, response.text
    status: dict[str, Any] = {
        "pipelines": [{"name": "spindle-vibration", "inference_p50_s": 0.0006,
                       "inference_p99_s": 0.0011}],
        "ack_rtt_p50_s": 0.03,
    }  # fmt: skip
    with sessions() as session:
        session.add(AgentRow(agent_id="press-1", state="online", reason="", last_status=status,
                             heartbeat_s=30.0, labels={"link_mbps": "0.2"}))  # fmt: skip
        for minute in range(60):
            start = now - timedelta(minutes=60 - minute)
            session.add(SummaryRow(
                agent_id="press-1", pipeline="spindle-vibration", window_start=start,
                window_end=start + timedelta(minutes=1), samples_in=375, inferences=375,
                gated=0, events=0, events_by_label={}, signals={}, raw_bytes=51_200 * 60,
                sent_bytes=40 * 60, model_name="vibration-anomaly", model_version="1.0.0",
                model_sha256="0" * 64, received_at=start,
            ))  # fmt: skip
        session.commit()


def test_the_report_measures_the_fleet_and_follows_the_link_and_the_prices(
    api: TestClient,
) -> None:
    seed(api, api.app.state.sessionmaker)  # type: ignore[attr-defined]
    cheap_cloud = {"price_per_gb": 0, "cloud_cpu_hour": 0, "edge_cpu_hour": 1}

    labelled = api.get("/api/v1/placement", params=cheap_cloud)
    assert labelled.status_code == 200, labelled.text
    (row,) = labelled.json()["pipelines"]
    assert row["windows_per_s"] == pytest.approx(375 / 60, rel=0.02)
    assert row["raw_bytes_per_s"] == pytest.approx(51_200, rel=0.02)
    assert row["sent_bytes_per_s"] == pytest.approx(40, rel=0.02)
    assert (row["edge_inference_p50_ms"], row["round_trip_ms"]) == (0.6, 30.0)
    assert row["cloud_inference_ms"] > 0  # the shipped model timed by the inspection child
    assert (row["link_mbps"], row["verdict"]) == (0.2, "edge")  # the agent's label
    assert row["link_source"] == "configured"
    assert row["reason"].startswith("the link (0.2 Mbit/s) cannot carry")

    with api.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        session.get(AgentRow, "press-1").labels = {}
        session.commit()
    fast = api.get("/api/v1/placement", params={**cheap_cloud, "link_mbps": 100}).json()
    assert fast["pipelines"][0]["verdict"] == "cloud"
    assert fast["pipelines"][0]["link_source"] == "default"
    priced = api.get("/api/v1/placement", params={"link_mbps": 100}).json()
    assert priced["pipelines"][0]["verdict"] == "edge"
    assert priced["prices"] == {"per_gb": 0.09, "cloud_cpu_hour": 0.05, "edge_cpu_hour": 0.0}


def test_a_pipeline_upgraded_in_the_window_is_reported_on_its_newest_model(
    database_url: str,
) -> None:
    """1.9.0 then 1.10.0 (a text compare calls 1.9.0 the newer): the report names 1.10.0,
    asks the cloud's time of that version, and counts the windows of both."""
    engine = create_db_engine(database_url)
    migrate(engine)
    now, asked = utcnow(), []
    with create_sessionmaker(engine)() as session:
        for minute in range(60):
            version = "1.9.0" if minute < 30 else "1.10.0"
            start = now - timedelta(minutes=60 - minute)
            session.add(SummaryRow(
                agent_id="press-1", pipeline="spindle-vibration", window_start=start,
                window_end=start + timedelta(minutes=1), samples_in=375, inferences=375,
                gated=0, events=0, events_by_label={}, signals={}, raw_bytes=51_200 * 60,
                sent_bytes=40 * 60, model_name="vibration-anomaly", model_version=version,
                model_sha256="0" * 64, received_at=start,
            ))  # fmt: skip
        session.commit()

        def cloud_ms(model: str, version: str) -> float:
            asked.append((model, version))
            return 0.5

        since, until = window(2, now)
        (figures,) = fleet_figures(
            session, since=since, until=until, default_link_mbps=None, cloud_ms=cloud_ms
        )
    engine.dispose()

    assert (figures.version, figures.cloud_ms) == ("1.10.0", 0.5)
    assert asked == [("vibration-anomaly", "1.10.0")]
    assert figures.windows_per_s == pytest.approx(375 / 60, rel=0.02)  # both versions' windows


def test_the_label_wins_then_the_measured_rate_then_the_default(api: TestClient) -> None:
    """The agent measured 0.3 Mbit/s (its status): too slow for 0.41 Mbit/s of raw data, so
    with no label the report uses it over the request's default; a label wins over both."""
    seed(api, api.app.state.sessionmaker)  # type: ignore[attr-defined]
    cheap_cloud = {"price_per_gb": 0, "cloud_cpu_hour": 0, "edge_cpu_hour": 1, "link_mbps": 100}

    def link_of(labels: dict[str, str], measured: Any) -> dict[str, Any]:
        with api.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
            agent = session.get(AgentRow, "press-1")
            agent.labels = labels
            agent.last_status = {**agent.last_status, "link_mbps_measured": measured}
            session.commit()
        (row,) = api.get("/api/v1/placement", params=cheap_cloud).json()["pipelines"]
        return {key: row[key] for key in ("link_mbps", "link_source", "verdict")}

    assert link_of({}, 0.3) == {"link_mbps": 0.3, "link_source": "measured", "verdict": "edge"}
    assert link_of({"link_mbps": "50"}, 0.3) == {
        "link_mbps": 50.0, "link_source": "configured", "verdict": "cloud"
    }  # fmt: skip
    assert link_of({"link_mbps": "fast"}, None) == {  # a label that is no number: ignored
        "link_mbps": 100.0, "link_source": "default", "verdict": "cloud"
    }  # fmt: skip
    del cheap_cloud["link_mbps"]
    assert link_of({}, None) == {"link_mbps": None, "link_source": None, "verdict": "cloud"}


@pytest.mark.parametrize(
    "params", [{"hours": 0}, {"price_per_gb": -1}, {"link_mbps": 0}, {"latency_budget_ms": "x"}]
)
def test_bad_parameters_are_422(api: TestClient, params: dict[str, Any]) -> None:
    response = api.get("/api/v1/placement", params=params)

    assert response.status_code == 422, response.text
    assert next(iter(params)) in response.text


def test_aiot_placement_shows_the_report_as_a_table(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"ingest_enabled": False}))
    with serve_in_thread(app) as url:
        with app.state.sessionmaker() as session:
            _, key = create_api_key(session, name="placement-test", scope="admin")
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            seed(client, app.state.sessionmaker)
        result = CliRunner().invoke(
            cli_app, ["placement", "--api", url, "--link-mbps", "100"],
            env={"AIOT_API_KEY": key, "COLUMNS": "250"},
        )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert "press-1" in result.output
    assert "the link (0.2 Mbit/s) cannot carry the raw" in result.output
    assert "0.2 configured" in result.output  # the link rate and where it comes from
