"""The link rate from the cloud's acks (pure logic, a fake clock): bytes acked over the time
spent waiting for them while a backlog was drained; idle periods and sparse data say nothing,
and a stall spoils one sample, not the rate."""

from __future__ import annotations

import pytest

from edge_agent.delivery.acks import AckWindow
from edge_agent.delivery.link_rate import LinkRate
from shared.messages import MAX_LINK_MBPS, BatchAck, new_event_id

KB = 1000


def drain(
    rate: LinkRate, *, start: float, batches: int, size: int, per_batch_s: float, window: int = 4
) -> float:
    """A backlog through a link that delivers one ``size`` batch every ``per_batch_s``, with
    ``window`` batches in flight: returns the time of the last ack."""  # fmt: skip
    published = [start] * min(window, batches)
    now = start
    for i in range(batches):
        now = max(now, published[i]) + per_batch_s
        rate.acked(size, published[i], backlogged=True, now=now)
        if len(published) < batches:
            published.append(now)  # the ack freed a place: the next batch goes at once
    return now


def test_a_drained_backlog_gives_the_links_rate() -> None:
    rate = LinkRate()
    drain(rate, start=0.0, batches=100, size=10 * KB, per_batch_s=0.1)  # 100 kB/s

    assert rate.mbps() == pytest.approx(0.8)


def test_idle_periods_and_sparse_data_do_not_count() -> None:
    rate = LinkRate()
    for second in range(60):  # one small batch a second, never a backlog: the data's pace
        rate.acked(200, published_at=second, backlogged=False, now=second + 0.02)
    assert rate.mbps() is None  # the link was never the limit: capacity unknown

    end = drain(rate, start=100.0, batches=50, size=10 * KB, per_batch_s=0.1)
    for second in range(60):  # quiet again, then a second backlog at the same rate
        at = end + 1 + second
        rate.acked(200, published_at=at, backlogged=False, now=at + 0.02)
    drain(rate, start=end + 3600.0, batches=50, size=10 * KB, per_batch_s=0.1)

    assert rate.mbps() == pytest.approx(0.8)  # the hour between them is not wall time


def test_acks_in_one_message_add_their_bytes_at_no_extra_time() -> None:
    rate = LinkRate()
    for first in range(0, 40, 4):  # four batches answered by each ack message, every 0.4 s
        now = 0.4 * (first // 4 + 1)
        for _ in range(4):
            rate.acked(10 * KB, published_at=now - 0.4, backlogged=True, now=now)

    assert rate.mbps() == pytest.approx(0.8)


def test_a_stall_spoils_one_sample_not_the_rate() -> None:
    rate = LinkRate()
    end = drain(rate, start=0.0, batches=50, size=10 * KB, per_batch_s=0.1)
    rate.acked(10 * KB, published_at=end, backlogged=True, now=end + 60)  # ingest was down
    drain(rate, start=end + 60, batches=50, size=10 * KB, per_batch_s=0.1)

    assert rate.mbps() == pytest.approx(0.8)


def test_a_batchs_own_size_over_its_round_trip_is_a_floor() -> None:
    rate = LinkRate()
    rate.acked(1 * KB, published_at=0.0, backlogged=True, now=1.0)  # 1 kB/s
    rate.acked(1 * KB, published_at=0.0, backlogged=True, now=2.0)  # 1 kB/s
    rate.acked(200 * KB, published_at=0.0, backlogged=True, now=3.0)  # 200 kB in 3 s

    assert rate.mbps() == pytest.approx(200 * KB / 3.0 * 8 / 1e6)


def test_memory_is_bounded_and_old_drains_age_out() -> None:
    rate = LinkRate(samples=10)
    end = drain(rate, start=0.0, batches=10, size=10 * KB, per_batch_s=1.0)  # 10 kB/s
    drain(rate, start=end + 10, batches=10, size=10 * KB, per_batch_s=0.1)  # 100 kB/s

    assert rate.mbps() == pytest.approx(0.8)
    assert len(rate._samples) == 10


def test_no_time_measured_is_no_rate_and_the_rate_is_bounded() -> None:
    rate = LinkRate()
    rate.acked(10 * KB, published_at=5.0, backlogged=True, now=5.0)
    assert rate.mbps() is None

    rate.acked(10**9, published_at=5.0, backlogged=True, now=5.000001)
    assert rate.mbps() == MAX_LINK_MBPS


def test_the_ack_window_measures_backlogged_batches_and_leaves_escalations_out() -> None:
    window = AckWindow(10.0)
    now = 0.0
    for _ in range(20):
        batch_id = new_event_id()
        window.add(batch_id, "event", ["e"], now, size=5 * KB, backlogged=True)
        escalation = new_event_id()  # an image answered after the cloud model ran
        window.add(escalation, "escalation", ["x"], now, size=500 * KB, backlogged=True)
        now += 0.05
        window.settle([BatchAck(batch_id=batch_id, outcome="stored")], now)
        window.settle([BatchAck(batch_id=escalation, outcome="stored")], now + 0.01)

    assert window.link_mbps() == pytest.approx(0.8)  # 5 kB per 50 ms
