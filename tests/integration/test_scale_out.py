"""Three `aiot cloud ingest` processes on one MQTT 5 shared subscription share the load.

Real Mosquitto, real PostgreSQL, the workers as child processes ended by pid. Every event
must be stored exactly once, and each worker's own count (the line it logs on SIGTERM) must
show it took a share.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine, text

from cloud_api.db import create_db_engine, migrate
from shared.messages import encode
from shared.topics import Channel, Topic
from tests.cloud.helpers import make_batch, unique_agent_id, wait_until
from tests.services import Mosquitto

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

AIOT = Path(sys.executable).parent / "aiot"
WORKERS = 3
AGENTS = 6
MESSAGES = 600
EVENTS_PER_MESSAGE = 50
STOPPED = re.compile(
    r"ingest worker (\S+) stopped: messages=(\d+) events_stored=(\d+) duplicates=(\d+) "
    r"dead_letters=(\d+)"
)


@dataclass
class IngestProcess:
    """One `aiot cloud ingest` child process and its log file."""

    client_id: str
    log: Path
    process: subprocess.Popen[bytes]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def subscribed_or_exited(worker: IngestProcess) -> bool:
    return "subscribed" in worker.output() or worker.process.poll() is not None


@contextmanager
def ingest_processes(
    db_url: str, broker: Mosquitto, workdir: Path
) -> Iterator[list[IngestProcess]]:
    """Start the workers; whatever happens, end each by its pid."""
    started: list[IngestProcess] = []
    try:
        for n in range(1, WORKERS + 1):
            client_id = f"ingest-{n}"
            log = workdir / f"{client_id}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [str(AIOT), "cloud", "ingest", "--db", db_url, "--mqtt", broker.url,
                     "--share-group", "ingest", "--client-id", client_id, "--metrics-port", "0"],
                    stdout=out, stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )  # fmt: skip
            started.append(IngestProcess(client_id, log, process))
        yield started
    finally:
        for worker in started:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait(timeout=10)


def publish_load(broker: Mosquitto, agent_ids: list[str]) -> set[str]:
    """MESSAGES event batches over the agents, QoS 1, all acknowledged; returns the event ids."""
    host, _, port = broker.url.removeprefix("mqtt://").partition(":")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="load", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(100)
    client.connect(host, int(port))
    client.loop_start()
    ids: set[str] = set()
    try:
        infos = []
        for n in range(MESSAGES):
            agent_id = agent_ids[n % len(agent_ids)]
            batch = make_batch(agent_id, EVENTS_PER_MESSAGE)
            ids.update(event.id for event in batch.events)
            infos.append(client.publish(str(Topic(agent_id, Channel.EVENTS)), encode(batch), qos=1))
        deadline = time.monotonic() + 60
        for info in infos:
            info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
            assert info.is_published(), "the broker did not acknowledge the load"
    finally:
        client.disconnect()
        client.loop_stop()
    return ids


def test_three_ingest_processes_store_every_event_once_and_share_the_load(
    own_broker: Mosquitto, postgres_url: str, tmp_path: Path
) -> None:
    engine = create_db_engine(postgres_url)
    try:
        migrate(engine)  # once, so the workers' own migrate() finds nothing to do
        with ingest_processes(postgres_url, own_broker, tmp_path) as workers:
            for worker in workers:
                wait_until(
                    partial(subscribed_or_exited, worker),
                    timeout=30,
                    what=f"{worker.client_id} to subscribe",
                )
                assert worker.process.poll() is None, worker.output()

            agent_ids = [unique_agent_id("scale") for _ in range(AGENTS)]
            sent = publish_load(own_broker, agent_ids)
            expected = MESSAGES * EVENTS_PER_MESSAGE
            assert len(sent) == expected

            def stored() -> int:
                with engine.connect() as connection:
                    count: int = connection.execute(
                        text("SELECT COUNT(*) FROM events")
                    ).scalar_one()
                return count

            wait_until(lambda: stored() >= expected, timeout=120, what=f"{expected} events stored")
            with engine.connect() as connection:
                total, distinct = connection.execute(
                    text("SELECT COUNT(*), COUNT(DISTINCT id) FROM events")
                ).one()
                ids = set(connection.execute(text("SELECT id FROM events")).scalars())
            assert (total, distinct) == (expected, expected)
            assert ids == sent

            for worker in workers:
                worker.process.send_signal(signal.SIGTERM)
            for worker in workers:
                assert worker.process.wait(timeout=30) == 0, worker.output()

            shares: dict[str, int] = {}
            for worker in workers:
                match = STOPPED.search(worker.output())
                assert match is not None, worker.output()
                client_id, _messages, events_stored, _dups, dead = match.groups()
                assert client_id == worker.client_id
                assert int(dead) == 0
                shares[client_id] = int(events_stored)
            print(f"events stored per ingest process: {shares}")
            assert all(share > 0 for share in shares.values()), shares
            assert sum(shares.values()) == expected, shares
    finally:
        engine.dispose()


def test_replicas_starting_together_migrate_one_at_a_time(postgres_url: str) -> None:
    engines = [create_db_engine(postgres_url) for _ in range(WORKERS)]
    errors: list[BaseException] = []

    def run(engine: Engine) -> None:
        try:
            migrate(engine)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(engine,)) for engine in engines]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
        assert errors == []
        with engines[0].connect() as connection:
            assert connection.execute(text("SELECT COUNT(*) FROM events")).scalar_one() == 0
    finally:
        for engine in engines:
            engine.dispose()
