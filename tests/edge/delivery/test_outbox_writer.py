"""The outbox's writer: hand-overs stored in order, in group commits, retried when a commit
fails, each hand-over told its stored bytes, nothing pending left behind on close."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from edge_agent.delivery import outbox_writer
from edge_agent.delivery.outbox import Outbox
from edge_agent.delivery.outbox_writer import OutboxWriter
from shared.errors import StorageError
from shared.messages import Event, encode
from tests.edge.delivery.test_outbox import event, open_outbox, summary


def stored(outbox: Outbox) -> list[Event]:
    items = outbox.next_batch(10_000)
    return [Event.model_validate_json(i.payload) for i in items if i.kind == "event"]


def test_hand_overs_of_several_threads_are_stored_in_order_with_their_sizes(
    tmp_path: Path,
) -> None:
    outbox = open_outbox(tmp_path / "o.db")
    sizes: dict[str, list[int]] = {"a": [], "b": []}
    handed: dict[str, list[Event]] = {"a": [], "b": []}

    def pipeline(name: str) -> None:
        for seq in range(200):
            events = [event(seq).model_copy(update={"pipeline": name})]
            handed[name].extend(events)
            writer.put(events, sizes[name].append)

    with OutboxWriter(outbox) as writer:
        threads = [threading.Thread(target=pipeline, args=(name,)) for name in sizes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert writer.flush()
        assert writer.pending == 0

    events = stored(outbox)
    for name in ("a", "b"):
        mine = [e for e in events if e.pipeline == name]
        assert [e.id for e in mine] == [e.id for e in handed[name]]
        assert sizes[name] == [len(encode(e)) for e in handed[name]]
        assert outbox.next_seq(name) == 200


def test_what_waits_while_a_commit_runs_goes_in_one_transaction(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path / "o.db")
    commits: list[int] = []
    original = outbox.put_groups

    def counting(groups: Sequence[Sequence[Event]], **kw: int) -> list[int]:
        commits.append(len(groups))
        return original(groups, **kw)

    outbox.put_groups = counting  # type: ignore[method-assign]
    writer = OutboxWriter(outbox)
    for seq in range(50):  # handed over before the thread runs: one batch
        writer.put([event(seq)], lambda _size: None)
    writer.start()
    writer.close()

    assert commits == [50]
    assert len(stored(outbox)) == 50


def test_a_failed_commit_is_retried_with_the_same_events_and_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(outbox_writer, "RETRY_S", 0.01)
    caplog.set_level(logging.INFO, logger="edge_agent.delivery.outbox_writer")
    outbox = open_outbox(tmp_path / "o.db")
    original = outbox.put_groups
    failures = iter([StorageError("outbox put failed: disk I/O error")] * 3)

    def failing(groups: Sequence[Sequence[Event]], **kw: int) -> list[int]:
        error = next(failures, None)
        if error is not None:
            raise error
        return original(groups, **kw)

    outbox.put_groups = failing  # type: ignore[method-assign]
    handed = [event(seq) for seq in range(5)]
    with OutboxWriter(outbox) as writer:
        for item in handed:
            writer.put([item], lambda _size: None)
        assert writer.flush()
        assert writer.failures == 3

    assert [e.id for e in stored(outbox)] == [e.id for e in handed]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "disk I/O error" in errors[0].getMessage()
    assert "storing works again" in caplog.text


def test_a_summary_is_stored_behind_the_events_handed_over_before_it(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path / "o.db")
    sizes: list[int] = []
    with OutboxWriter(outbox) as writer:
        writer.put([event(0)], sizes.append)
        writer.put_summary(summary(), sizes.append)
        assert writer.flush()

    assert [i.kind for i in outbox.next_batch(10)] == ["event"]
    assert len(sizes) == 2
    assert all(size > 0 for size in sizes)
    assert outbox.depth() == 2


def test_a_full_queue_makes_put_wait_until_there_is_room(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path / "o.db")
    writer = OutboxWriter(outbox, max_pending=2)
    writer.put([event(0), event(1)], lambda _size: None)
    third = threading.Thread(target=writer.put, args=([event(2)], lambda _size: None))
    third.start()
    third.join(0.2)
    assert third.is_alive()  # waiting: two events pending, none stored yet

    writer.start()
    third.join(10)
    writer.close()

    assert not third.is_alive()
    assert [e.seq for e in stored(outbox)] == [0, 1, 2]


def test_a_batch_that_breaks_the_writer_is_dropped_and_the_writer_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = open_outbox(tmp_path / "o.db")
    original = outbox.put_groups
    broken = iter([RuntimeError("not a storage error")])

    def once_broken(groups: Sequence[Sequence[Event]], **kw: int) -> list[int]:
        error = next(broken, None)
        if error is not None:
            raise error
        return original(groups, **kw)

    outbox.put_groups = once_broken  # type: ignore[method-assign]
    with OutboxWriter(outbox) as writer:
        writer.put([event(0)], lambda _size: None)
        assert writer.flush()
        writer.put([event(1)], lambda _size: None)
        assert writer.flush()
        assert writer.failures == 1

    assert [e.seq for e in stored(outbox)] == [1]
    assert "dropped 1 hand-over(s) it could not store" in caplog.text
