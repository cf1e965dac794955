"""What the wire contract accepts, SQLite and PostgreSQL store; what it refuses is a dead letter.

Property tests through ingest's real store path (validation, the batched transaction, the
rollups, the agents upsert), without a broker: messages go straight to ``BatchStore.store``
as the ingest worker's writer thread hands them over. Hypothesis pushes towards the
contract's edges: integers at the 64-bit limits, floats up to 1e308, astral text at full
length, times at 1970 and year 9999 with offsets up to +-23:59. What ingest stored is then
read the way the API reads it.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import Engine, delete, func, select

from cloud_api.analytics.rollups import LEVELS
from cloud_api.db import create_db_engine, migrate
from cloud_api.ingest.parse import Inbound
from cloud_api.ingest.store import BatchStore
from cloud_api.ingest.writers import BatchStats, writer_for
from cloud_api.rollup_tables import EVENT_ROLLUP_TOTALS
from cloud_api.routes.agents import agent_out
from cloud_api.schemas import EventOut
from cloud_api.tables import AGENTS, DEAD_LETTERS, EVENTS, SUMMARIES, AgentRow
from shared.fields import (
    EARLIEST,
    INT64_MAX,
    INT64_MIN,
    LATEST,
    MAX_ATTRIBUTES,
    MAX_HEARTBEAT_S,
    MAX_SCORE,
    MAX_SECONDS,
)
from shared.messages import (
    MAX_EVENTS_PER_BATCH,
    MAX_PIPELINES,
    MAX_SUMMARY_LABELS,
    MAX_SUMMARY_SIGNALS,
    AgentStatus,
    Event,
    EventBatch,
    ModelRef,
    PipelineStatus,
    PipelineSummary,
    SignalStats,
    UpdateStatus,
    encode,
    utcnow,
)
from shared.topics import Channel, Topic
from tests.shared import strategies
from tests.shared.strategies import MAX_FLOAT, Refused

EXAMPLES = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
GRACE = 100.0
"""The largest heartbeat grace the API may be configured with (cloud_api.config)."""
_mids = itertools.count(1)


@dataclass
class Ingest:
    """Ingest's store path without a broker: messages are handed to it as they arrive."""

    engine: Engine
    batches: BatchStore

    def store(
        self, channel: Channel, agent_id: str, payload: bytes, *, retain: bool = False
    ) -> BatchStats:
        inbound = Inbound(
            str(Topic(agent_id, channel)), payload, next(_mids), 1, retain, time.time(), 0
        )
        stored = self.batches.store([inbound])
        assert stored is not None
        return stored.stats

    def wipe(self) -> None:
        """Every example starts from empty tables (hypothesis reuses the database)."""
        with self.engine.begin() as conn:
            for table in (EVENTS, SUMMARIES, AGENTS, DEAD_LETTERS, *(lvl.table for lvl in LEVELS)):
                conn.execute(delete(table))

    def dead_letters(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(DEAD_LETTERS)))


@pytest.fixture
def ingest(database_url: str) -> Iterator[Ingest]:
    engine = create_db_engine(database_url)
    migrate(engine)
    yield Ingest(engine, BatchStore(writer_for(engine), stop=threading.Event()))
    engine.dispose()


def same_json(sent: Any, stored: Any) -> bool:
    """Equal as JSON values. PostgreSQL's jsonb writes numbers in plain notation, so a float
    sent as 1e+16 comes back as the integer 10000000000000000: equal as a number."""
    if isinstance(sent, float) and not isinstance(stored, bool) and isinstance(stored, int | float):
        return float(stored) == sent
    if isinstance(sent, dict) and isinstance(stored, dict):
        return sent.keys() == stored.keys() and all(same_json(sent[k], stored[k]) for k in sent)
    return type(sent) is type(stored) and bool(sent == stored)


def check_api_reads(ingest: Ingest) -> None:
    """What GET /api/v1/events and /api/v1/agents do with the rows: they must not fail."""
    with ingest.engine.connect() as conn:
        for row in conn.execute(select(EVENTS)):
            EventOut.model_validate(row._mapping).model_dump_json()
    with ingest.engine.connect() as conn:
        agents = [AgentRow(**row._mapping) for row in conn.execute(select(AGENTS))]
    for agent in agents:
        agent_out(agent, now=utcnow(), grace=GRACE).model_dump_json()


# -- accepted messages are stored --------------------------------------------------------


