"""The app's own surface: health, metrics, OpenAPI, settings and migrations."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient

from cloud_api import rollup_tables
from cloud_api.config import Settings, load_settings
from cloud_api.db import create_db_engine, migrate
from cloud_api.ingest.worker import IngestWorker
from cloud_api.tables import Base
from shared.errors import ConfigError
from tests.cloud.conftest import AppFactory


def test_migrations_match_the_tables(database_url: str) -> None:
    engine = create_db_engine(database_url)
    try:
        migrate(engine)
        migrate(engine)  # idempotent: a restart runs it again
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert rollup_tables.SIGNAL_DAY_ROLLUPS.metadata is Base.metadata
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


@pytest.mark.integration
def test_health_and_metrics(api: TestClient) -> None:
    health = api.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "database": True, "ingest": "connected"}
    api.get("/api/v1/agents/nobody")
    metrics = api.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "aiot_ingest_events_total" in metrics.text
    assert 'route="/api/v1/agents/{agent_id}",status="404"' in metrics.text
    assert api.get("/docs").status_code == 200
    assert "/api/v1/events" in api.get("/openapi.json").json()["paths"]


def test_health_without_ingest(make_api: AppFactory) -> None:
    with make_api(ingest_enabled=False) as api:
        assert api.get("/healthz").json()["ingest"] == "disabled"


def test_two_apps_keep_their_own_metrics(make_api: AppFactory) -> None:
    with make_api(ingest_enabled=False) as first, make_api(ingest_enabled=False) as second:
        first.get("/healthz")
        assert 'route="/healthz"' not in second.get("/metrics").text


def test_settings_refuse_bad_values() -> None:
    with pytest.raises(ConfigError, match="AIOT_MQTT_URL"):
        load_settings(mqtt_url="http://broker")
    with pytest.raises(ConfigError, match="AIOT_DATABASE_URL"):
        load_settings(database_url="mysql://x")
    with pytest.raises(ConfigError, match=r"MQTT 3\.1\.1"):
        load_settings(mqtt_protocol="3.1.1", ingest_share_group="ingest")
    assert Settings().database_url == "sqlite:///./data/aiot.db"


def test_share_group_needs_mqtt5(tmp_path: object) -> None:
    engine = create_db_engine("sqlite://")
    with pytest.raises(ConfigError, match="MQTT 5"):
        IngestWorker(
            engine=engine,
            mqtt_url="mqtt://127.0.0.1:1883",
            protocol="3.1.1",
            client_id="x",
            share_group="ingest",
        )
