"""The outbox: durable, ordered by (priority, arrival), bounded with a stated drop policy."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge_agent.delivery.outbox import Outbox
from shared.messages import Event, ModelRef, PipelineSummary, encode, new_event_id

REF = ModelRef(name="m", version="1", sha256="0" * 64)


def event(seq: int = 0) -> Event:
    return Event(
        id=new_event_id(),
        pipeline="p",
        kind="anomaly",
        state="start",
        label="imbalance",
        score=0.9,
        ts=datetime(2026, 1, 1, tzinfo=UTC),
        seq=seq,
        model=REF,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def open_outbox(path: Path, **kw: float) -> Outbox:
    return Outbox(
        path, max_bytes=int(kw.get("max_bytes", 10**9)), max_age_s=kw.get("max_age_s", 1e9)
    )


def test_batches_come_in_priority_then_arrival_order(tmp_path: Path) -> None:
    box = open_outbox(tmp_path / "o.db")
    low = [event(i) for i in range(3)]
    high = [event(10 + i) for i in range(2)]
    box.put(low, priority=5)
    box.put(high, priority=0)
    ids = [item.item_id for item in box.next_batch(10)]
    assert ids == [e.id for e in high + low]


def test_leased_events_are_not_handed_out_twice_until_released(tmp_path: Path) -> None:
    box = open_outbox(tmp_path / "o.db")
    events = [event(i) for i in range(5)]
    box.put(events)
    first = box.next_batch(2)
    second = box.next_batch(2)
    assert [i.item_id for i in first + second] == [e.id for e in events[:4]]
    box.release([i.item_id for i in first])
    assert [i.item_id for i in box.next_batch(10)] == [events[0].id, events[1].id, events[4].id]


def test_ack_deletes_only_the_acked_events(tmp_path: Path) -> None:
    box = open_outbox(tmp_path / "o.db")
    events = [event(i) for i in range(4)]
    box.put(events)
    batch = box.next_batch(2)
    assert box.depth() == 4
    box.ack(i.item_id for i in batch)
    assert box.depth() == 2
    box.release_all()
    assert [i.item_id for i in box.next_batch(10)] == [e.id for e in events[2:]]
    box.ack([events[2].id, events[3].id])
    assert box.depth() == 0
    assert box.size_bytes == 0
    assert box.oldest_age_s() == 0.0


def test_payload_is_the_event_as_json(tmp_path: Path) -> None:
    box = open_outbox(tmp_path / "o.db")
    e = event(7)
    box.put([e])
    assert Event.model_validate_json(box.next_batch(1)[0].payload) == e


def test_events_survive_reopen_and_unacked_ones_are_sent_again(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = open_outbox(path)
    events = [event(i) for i in range(3)]
    box.put(events)
    box.ack([box.next_batch(1)[0].item_id])
    box.next_batch(10)  # leased, never acked: the process "dies"
    box.close()
    again = open_outbox(path)
    assert again.depth() == 2
    assert [i.item_id for i in again.next_batch(10)] == [e.id for e in events[1:]]


def test_a_put_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from tests.edge.delivery.test_outbox import event, open_outbox
from pathlib import Path
box = open_outbox(Path({str(path)!r}))
e = event(1)
box.put([e])
print(e.id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == -9
    event_id = result.stdout.decode().strip()
    assert [i.item_id for i in open_outbox(path).next_batch(10)] == [event_id]


def test_byte_bound_drops_oldest_of_lowest_priority_first(tmp_path: Path) -> None:
    size = len(event().model_dump_json(by_alias=True))
    box = open_outbox(tmp_path / "o.db", max_bytes=size * 4 + size // 2)
    alerts = [event(i) for i in range(2)]
    summaries = [event(10 + i) for i in range(2)]
    box.put(alerts, priority=0)
    box.put(summaries, priority=9)
    extra = event(20)
    box.put([extra], priority=0)
    assert box.dropped == 1
    assert [i.item_id for i in box.next_batch(10)] == [
        alerts[0].id, alerts[1].id, extra.id, summaries[1].id,
    ]  # fmt: skip
    assert box.size_bytes <= size * 4 + size // 2


def test_age_bound_drops_expired_events(tmp_path: Path) -> None:
    clock = Clock()
    box = Outbox(tmp_path / "o.db", max_bytes=10**9, max_age_s=60, clock=clock)
    old = event(1)
    box.put([old])
    clock.now += 30
    young = event(2)
    box.put([young])
    assert box.oldest_age_s() == 30
    clock.now += 40
    assert [i.item_id for i in box.next_batch(10)] == [young.id]
    assert box.dropped == 1
    assert box.depth() == 1


def test_size_is_recomputed_on_reopen(tmp_path: Path) -> None:
    box = open_outbox(tmp_path / "o.db")
    box.put([event(1), event(2)])
    size = box.size_bytes
    box.close()
    assert open_outbox(tmp_path / "o.db").size_bytes == size > 0


def test_concurrent_put_and_ack_lose_nothing(tmp_path: Path) -> None:
    box = open_outbox(tmp_path / "o.db")
    produced: list[str] = []
    acked: list[str] = []
    done = threading.Event()

    def producer() -> None:
        for i in range(300):
            e = event(i)
            box.put([e])
            produced.append(e.id)
        done.set()

    def consumer() -> None:
        while not (done.is_set() and box.depth() == 0):
            batch = box.next_batch(7)
            box.ack(i.item_id for i in batch)
            acked.extend(i.item_id for i in batch)

    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert acked == produced


def summary(pipeline: str = "p", minute: int = 0) -> PipelineSummary:
    start = datetime(2026, 1, 1, 0, minute, tzinfo=UTC)
    return PipelineSummary(
        agent_id="a",
        pipeline=pipeline,
        window_start=start,
        window_end=start + timedelta(minutes=1),
        samples_in=375,
        inferences=375,
        raw_bytes=375 * 8192,
        sent_bytes=0,
        model=REF,
    )


def test_summaries_wait_behind_every_event_and_travel_alone(tmp_path: Path) -> None:
    box = open_outbox(tmp_path / "o.db")
    first, second, third = event(1), event(2), event(3)
    box.put([first])
    box.put_summary(summary(minute=0))
    box.put([second])
    box.put_summary(summary(minute=1))

    in_flight = box.next_batch(10)
    assert [(i.kind, i.item_id) for i in in_flight] == [("event", first.id), ("event", second.id)]
    box.put([third])  # arrives while the others are in flight: still ahead of the summaries
    assert [i.item_id for i in box.next_batch(10)] == [third.id]
    summaries = [box.next_batch(10), box.next_batch(10)]
    assert [[i.kind for i in batch] for batch in summaries] == [["summary"], ["summary"]]
    assert [
        PipelineSummary.model_validate_json(b[0].payload).window_start.minute for b in summaries
    ] == [0, 1]
    assert box.next_batch(10) == []


def test_a_summary_stays_until_acked_and_is_sent_again_if_not(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = open_outbox(path)
    size = box.put_summary(summary())
    (item,) = box.next_batch(10)
    assert size == len(item.payload) == box.size_bytes
    box.release([item.item_id])  # the publish failed
    assert box.next_batch(10) == [item]
    box.close()
    again = open_outbox(path)  # a crash before the PUBACK
    (resent,) = again.next_batch(10)
    assert resent == item
    again.ack([resent.item_id])
    assert again.depth() == 0


def test_put_returns_the_bytes_of_the_events_as_sent(tmp_path: Path) -> None:
    box = open_outbox(tmp_path / "o.db")
    events = [event(1), event(2)]
    assert box.put(events) == sum(len(encode(e)) for e in events) == box.size_bytes
    assert box.put([]) == 0


def test_when_full_summaries_go_before_any_event(tmp_path: Path) -> None:
    event_size = len(encode(event()))
    # As stored: the outbox gives the summary its batch id.
    summary_size = len(encode(summary().model_copy(update={"batch_id": new_event_id()})))
    box = open_outbox(tmp_path / "o.db", max_bytes=3 * event_size + summary_size)
    box.put_summary(summary(minute=0))
    alerts = [event(i) for i in range(3)]
    box.put(alerts)
    assert box.dropped == 0
    box.put([event(9)])
    assert box.dropped == 1
    assert {i.kind for i in box.next_batch(10)} == {"event"}
    assert box.next_batch(10) == [], "the summary was the one dropped"


def test_an_outbox_of_the_previous_release_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    old = event(5)
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE outbox (rowid_ INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE, priority INTEGER NOT NULL, created REAL NOT NULL,
            size INTEGER NOT NULL, payload BLOB NOT NULL);
        CREATE INDEX outbox_order ON outbox (priority, rowid_);
        CREATE INDEX outbox_created ON outbox (created);
        """
    )
    payload = encode(old)
    db.execute(
        "INSERT INTO outbox (event_id, priority, created, size, payload) VALUES (?, 0, ?, ?, ?)",
        (old.id, time.time(), len(payload), payload),
    )
    db.commit()
    db.close()

    box = open_outbox(path)
    box.put_summary(summary())
    assert [(i.kind, i.item_id) for i in box.next_batch(10)] == [("event", old.id)]
    box.close()
    assert open_outbox(path).depth() == 2, "opening it again changes nothing"
