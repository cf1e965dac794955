"""Cloud ingest events/s into SQL against a bare paho subscriber on the same broker and queue.

Both consumers drain the same kind of backlog: a persistent session is created, the
publisher fills the broker's queue while the consumer is away, then the consumer connects
and the clock runs until every event is received (bare) or committed (ingest).
"""

from __future__ import annotations

import gc
import sqlite3
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench.common import bare_subscriber_rate, event_batches, event_rows, publish_all
from bench.result import Goal, Result
from cli.broker import MosquittoProcess
from cloud_api.db import create_db_engine, migrate
from cloud_api.ingest.parse import EVENT_COLUMNS
from cloud_api.ingest.worker import IngestWorker

EVENTS = 60_000
MAX_MESSAGES = 6_000
BATCH_SIZES = (100, 10, 1)  # 100 is the agent's default outbox batch_max_events
ROUNDS = 3


def message_count(per_batch: int) -> int:
    return min(EVENTS // per_batch, MAX_MESSAGES)


def ingest_rate(
    broker_port: int, database_url: str, per_batch: int, *, acked: bool = True
) -> float:
    """Events/s ingest commits from a backlog; ``acked``: each batch is acknowledged to its
    agent on ``acks`` after the commit, as agents' batches are (they carry a batch id)."""
    agent_id = f"bench-{uuid.uuid4().hex[:8]}"
    batches = message_count(per_batch)
    payloads = event_batches(agent_id, batches, per_batch, acked=acked)
    engine = create_db_engine(database_url)
    migrate(engine)
    client_id = f"bench-ingest-{agent_id}"

    def worker() -> IngestWorker:
        return IngestWorker(
            engine=engine, mqtt_url=f"mqtt://127.0.0.1:{broker_port}", client_id=client_id
        )

    gc.freeze()  # as `aiot cloud ingest` does before it starts its worker
    first = worker()
    first.start()
    first.wait_connected()
    first.stop()
    publish_all(broker_port, agent_id, payloads)
    start = time.perf_counter()
    second = worker()
    second.start()
    second.wait_processed(batches, timeout=300)
    elapsed = time.perf_counter() - start
    stored = second.events_stored
    second.stop()
    engine.dispose()
    if stored != batches * per_batch:
        raise AssertionError(f"ingest stored {stored} of {batches * per_batch} events")
    return batches * per_batch / elapsed


def executemany_rate(database_url: str, per_batch: int) -> float:
    """Events/s of a bare ``executemany`` of the same rows into the same (empty, indexed,
    migrated) ``events`` table, in transactions of ``per_batch`` rows as ingest commits them;
    timestamps bound as the text ``UtcDateTime`` stores, built before the clock starts."""
    engine = create_db_engine(database_url)
    migrate(engine)
    engine.dispose()
    payloads = event_batches("bench-executemany", message_count(per_batch), per_batch)
    rows = [
        (*row[:7], _sqlite_text(row[7]), *row[8:13], _sqlite_text(row[13]))
        for row in event_rows(payloads, datetime.now(UTC))
    ]
    columns = ", ".join(EVENT_COLUMNS)
    marks = ", ".join("?" * len(EVENT_COLUMNS))
    db = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    start = time.perf_counter()
    for at in range(0, len(rows), per_batch):
        db.execute("BEGIN")
        db.executemany(
            f"INSERT INTO events ({columns}) VALUES ({marks})", rows[at : at + per_batch]
        )
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return len(rows) / elapsed


def _sqlite_text(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def bench_ingest_sqlite() -> list[Result]:
    workdir = Path(tempfile.mkdtemp(prefix="aiot-bench-ingest-"))
    broker = MosquittoProcess(workdir)
    broker.start()
    results = []
    try:
        for per_batch in BATCH_SIZES:
            bare_rates, ingest_rates, insert_rates = [], [], []
            for i in range(ROUNDS):
                agent_id = f"bare-{uuid.uuid4().hex[:8]}"
                payloads = event_batches(agent_id, message_count(per_batch), per_batch)
                bare_rates.append(bare_subscriber_rate(broker.port, agent_id, payloads, per_batch))
                database = f"sqlite:///{workdir / f'db-{per_batch}-{i}.sqlite'}"
                ingest_rates.append(ingest_rate(broker.port, database, per_batch))
                plain = f"sqlite:///{workdir / f'plain-{per_batch}-{i}.sqlite'}"
                insert_rates.append(executemany_rate(plain, per_batch))
            results += _sqlite_results(per_batch, ingest_rates, bare_rates, insert_rates)
    finally:
        broker.stop()
    return results


def _sqlite_results(
    per_batch: int, ingest: list[float], bare: list[float], inserts: list[float]
) -> list[Result]:
    details: dict[str, float | int | str] = {
        "messages": message_count(per_batch), "events_per_message": per_batch, "rounds": ROUNDS,
    }  # fmt: skip
    name = f"cloud ingest into SQLite, {per_batch} events/message"
    return [
        Result(name, statistics.median(ingest), "events/s", statistics.median(bare),
               "bare paho subscriber", Goal.ratio(">=", 0.5), details),
        # The fair baseline (issue 15): the same rows, bulk-inserted into the same table and
        # indexes, one transaction per message as ingest commits them.
        Result(name, statistics.median(ingest), "events/s", statistics.median(inserts),
               "bare executemany", Goal.ratio(">=", 0.8) if per_batch == 100 else None,
               details),
    ]  # fmt: skip