def check_batch_stored(ingest: Ingest, batch: EventBatch) -> None:
    ingest.wipe()
    stats = ingest.store(Channel.EVENTS, batch.agent_id, encode(batch))
    assert stats.dead_letters == 0, ingest.dead_letters()
    assert stats.events_stored == len({event.id for event in batch.events})
    with ingest.engine.connect() as conn:
        rows = {row.id: row for row in conn.execute(select(EVENTS))}
        rolled = conn.scalar(select(func.sum(EVENT_ROLLUP_TOTALS.c.events)))
    assert rolled == len(rows)
    for event in {event.id: event for event in batch.events}.values():
        row = rows[event.id]
        assert (row.agent_id, row.pipeline, row.kind, row.state, row.label, row.seq) == (
            batch.agent_id,
            event.pipeline,
            event.kind,
            event.state,
            event.label,
            event.seq,
        )
        assert (row.score, row.ts) == (event.score, event.ts)
        assert (row.model_name, row.model_version, row.model_sha256) == (
            event.model.name,
            event.model.version,
            event.model.sha256,
        )
        assert same_json(event.attributes, row.attributes), (event.attributes, row.attributes)
    check_api_reads(ingest)


@EXAMPLES
@given(batch=strategies.event_batches())
def test_every_accepted_event_batch_is_stored(ingest: Ingest, batch: EventBatch) -> None:
    check_batch_stored(ingest, batch)


def check_summary_stored(ingest: Ingest, summary: PipelineSummary) -> None:
    ingest.wipe()
    stats = ingest.store(Channel.SUMMARY, summary.agent_id, encode(summary))
    assert stats.dead_letters == 0, ingest.dead_letters()
    assert stats.summaries_stored == 1
    with ingest.engine.connect() as conn:
        row = conn.execute(select(SUMMARIES)).one()
    assert (row.agent_id, row.pipeline, row.window_start, row.window_end) == (
        summary.agent_id, summary.pipeline, summary.window_start, summary.window_end
    )  # fmt: skip
    assert (row.samples_in, row.inferences, row.gated, row.raw_bytes, row.sent_bytes) == (
        summary.samples_in, summary.inferences, summary.gated, summary.raw_bytes,
        summary.sent_bytes,
    )  # fmt: skip
    assert row.events == sum(summary.events_by_label.values())
    assert row.events_by_label == summary.events_by_label
    sent = {name: stats.model_dump() for name, stats in summary.signals.items()}
    assert same_json(sent, row.signals), (sent, row.signals)


@EXAMPLES
@given(summary=strategies.summaries())
def test_every_accepted_summary_is_stored(ingest: Ingest, summary: PipelineSummary) -> None:
    check_summary_stored(ingest, summary)


def check_status_stored(ingest: Ingest, status: AgentStatus, *, retain: bool) -> None:
    ingest.wipe()
    stats = ingest.store(Channel.STATUS, status.agent_id, encode(status), retain=retain)
    assert stats.dead_letters == 0, ingest.dead_letters()
    with ingest.engine.connect() as conn:
        row = conn.execute(select(AGENTS)).one()
    assert (row.agent_id, row.state, row.reason, row.heartbeat_s) == (
        status.agent_id, status.state, status.reason, status.heartbeat_s
    )  # fmt: skip
    if status.state == "online" and retain:
        # Replayed by the broker: as fresh as its own time, never fresher than its arrival.
        assert row.last_seen <= status.ts
        assert row.last_seen <= utcnow()
    # Read back as the rollout reads it: the same message.
    assert AgentStatus.model_validate(row.last_status) == status
    check_api_reads(ingest)


@EXAMPLES
@given(status=strategies.statuses(), retain=st.booleans())
def test_every_accepted_status_is_stored(ingest: Ingest, status: AgentStatus, retain: bool) -> None:
    check_status_stored(ingest, status, retain=retain)


# -- the largest messages the contract accepts -------------------------------------------

MODEL = ModelRef(name="m" * 64, version="v" * 64, sha256="f" * 64)
ASTRAL = "\U0001f600\U0001d11e\U00010348\U0010fffd"
WIDE_LABEL = (ASTRAL * 32)[:128]


def test_the_largest_event_batch_is_stored(ingest: Ingest) -> None:
    """1000 events of 32 attributes; the first ones carry 256-character astral text."""
    values: list[bool | int | float | str] = [
        INT64_MIN, INT64_MAX, MAX_FLOAT, -MAX_FLOAT, 5e-324, True, "", (ASTRAL * 64)[:256],
    ]  # fmt: skip
    west, east = (
        timezone(-timedelta(hours=23, minutes=59)),
        timezone(timedelta(hours=23, minutes=59)),
    )
    # Year 9999 written at -23:59 is 9999-12-31T00:00:59.999999-23:59; 1970 at -23:59 is 1969.
    times = [LATEST, LATEST.astimezone(west), EARLIEST, EARLIEST.astimezone(west),
             EARLIEST.astimezone(east), utcnow()]  # fmt: skip
    events = [
        Event(
            id=str(uuid.uuid4()),
            pipeline="p" * 64,
            kind="k" * 64,
            state="update",
            label=WIDE_LABEL,
            score=MAX_SCORE if n % 2 else -MAX_SCORE,
            ts=times[n % len(times)],
            seq=INT64_MAX - n,
            model=MODEL,
            attributes={
                f"{a:02d}{ASTRAL * 16}"[:64]: values[a % len(values)] if n < 10 else values[a % 7]
                for a in range(MAX_ATTRIBUTES)
            },
        )
        for n in range(MAX_EVENTS_PER_BATCH)
    ]
    batch = EventBatch(agent_id="a" * 64, batch_id=str(uuid.uuid4()), sent_at=LATEST, events=events)
    check_batch_stored(ingest, batch)


