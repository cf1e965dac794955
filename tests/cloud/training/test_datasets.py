"""A job's dataset query on SQLite and PostgreSQL, over more samples than a statement may
bind: windows with a trusted label are picked before ``max_samples`` applies (older samples
that are not windows, or carry no trusted label, never crowd them out), each with the label of
the most trusted source (its latest), and what was left out is counted."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session

from cloud_api.db import create_db_engine, migrate
from cloud_api.tables import SampleLabelRow, SampleRow
from cloud_api.training.datasets import select_items
from cloud_api.training.spec import Selector

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LABELLED = 41_000
"""More trusted windows than SQLite binds in one statement (32 766)."""
CROWD = 1_000
"""Older samples of each kind that must not take the dataset's places."""
SHAPE = (64,)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


def sample(n: int, kind: str = "window") -> dict[str, Any]:
    meta: dict[str, Any] = {"kind": kind}
    if kind == "window":
        meta["window"] = {"shape": list(SHAPE), "sample_rate_hz": 100.0}
    ts = T0 + timedelta(seconds=n)
    return {
        "id": f"s{n:08d}", "agent_id": "press-1", "pipeline": "spindle-vibration", "ts": ts,
        "reason": "event", "event_id": None, "sha256": "0" * 64, "meta": meta,
        "received_at": ts,
    }  # fmt: skip


def label(n: int, value: str, source: str) -> dict[str, Any]:
    return {
        "sample_id": f"s{n:08d}", "label": value, "source": source, "author": "x",
        "verdict": None, "model": None, "created_at": T0,
    }  # fmt: skip


def fill(engine: Engine) -> None:
    """Oldest first: CROWD frames with a person's label, CROWD windows the edge alone
    labelled, then LABELLED windows a person labelled (every tenth 'imbalance', else
    'normal'), the last of which also carry other sources' labels and a relabel."""
    samples = [sample(n, "frame") for n in range(CROWD)]
    labels = [label(n, "normal", "person") for n in range(CROWD)]
    samples += [sample(n) for n in range(CROWD, 2 * CROWD)]
    labels += [label(n, "imbalance", "edge") for n in range(CROWD, 2 * CROWD)]
    first = 2 * CROWD
    samples += [sample(n) for n in range(first, first + LABELLED)]
    labels += [
        label(n, "imbalance" if n % 10 == 0 else "normal", "person")
        for n in range(first, first + LABELLED)
    ]
    last = first + LABELLED - 1
    labels += [label(last, "misalignment", "edge"), label(last, "misalignment", "cloud")]
    labels += [label(last - 1, "misalignment", "cloud"), label(last - 1, "looseness", "person")]
    with engine.begin() as conn:
        for start in range(0, len(samples), 5000):
            conn.execute(insert(SampleRow), samples[start : start + 5000])
        for start in range(0, len(labels), 5000):
            conn.execute(insert(SampleLabelRow), labels[start : start + 5000])


def test_trusted_windows_are_picked_before_the_limit_without_a_giant_in(engine: Engine) -> None:
    fill(engine)
    with Session(engine) as session:
        items, skipped = select_items(
            session, pipeline="spindle-vibration",
            selector=Selector(label_sources=["person", "cloud"], max_samples=LABELLED),
            window_shape=SHAPE, test_share=0.25,
        )  # fmt: skip
        only_faults, _ = select_items(
            session, pipeline="spindle-vibration",
            selector=Selector(labels=["imbalance"], max_samples=LABELLED), window_shape=SHAPE,
            test_share=0.25,
        )  # fmt: skip

    assert len(items) == LABELLED
    assert items[0].sample_id == f"s{2 * CROWD:08d}"  # the oldest trusted window
    assert {item.source for item in items} == {"person"}
    # A person's label wins over the cloud's and the edge's, and a person's relabel counts.
    assert [item.label for item in items[-2:]] == ["looseness", "normal"]
    assert skipped == {"not a window": CROWD, "no label from a trusted source": CROWD}
    assert len(only_faults) == LABELLED // 10
    assert {item.label for item in only_faults} == {"imbalance"}


def test_the_cloud_label_is_used_when_no_person_labelled_and_edge_labels_only_on_request(
    engine: Engine,
) -> None:
    rows = [sample(n) for n in range(3)]
    labels = [label(0, "normal", "edge"), label(0, "imbalance", "cloud")]
    labels += [label(1, "imbalance", "edge"), label(2, "normal", "edge")]
    labels += [label(2, "looseness", "edge")]  # the edge's latest wins among its own
    with engine.begin() as conn:
        conn.execute(insert(SampleRow), rows)
        conn.execute(insert(SampleLabelRow), labels)
    with Session(engine) as session:
        default, skipped = select_items(
            session, pipeline="spindle-vibration", selector=Selector(), window_shape=SHAPE,
            test_share=0.25,
        )  # fmt: skip
        with_edge, _ = select_items(
            session, pipeline="spindle-vibration",
            selector=Selector(label_sources=["edge", "cloud"]), window_shape=(64,),
            test_share=0.25,
        )  # fmt: skip
        other_shape, shape_skipped = select_items(
            session, pipeline="spindle-vibration", selector=Selector(), window_shape=(32,),
            test_share=0.25,
        )  # fmt: skip

    assert [(item.label, item.source) for item in default] == [("imbalance", "cloud")]
    assert skipped == {"no label from a trusted source": 2}
    assert [(item.label, item.source) for item in with_edge] == [
        ("imbalance", "cloud"), ("imbalance", "edge"), ("looseness", "edge"),
    ]  # fmt: skip
    assert other_shape == []
    assert shape_skipped["window shape [64] is not [32]"] == 1
