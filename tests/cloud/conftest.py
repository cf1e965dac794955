"""Fixtures for the cloud API: the real app (lifespan and ingest running) on a real broker."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cloud_api.config import Settings
from cloud_api.main import create_app
from tests.cloud.helpers import Publisher, new_api_key
from tests.services import Mosquitto

AppFactory = Callable[..., AbstractContextManager[TestClient]]


@pytest.fixture
def settings(database_url: str, broker: Mosquitto, tmp_path: Path) -> Settings:
    """Settings for one test: its own database and its own ingest session on the broker."""
    return Settings(
        database_url=database_url,
        mqtt_url=broker.url,
        ingest_client_id=f"ingest-{uuid.uuid4().hex[:12]}",
        ingest_flush_s=0.01,
        ingest_session_expiry_s=60,
        heartbeat_grace=3.0,
        data_dir=tmp_path,
    )


@pytest.fixture
def make_api(settings: Settings) -> AppFactory:
    """Start the app (``with make_api(...) as client``); keyword arguments change settings.

    The client carries an admin key; ``client_as`` (tests/cloud/helpers.py) gives clients
    with other credentials or none.
    """

    @contextmanager
    def start(**changes: object) -> Iterator[TestClient]:
        app = create_app(settings.model_copy(update=changes))
        with TestClient(app) as client:
            client.headers["Authorization"] = f"Bearer {new_api_key(client, 'admin')}"
            worker = app.state.ingest
            if worker is not None:
                worker.wait_connected()
            yield client

    return start


@pytest.fixture
def api(make_api: AppFactory) -> Iterator[TestClient]:
    with make_api() as client:
        yield client


@pytest.fixture
def publisher(broker: Mosquitto) -> Iterator[Publisher]:
    client = Publisher("127.0.0.1", broker.port).connect()
    yield client
    client.close()
