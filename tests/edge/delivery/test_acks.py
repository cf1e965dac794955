"""The ack window: which batches go again, when, and how the timeout adapts (pure logic)."""

from __future__ import annotations

from edge_agent.delivery.acks import MAX_BACKOFF, AckWindow
from shared.messages import BatchAck, new_event_id


def ack(batch_id: str, outcome: str = "stored") -> BatchAck:
    return BatchAck.model_validate({"batch_id": batch_id, "outcome": outcome})


def window_with(count: int, timeout: float = 10.0) -> tuple[AckWindow, list[str]]:
    window = AckWindow(timeout)
    ids = [new_event_id() for _ in range(count)]
    for i, batch_id in enumerate(ids):
        window.add(batch_id, "event", [f"e{i}"], now=float(i))
    return window, ids


def test_only_batches_the_broker_took_time_out_and_only_after_the_timeout() -> None:
    window, ids = window_with(3)
    window.pubacked(ids[0], now=0.0)
    window.pubacked(ids[1], now=5.0)  # ids[2]: still with paho (offline): never due
    assert window.due(now=9.9) == []
    assert [b.ids for b in window.due(now=10.0)] == [["e0"]]
    assert len(window) == 2


def test_an_ack_settles_once_and_a_late_or_repeated_ack_settles_nothing() -> None:
    window, ids = window_with(2)
    settled = window.settle([ack(ids[0]), ack(ids[1], "rejected")], now=4.0)
    assert [(s.batch.ids, s.ack.outcome) for s in settled] == [
        (["e0"], "stored"),
        (["e1"], "rejected"),
    ]
    assert window.settle([ack(ids[0])], now=5.0) == []
    assert len(window) == 0
    assert window.rtt() == (3.0, 4.0)


def test_after_a_reconnect_every_batch_the_broker_had_goes_again() -> None:
    window, ids = window_with(3)
    window.pubacked(ids[0], now=1.0)
    window.pubacked(ids[2], now=3.0)
    assert [b.ids for b in window.after_reconnect()] == [["e0"], ["e2"]]
    assert window.refused(ids[1]) == ["e1"]
    assert len(window) == 0


def test_unanswered_resends_stretch_the_timeout_until_an_ack_comes() -> None:
    window = AckWindow(10.0)
    now = 0.0
    for expected in (10.0, 20.0, 40.0, 80.0, 10.0 * MAX_BACKOFF):
        assert window.timeout_s == expected
        batch_id = new_event_id()
        window.add(batch_id, "event", ["x"], now=now)
        window.pubacked(batch_id, now=now)
        now += window.timeout_s
        assert len(window.due(now)) == 1
    batch_id = new_event_id()
    window.add(batch_id, "event", ["x"], now=now)
    window.settle([ack(batch_id)], now=now + 1)
    assert window.timeout_s == 10.0


def test_a_slow_cloud_raises_the_timeout_to_four_times_its_p99() -> None:
    window = AckWindow(1.0)
    for i in range(64):
        batch_id = new_event_id()
        window.add(batch_id, "event", ["x"], now=0.0)
        window.settle([ack(batch_id)], now=2.0 + i / 64)
    rtt = window.rtt()
    assert rtt is not None
    assert window.timeout_s == 4 * rtt[1] > 8.0
