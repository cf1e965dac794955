"""PostgreSQL ingest: events/s that 1 and 2 `aiot cloud ingest` processes store.

Real processes, one MQTT 5 shared subscription, drain a backlog the broker already holds for
their persistent sessions; the clock runs from the first message an ingest process receives
(``min(received_at)``) until every event is stored. Baselines in the same run: a bare paho
subscriber draining the same backlog, and bare psycopg COPY of the same rows into the same
(empty, indexed) events table.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from bench.common import (
    bare_subscriber_rate,
    event_batches,
    event_rows,
    postgres_cluster,
    publish_all,
)
from bench.result import Goal, Result
from cli.broker import MosquittoProcess
from cloud_api.db import create_db_engine, migrate
from cloud_api.ingest.parse import EVENT_COLUMNS
from cloud_api.rollup_tables import EVENT_ROLLUP_TOTALS
from tests.services import PostgresCluster

AIOT = Path(sys.executable).parent / "aiot"
INGEST_EVENTS = 200_000
PER_MESSAGE = 100  # the agent's default outbox batch_max_events


def psycopg_url(url: str) -> str:
    """The SQLAlchemy URL as a libpq connection string for bare psycopg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def ingest_processes(db_url: str, mqtt_url: str, count: int, logs: Path) -> Iterator[None]:
    """``count`` `aiot cloud ingest` processes on one share group, until the block ends."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(count):
            log = logs / f"ingest-{n}.log"
            with log.open("ab") as out:
                started.append(
                    subprocess.Popen(
                        [str(AIOT), "cloud", "ingest", "--db", db_url, "--mqtt", mqtt_url,
                         "--share-group", "bench", "--client-id", f"bench-ingest-{n}",
                         # No metrics port: the default one is a single port per host, and
                         # the second process (or any other ingest here) would not start.
                         "--metrics-port", "0"],
                        stdout=out, stderr=subprocess.STDOUT,
                        env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    )
                )  # fmt: skip
        yield
    finally:
        for process in started:
            process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_subscribed(logs: Path, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        texts = [(logs / f"ingest-{n}.log").read_text(errors="replace") for n in range(count)]
        if all(t.count("subscribed") >= 1 for t in texts):
            return
        time.sleep(0.1)
    raise TimeoutError(f"ingest processes did not subscribe in {timeout} s (logs in {logs})")


def ingest_processes_rate(
    cluster: PostgresCluster, broker: MosquittoProcess, processes: int, workdir: Path
) -> float:
    """Events/s that ``processes`` ingest processes store from a backlog on the broker."""
    db_url = cluster.create_database()
    engine = create_db_engine(db_url)
    migrate(engine)
    agent_id = f"bench-{uuid.uuid4().hex[:8]}"
    payloads = event_batches(agent_id, INGEST_EVENTS // PER_MESSAGE, PER_MESSAGE)
    logs = workdir / f"logs-{agent_id}"
    logs.mkdir()
    # First run: create the persistent sessions and the shared subscription, then leave.
    with ingest_processes(db_url, broker.url, processes, logs):
        wait_subscribed(logs, processes)
    publish_all(broker.port, agent_id, payloads)
    # Progress from the rollups' totals (a row an hour, kept in each ingest transaction), not
    # count(*) over the events: scanning the growing table every 20 ms took a good part of
    # the database's core away from the ingest it measures.
    stored_so_far = select(func.coalesce(func.sum(EVENT_ROLLUP_TOTALS.c.events), 0))
    with ingest_processes(db_url, broker.url, processes, logs):
        deadline = time.monotonic() + 600
        while True:
            with engine.connect() as conn:
                stored = conn.execute(stored_so_far).scalar_one()
            if stored >= INGEST_EVENTS:
                end = time.time()
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{processes} ingest process(es) stored {stored} events")
            time.sleep(0.02)
    with engine.connect() as conn:
        count, first = conn.execute(text("SELECT count(*), min(received_at) FROM events")).one()
    engine.dispose()
    if count != INGEST_EVENTS:
        raise AssertionError(f"{processes} ingest process(es) stored {count} of {INGEST_EVENTS}")
    elapsed: float = end - first.timestamp()
    return INGEST_EVENTS / elapsed


def copy_rate(cluster: PostgresCluster) -> float:
    """Events/s of bare COPY of the same rows into the same (empty, indexed) events table."""
    db_url = cluster.create_database()
    engine = create_db_engine(db_url)
    migrate(engine)
    engine.dispose()
    payloads = event_batches("bench-copy", INGEST_EVENTS // PER_MESSAGE, PER_MESSAGE)
    rows = event_rows(payloads, datetime.now(UTC))
    columns = ", ".join(EVENT_COLUMNS)
    with psycopg.connect(psycopg_url(db_url)) as conn:
        start = time.perf_counter()
        with conn.cursor() as cursor, cursor.copy(f"COPY events ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        elapsed = time.perf_counter() - start
    return len(rows) / elapsed


def bench_postgres_ingest() -> list[Result]:
    workdir = Path(tempfile.mkdtemp(prefix="aiot-bench-pg-ingest-"))
    broker = MosquittoProcess(workdir)
    try:
        with postgres_cluster() as cluster:
            broker.start()
            try:
                agent_id = f"bare-{uuid.uuid4().hex[:8]}"
                payloads = event_batches(agent_id, INGEST_EVENTS // PER_MESSAGE, PER_MESSAGE)
                bare = bare_subscriber_rate(broker.port, agent_id, payloads, PER_MESSAGE)
                copy = copy_rate(cluster)
                one = ingest_processes_rate(cluster, broker, 1, workdir)
                two = ingest_processes_rate(cluster, broker, 2, workdir)
            finally:
                broker.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    details: dict[str, float | int | str] = {
        "events": INGEST_EVENTS,
        "events_per_message": PER_MESSAGE,
        "bare_copy_events_per_s": round(copy),
    }
    return [
        Result("PostgreSQL ingest, 1 process", one, "events/s", bare, "bare paho subscriber",
               None, details),
        Result("PostgreSQL ingest, 1 process", one, "events/s", copy, "bare COPY",
               Goal.ratio(">=", 0.85), details),
        Result("PostgreSQL ingest, 2 processes", two, "events/s", bare, "bare paho subscriber",
               None, details),
        Result("PostgreSQL ingest, 2 processes", two, "events/s", copy, "bare COPY", None, details),
        Result("PostgreSQL ingest, 2 processes / 1", two, "events/s", one, "1 process",
               Goal.ratio(">=", 1.6), details),
    ]  # fmt: skip
