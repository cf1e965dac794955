"""Readings batches, the shared health counters (logged on transitions), the reorder buffer."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.sources.backoff import Backoff
from edge_agent.sources.readings import Readings, SourceHealth
from edge_agent.sources.reorder import ReorderBuffer


def test_a_batch_checks_its_shapes() -> None:
    batch = Readings.rows([(1.0, [1, 2]), (2.0, [3, 4])], channels=2)
    assert len(batch) == 2
    assert batch.values.tolist() == [[1, 2], [3, 4]]
    assert Readings.one(5.0, [7.0]).values.shape == (1, 1)
    with pytest.raises(ValueError, match=r"not \[N\], \[N, C\]"):
        Readings(np.zeros(3), np.zeros((2, 1)))


def test_bad_readings_are_counted_per_reason_and_logged_once_per_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = SourceHealth("press")
    with caplog.at_level(logging.INFO, logger="edge_agent.sources.readings"):
        health.ok(3)
        for _ in range(5):
            health.bad_reading("timeout", "no answer in 1 s")
        health.bad_reading("unparseable", "'abc' is not a number")
        health.ok()
        health.ok()
        health.bad_reading("timeout", "no answer in 1 s")
    assert health.snapshot() == {
        "readings": 5,
        "gaps": 0,
        "missed": 0,
        "bad_timeout": 6,
        "bad_unparseable": 1,
    }
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "source press: bad reading (timeout): no answer in 1 s",
        "source press: readings are good again (after timeout)",
        "source press: bad reading (timeout): no answer in 1 s",
    ]


def test_a_lost_connection_is_one_gap_logged_once_and_its_recovery_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = SourceHealth("plc")
    with caplog.at_level(logging.INFO, logger="edge_agent.sources.readings"):
        health.connected("connected to plc")  # the first connection is not a recovery
        assert health.disconnected("connection to plc (refused)")
        assert not health.disconnected("connection to plc (refused)")
        health.add_missed(12)
        health.connected("connected to plc")
        health.connected("connected to plc")
    assert (health.gaps, health.missed, health.is_connected) == (1, 12, True)
    assert [r.getMessage() for r in caplog.records] == [
        "source plc: lost connection to plc (refused)",
        "source plc: connected to plc again",
    ]


def test_backoff_doubles_up_to_its_maximum_and_resets() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next() == 0.5


def test_the_reorder_buffer_releases_in_time_order_after_the_delay() -> None:
    buffer = ReorderBuffer(max_delay_s=1.0)
    for ts, arrived in [(10.0, 0.0), (9.5, 0.1), (10.2, 0.2)]:
        assert buffer.push(ts, [ts], arrived)
    assert buffer.pop_ready(now=0.5) == []
    assert buffer.next_due() == 1.0
    # At 1.0 the first arrival has waited long enough: it leaves with everything older.
    assert [ts for ts, _ in buffer.pop_ready(now=1.0)] == [9.5, 10.0]
    assert not buffer.push(9.9, [9.9], arrived=1.1)  # older than one released: late
    assert buffer.push(11.5, [11.5], arrived=1.2)  # 1.5 s newer: 10.2 may leave
    assert [ts for ts, _ in buffer.pop_ready(now=1.2)] == [10.2]
    assert [ts for ts, _ in buffer.flush()] == [11.5]
    assert buffer.next_due() is None


@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 0.5)), max_size=50))
def test_the_reorder_buffer_never_releases_out_of_order(events: list[tuple[float, float]]) -> None:
    buffer = ReorderBuffer(max_delay_s=1.0)
    released: list[float] = []
    now = 0.0
    for ts, wait in events:
        now += wait
        buffer.push(ts, [ts], now)
        released += [t for t, _ in buffer.pop_ready(now)]
    released += [t for t, _ in buffer.flush()]
    assert released == sorted(released)
