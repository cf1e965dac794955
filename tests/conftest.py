"""Shared fixtures: real Mosquitto and PostgreSQL processes, one database per test."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_api.db import create_db_engine, migrate
from cloud_api.ingest.worker import IngestWorker
from tests.services import Mosquitto, PostgresCluster


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One broker for the session; tests isolate themselves with their own agent ids."""
    if shutil.which("mosquitto") is None:
        pytest.fail("mosquitto is not installed: run `make test` (it installs it) or apt-get it")
    server = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker for one test that may stop and restart it; it persists sessions like production."""
    server = Mosquitto(tmp_path, persistent=True)
    server.start()
    yield server
    server.stop()


def start_ingest(server: Mosquitto, directory: Path) -> Iterator[IngestWorker]:
    """The cloud's real ingest on SQLite: it stores what agents send and acks it to them,
    which is the only thing that lets an agent empty its outbox."""
    engine = create_db_engine(f"sqlite:///{directory / 'cloud.db'}")
    migrate(engine)
    worker = IngestWorker(
        engine=engine, mqtt_url=server.url, client_id=f"ingest-{uuid.uuid4().hex[:8]}"
    )
    worker.start()
    worker.wait_connected()
    yield worker
    worker.stop()
    engine.dispose()


@pytest.fixture
def ingest(broker: Mosquitto, tmp_path: Path) -> Iterator[IngestWorker]:
    """Ingest on the session broker, for a test of agents that needs the cloud's acks. One
    per test: a second cloud left acking everyone would answer other tests' agents too."""
    yield from start_ingest(broker, tmp_path)


@pytest.fixture
def own_ingest(own_broker: Mosquitto, tmp_path: Path) -> Iterator[IngestWorker]:
    """Ingest on the test's own broker (it reconnects when the test restarts the broker)."""
    yield from start_ingest(own_broker, tmp_path)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.fail("PostgreSQL binaries (initdb, pg_ctl) are not on PATH")
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return postgres_cluster.create_database()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that takes this runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cloud.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
