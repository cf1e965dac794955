"""Summaries through a real Mosquitto: kept until PUBACK, behind the events, and adding up."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cloud_api.ingest.worker import IngestWorker
from edge_agent.agent import Agent
from shared.messages import PipelineSummary
from shared.topics import Channel, Topic
from tests.edge.conftest import AgentConfigFactory
from tests.edge.test_agent_mqtt import Subscriber, wait_until
from tests.services import Mosquitto

pytestmark = pytest.mark.integration


def stored_kinds(outbox_path: Path) -> dict[str, int]:
    """What the outbox file holds, read on a connection of our own (no leases taken)."""
    db = sqlite3.connect(outbox_path)
    try:
        return dict(db.execute("SELECT kind, COUNT(*) FROM outbox GROUP BY kind").fetchall())
    finally:
        db.close()


def summaries_of(subscriber: Subscriber, agent_id: str) -> list[PipelineSummary]:
    topic = str(Topic(agent_id, Channel.SUMMARY))
    return [
        PipelineSummary.model_validate_json(payload)
        for t, payload, _ in list(subscriber.messages)
        if t == topic
    ]


def test_summaries_wait_for_the_broker_then_follow_the_events_and_add_up(
    own_broker: Mosquitto,
    own_ingest: IngestWorker,
    agent_config: AgentConfigFactory,
    tmp_path: Path,
) -> None:
    # Real time at 40x: 30 s of machine time in under a second of wall clock, a summary
    # every 0.2 s of wall clock, so a handful of windows.
    config = agent_config(own_broker.url, speed=40, summary_interval_s=0.2)
    subscriber = Subscriber(own_broker, config.agent_id)
    own_broker.stop()
    agent = Agent(config)
    agent.start()
    try:
        wait_until(agent.sources_done, "the source to end")
        held = stored_kinds(tmp_path / "outbox.db")
        own_broker.start()
        wait_until(agent.done, "every event and summary acked")
        wait_until(
            lambda: len(summaries_of(subscriber, config.agent_id)) >= held["summary"],
            "every summary at the subscriber",
        )
        assert agent.uplink is not None
        acked = agent.uplink.counters.summaries_acked
        pipeline = agent.pipelines[0]
        counters = pipeline.counters
        status = agent.status().pipelines[0]
    finally:
        agent.stop()
        subscriber.close()

    # No broker, no PUBACK: every summary stayed in the outbox, behind the 4 events.
    assert held["event"] == 4
    assert held["summary"] >= 2
    assert acked == held["summary"]
    summaries = summaries_of(subscriber, config.agent_id)
    assert len({s.window_start for s in summaries}) == held["summary"]
    assert sum(s.samples_in for s in summaries) == counters.samples_in
    assert sum(s.raw_bytes for s in summaries) == counters.raw_bytes == counters.samples_in * 8192
    assert sum(sum(s.events_by_label.values()) for s in summaries) == 4
    assert status.raw_bytes == counters.raw_bytes
    assert status.sent_bytes == counters.sent_bytes > sum(s.sent_bytes for s in summaries)
    topics = [t for t, _, _ in subscriber.messages if not t.endswith("/status")]
    first_summary = topics.index(str(Topic(config.agent_id, Channel.SUMMARY)))
    assert set(topics[:first_summary]) == {str(Topic(config.agent_id, Channel.EVENTS))}, (
        "the events that waited went out before any summary"
    )