def test_the_largest_summary_is_stored(ingest: Ingest) -> None:
    labels = {
        f"{n:03d}{WIDE_LABEL}"[:128]: INT64_MAX // MAX_SUMMARY_LABELS
        for n in range(MAX_SUMMARY_LABELS)
    }
    labels[next(iter(labels))] += INT64_MAX % MAX_SUMMARY_LABELS  # adds up to INT64_MAX exactly
    signals = {
        f"s{n}": SignalStats(min=-MAX_FLOAT, mean=5e-324 * n, max=MAX_FLOAT, count=INT64_MAX)
        for n in range(MAX_SUMMARY_SIGNALS)
    }
    summary = PipelineSummary(
        agent_id="a" * 64, batch_id=str(uuid.uuid4()), pipeline="p" * 64, window_start=EARLIEST,
        window_end=LATEST, samples_in=INT64_MAX, inferences=INT64_MAX, gated=INT64_MAX,
        events_by_label=labels, signals=signals, raw_bytes=INT64_MAX, sent_bytes=INT64_MAX,
        model=MODEL,
    )  # fmt: skip
    assert sum(labels.values()) == INT64_MAX
    check_summary_stored(ingest, summary)


@pytest.mark.parametrize("retain", [False, True])
def test_the_largest_status_is_stored(ingest: Ingest, retain: bool) -> None:
    update = UpdateStatus(
        deployment_id=INT64_MAX, name="n" * 64, version="v" * 64, state="rolled_back",
        reason=(ASTRAL * 128)[:512], ts=LATEST,
    )  # fmt: skip
    pipelines = [
        PipelineStatus(
            name=f"{n:02d}" + "p" * 62,
            model=MODEL,
            samples_in=INT64_MAX,
            inferences=INT64_MAX,
            events_out=INT64_MAX,
            gated=INT64_MAX,
            errors=INT64_MAX,
            raw_bytes=INT64_MAX,
            sent_bytes=INT64_MAX,
            filtered=INT64_MAX,
            update=update,
        )
        for n in range(MAX_PIPELINES)
    ]
    for ts in (LATEST, EARLIEST.astimezone(timezone(-timedelta(hours=23, minutes=59)))):
        status = AgentStatus(
            agent_id="a" * 64,
            state="online",
            reason=(ASTRAL * 64)[:256],
            ts=ts,
            agent_version=(ASTRAL * 8)[:32],
            uptime_s=MAX_SECONDS,
            heartbeat_s=MAX_HEARTBEAT_S,
            pipelines=pipelines,
            outbox_depth=INT64_MAX,
            outbox_oldest_age_s=MAX_SECONDS,
            unacked_batches=INT64_MAX,
            ack_rtt_p50_s=MAX_SECONDS,
            ack_rtt_p99_s=5e-324,
        )
        check_status_stored(ingest, status, retain=retain)


# -- refused messages are dead letters ---------------------------------------------------


CHANNELS = {
    EventBatch: Channel.EVENTS,
    PipelineSummary: Channel.SUMMARY,
    AgentStatus: Channel.STATUS,
}


@EXAMPLES
@given(
    refused=st.one_of(
        strategies.refused_payloads(strategies.event_batches(2)),
        strategies.refused_payloads(strategies.summaries()),
        strategies.refused_payloads(strategies.statuses(1)),
    )
)
def test_every_refused_message_is_a_dead_letter(ingest: Ingest, refused: Refused) -> None:
    with pytest.raises(ValidationError):
        refused.model.model_validate_json(refused.payload)
    ingest.wipe()
    stats = ingest.store(CHANNELS[refused.model], refused.agent_id, refused.payload)
    assert (stats.dead_letters, stats.events_stored, stats.summaries_stored, stats.statuses) == (
        1, 0, 0, 0
    )  # fmt: skip
    [letter] = ingest.dead_letters()
    assert letter.payload_size == len(refused.payload)
    assert letter.reason
    with ingest.engine.connect() as conn:
        for table in (EVENTS, SUMMARIES, AGENTS):
            assert conn.scalar(select(func.count()).select_from(table)) == 0
