"""Escalation at the edge: the token bucket, the band, the offline policy, the answers, on a
real outbox (SQLite) and the real vibration model."""

from __future__ import annotations

import io
import json
import sqlite3
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

import models
from edge_agent.config import load_config
from edge_agent.delivery.action_workers import Actions
from edge_agent.delivery.escalation import EscalationDesk, Escalator
from edge_agent.delivery.escalation_config import EscalateConfig
from edge_agent.delivery.outbox import Outbox
from edge_agent.delivery.outbox_writer import OutboxWriter
from edge_agent.delivery.selection import EventSelector
from edge_agent.delivery.spool import Spool
from edge_agent.inference.postprocess import Detection
from edge_agent.inference.slot import load_slot
from edge_agent.pipelines.collect import CollectConfig, Collector, image_encoder, window_encoder
from edge_agent.pipelines.config import PipelineConfig
from edge_agent.pipelines.privacy import PrivacyConfig
from edge_agent.pipelines.sensor import SensorPipeline
from edge_agent.pipelines.vision import VisionPipeline
from shared.errors import ConfigError
from shared.escalations import Escalation, EscalationResult
from shared.messages import Event, ModelRef, PipelineSummary, encode, new_event_id
from shared.samples import SampleMeta
from shared.token_bucket import TokenBucket
from tests.edge.conftest import model_section

EDGE = ModelRef(name="vibration-anomaly", version="1.0.0", sha256="0" * 64)
CLOUD = ModelRef(name="vibration-cloud", version="2.0.0", sha256="1" * 64)
T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_starts_full_refills_at_its_rate_and_never_holds_more() -> None:
    clock = Clock()
    bucket = TokenBucket(6, clock)  # one token every 10 s
    assert [bucket.take() for _ in range(8)] == [True] * 6 + [False] * 2
    clock.now += 9.5
    assert not bucket.take()
    clock.now += 0.6
    assert bucket.take()
    assert not bucket.take()
    clock.now += 3600
    assert sum(bucket.take() for _ in range(20)) == 6


def outbox(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "outbox.db", max_bytes=1 << 30, max_age_s=86400)


def stored(tmp_path: Path) -> list[Escalation]:
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        rows = db.execute(
            "SELECT payload FROM outbox WHERE kind = 'escalation' ORDER BY rowid_"
        ).fetchall()
    return [Escalation.model_validate_json(payload) for (payload,) in rows]


def window_desk(
    tmp_path: Path, online: list[bool], clock: Clock, **escalate: object
) -> tuple[EscalationDesk, Escalator, Outbox]:
    box = outbox(tmp_path)
    desk = EscalationDesk("gw-1", box, lambda: online[0])
    config = EscalateConfig.model_validate({"band": [0.4, 0.6], **escalate})
    encoder = window_encoder("vib", 12800.0, (), PrivacyConfig())
    return desk, desk.escalator(config, "vib", encoder, clock), box


def offer(escalator: Escalator, n: int, *, label: str = "imbalance") -> None:
    for i in range(n):
        escalator.offer(np.full(64, i, dtype=np.float32), 0.5, label, T0 + i, EDGE)


def test_a_burst_sends_the_budget_and_drops_the_rest_counted(tmp_path: Path) -> None:
    clock = Clock()
    desk, escalator, box = window_desk(tmp_path, [True], clock, budget_per_min=3)
    desk.start()
    offer(escalator, 10)
    clock.now += 20.0  # one more token
    offer(escalator, 2)
    desk.stop()
    c = escalator.counters
    assert (c.escalated, c.dropped_budget, c.dropped_offline, c.queued) == (4, 8, 0, 0)
    sent = stored(tmp_path)
    assert len(sent) == 4
    first = sent[0]
    assert (first.kind, first.label, first.score, first.agent_id) == (
        "window",
        "imbalance",
        0.5,
        "gw-1",
    )
    assert first.window is not None
    assert np.array_equal(np.load(io.BytesIO(first.input_bytes())), np.zeros(64))
    box.close()


def test_offline_drop_drops_and_offline_queue_keeps_up_to_queue_max(tmp_path: Path) -> None:
    clock = Clock()
    online = [False]
    desk, dropping, box = window_desk(tmp_path, online, clock, offline="drop", budget_per_min=100)
    queueing = desk.escalator(
        EscalateConfig(band=(0.4, 0.6), offline="queue", queue_max=2, budget_per_min=100),
        "vib2",
        window_encoder("vib2", 12800.0, (), PrivacyConfig()),
        clock,
    )
    desk.start()
    offer(dropping, 3)
    offer(queueing, 5)
    desk.flush()
    assert (dropping.counters.escalated, dropping.counters.dropped_offline) == (0, 3)
    q = queueing.counters
    assert (q.escalated, q.queued, q.dropped_offline) == (2, 2, 3)
    # An answer frees a place; online, the next one is not "queued".
    first = stored(tmp_path)[0]
    desk.answered(answer(first, label="imbalance"))
    online[0] = True
    offer(queueing, 1)
    desk.stop()
    assert (q.escalated, q.queued, q.answered) == (3, 2, 1)
    box.close()


def answer(escalation: Escalation, *, label: str, score: float = 0.93) -> EscalationResult:
    return EscalationResult(
        escalation_id=escalation.id,
        agent_id=escalation.agent_id,
        pipeline=escalation.pipeline,
        ts=datetime.now(UTC),
        outcome="answered",
        model=CLOUD,
        label=label,
        score=score,
        inference_ms=3.0,
    )


def test_an_answer_is_a_reconciled_event_once_and_a_refusal_is_counted(tmp_path: Path) -> None:
    clock = Clock()
    desk, escalator, box = window_desk(tmp_path, [True], clock, budget_per_min=100)
    desk.start()
    edge_event = new_event_id()
    escalator.offer(np.zeros(64, np.float32), 0.45, "imbalance", T0, EDGE, event_id=edge_event)
    offer(escalator, 2)
    desk.flush()
    agreeing, disagreeing, refused = stored(tmp_path)
    desk.answered(answer(agreeing, label="imbalance"))
    desk.answered(answer(agreeing, label="imbalance"))  # a resend's second answer
    desk.answered(answer(disagreeing, label="misalignment", score=0.7))
    refusal = EscalationResult(
        escalation_id=refused.id, agent_id="gw-1", pipeline="vib", ts=datetime.now(UTC),
        outcome="refused", reason="no cloud model for pipeline vib",
    )  # fmt: skip
    desk.answered(refusal)
    desk.stop()
    c = escalator.counters
    assert (c.escalated, c.answered, c.agreed) == (3, 2, 1)
    assert c.refused == {"no cloud model for pipeline vib": 1}
    assert c.status()["escalations_refused"] == 1
    assert stored(tmp_path) == []  # every result took its escalation out of the outbox
    agree, disagree = escalator.take_answers()
    assert escalator.take_answers() == []
    assert (agree.kind, agree.state, agree.label, agree.score) == (
        "escalation", "instant", "imbalance", 0.93,
    )  # fmt: skip
    assert agree.model == CLOUD
    assert agree.attributes == {
        "escalation_id": agreeing.id,
        "edge_event_id": edge_event,
        "edge_label": "imbalance",
        "edge_score": 0.45,
        "edge_model_version": "1.0.0",
        "cloud_label": "imbalance",
        "cloud_score": 0.93,
        "cloud_model": "vibration-cloud",
        "cloud_model_version": "2.0.0",
        "agree": True,
    }
    assert disagree.attributes["agree"] is False
    assert "edge_event_id" not in disagree.attributes
    box.close()


def test_an_action_matches_escalation_events_on_kind_and_agreement() -> None:
    ts = datetime.now(UTC)
    event = Event(
        id=new_event_id(), pipeline="vib", kind="escalation", state="instant",
        label="misalignment", score=0.7, ts=ts, seq=3, model=CLOUD, attributes={"agree": False},
    )  # fmt: skip
    disagreements = EventSelector.of(on=["instant"], kinds=["escalation"], when="agree == no")
    assert disagreements.wants(event)
    assert EventSelector.of(on=["instant"], when="agree != yes").wants(event)
    assert EventSelector.of(on=["instant"], when="agree == false").wants(event)
    assert not EventSelector.of(on=["instant"], when="agree == true").wants(event)
    assert not EventSelector.of(on=["instant"], when="agree == maybe").wants(event)
    assert not EventSelector.of(on=["instant"], kinds=["anomaly"]).wants(event)


def test_escalations_leave_after_events_and_before_summaries(tmp_path: Path) -> None:
    box = outbox(tmp_path)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    summary = PipelineSummary(
        agent_id="gw-1", pipeline="vib", window_start=start,
        window_end=start + timedelta(minutes=1), samples_in=1, inferences=1, raw_bytes=8,
        sent_bytes=0, model=EDGE,
    )  # fmt: skip
    box.put_summary(summary)
    box.put_escalation("0190a6b2-0000-7000-8000-000000000001", b"{}", pipeline="vib")
    event = Event(
        id=new_event_id(), pipeline="vib", kind="anomaly", state="start", label="imbalance",
        score=0.9, ts=datetime.now(UTC), seq=0, model=EDGE,
    )  # fmt: skip
    box.put([event])
    kinds = []
    while batch := box.next_batch(100):
        kinds.append([item.kind for item in batch])
    assert kinds == [["event"], ["escalation"], ["summary"]]
    assert box.take("0190a6b2-0000-7000-8000-000000000001") == b"{}"
    assert box.take("0190a6b2-0000-7000-8000-000000000001") is None
    box.close()


def test_a_camera_escalates_the_crop_of_its_unsure_detection_blurred(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, size=(240, 320, 3), dtype=np.uint8)
    detections = [
        Detection("car", 0.95, (200.0, 150.0, 300.0, 200.0)),
        Detection("person", 0.45, (100.0, 60.0, 140.0, 160.0)),
    ]
    box = outbox(tmp_path)
    desk = EscalationDesk("gw-1", box, lambda: True)
    privacy = PrivacyConfig(images="crops", blur=["person"])
    escalator = desk.escalator(
        EscalateConfig(band=(0.3, 0.6)), "cam", image_encoder("cam", privacy), Clock()
    )
    desk.start()
    escalator.offer_detections(frame, detections, T0, EDGE, None)
    escalator.offer_detections(frame, detections[:1], T0 + 1, EDGE, None)  # nothing unsure
    desk.stop()
    (sent,) = stored(tmp_path)
    assert (sent.kind, sent.label, sent.score) == ("image", "person", 0.45)
    assert sent.image is not None
    assert (sent.image.region, sent.image.blurred) == ("crop", 1)
    assert sent.privacy.blur == ["person"]
    image = cv2.imdecode(np.frombuffer(sent.input_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    assert image.astype(float).var() < 0.5 * frame.astype(float).var()
    box.close()


def test_the_pipeline_escalates_exactly_the_windows_in_its_band(tmp_path: Path) -> None:
    """The real model on simulated vibration with faults: the windows whose score lies in the
    band are escalated (budget ample), with their score and the edge's label, and the event
    a window starts is linked."""
    section = {
        "name": "spindle",
        "source": {
            "type": "simulated_vibration", "seed": 3, "speed": 0, "duration_s": 20,
            "schedule": [{"at_s": 5, "duration_s": 5, "fault": "imbalance"}],
        },
        "model": model_section(),
        "summary_interval_s": 0,
    }  # fmt: skip
    plain = PipelineConfig.model_validate(section)
    reference = SensorPipeline(plain, load_slot(plain.model, plain.runtime))
    model = reference.slot.current()
    windows = [s.data for s in reference.source.samples(threading.Event())]
    probabilities = model.runtime.run(np.stack(windows).astype(np.float32))
    scores = 1.0 - probabilities[:, model.normal_index]
    lo, hi = 0.5, 1.0
    expected = int(((scores >= lo) & (scores <= hi)).sum())
    assert 0 < expected < len(windows)

    box = outbox(tmp_path)
    desk = EscalationDesk("gw-1", box, lambda: True)
    config = PipelineConfig.model_validate(
        {**section, "escalate": {"band": [lo, hi], "budget_per_min": 60_000}}
    )
    pipeline = SensorPipeline(
        config, load_slot(config.model, config.runtime), agent_id="gw-1", escalations=desk
    )
    desk.start()
    events = []
    for sample in pipeline.source.samples(threading.Event()):
        events += pipeline.process_sample(sample)
    desk.stop()
    sent = stored(tmp_path)
    assert len(sent) == expected == pipeline.status().escalated
    assert all(lo <= e.score <= hi for e in sent)
    assert {e.label for e in sent} == {"imbalance"}
    start = next(e for e in events if e.state == "start")
    assert start.id in {e.event_id for e in sent}
    box.close()


def test_a_pipeline_without_escalate_sends_nothing(tmp_path: Path) -> None:
    box = outbox(tmp_path)
    desk = EscalationDesk("gw-1", box, lambda: True)
    config = PipelineConfig.model_validate(
        {
            "name": "spindle",
            "source": {"type": "simulated_vibration", "seed": 3, "speed": 0, "duration_s": 2},
            "model": model_section(),
        }
    )
    pipeline = SensorPipeline(
        config, load_slot(config.model, config.runtime), agent_id="gw-1", escalations=desk
    )
    assert pipeline.escalator is None
    for sample in pipeline.source.samples(threading.Event()):
        pipeline.process_sample(sample)
    assert stored(tmp_path) == []
    assert pipeline.status().escalated == 0
    box.close()


def test_a_band_must_be_in_order() -> None:
    with pytest.raises(ValidationError, match="lo <= hi"):
        EscalateConfig.model_validate({"band": [0.7, 0.3]})


def test_a_camera_that_lets_no_pixels_out_cannot_escalate(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        agent_id: gate-1
        mqtt:
          url: mqtt://127.0.0.1:1883
        pipelines:
          - name: gate
            source:
              type: synthetic_scene
            model:
              name: detector
              path: detector.onnx
              version: 1.0.0
              labels: [person, car]
              task: detection
            escalate:
              band: [0.3, 0.6]
        """
    )
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    with pytest.raises(
        ConfigError, match=r"agent.yaml:14: pipelines\[0\]\.escalate: .*images: never"
    ):
        load_config(path)
    path.write_text(text + "    privacy:\n      images: crops\n")
    assert load_config(path).pipelines[0].escalate == EscalateConfig(band=(0.3, 0.6))


def test_what_is_sent_is_kept_as_an_escalated_sample_within_the_collectors_caps(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30, max_files=1000, queue_size=100)
    spool.start()
    box = outbox(tmp_path)
    desk = EscalationDesk("gw-1", box, lambda: True, spool)
    encoder = window_encoder("vib", 12800.0, (), PrivacyConfig())
    escalator = desk.escalator(EscalateConfig(band=(0.4, 0.6)), "vib", encoder, Clock())
    collector = Collector(
        CollectConfig(max_per_minute=2), pipeline="vib", agent_id="gw-1", spool=spool,
        encoder=encoder,
    )  # fmt: skip
    desk.start()
    for i in range(3):
        escalator.offer(np.full(64, i, np.float32), 0.5, "imbalance", T0, EDGE, collector=collector)
    desk.stop()
    spool.stop()
    first, second, third = stored(tmp_path)
    assert third.sample_id is None  # over the collector's cap: sent, not kept
    assert (collector.counters.kept, collector.counters.capped) == ({"escalated": 2}, 1)
    samples = {}
    for entry in spool.oldest(100):
        meta_line, blob = entry.read()
        meta = SampleMeta.model_validate_json(meta_line)
        samples[meta.id] = (meta, blob)
    assert set(samples) == {first.sample_id, second.sample_id}
    for escalation in (first, second):
        assert escalation.sample_id is not None
        meta, blob = samples[escalation.sample_id]
        assert (meta.reason, meta.label, meta.score) == ("escalated", "imbalance", 0.5)
        assert blob == escalation.input_bytes()
    box.close()


def test_all_pipelines_together_keep_at_most_max_waiting_unanswered(tmp_path: Path) -> None:
    box = outbox(tmp_path)
    desk = EscalationDesk("gw-1", box, lambda: True, max_waiting=3)
    config = EscalateConfig(band=(0.4, 0.6), queue_max=10, budget_per_min=100)
    one, two = (
        desk.escalator(config, name, window_encoder(name, 12800.0, (), PrivacyConfig()), Clock())
        for name in ("one", "two")
    )
    desk.start()
    offer(one, 2)
    desk.flush()
    offer(two, 2)
    desk.flush()
    assert (one.counters.escalated, two.counters.escalated) == (2, 1)
    assert two.counters.dropped_offline == 1
    desk.answered(answer(stored(tmp_path)[0], label="imbalance"))
    offer(two, 1)
    desk.stop()
    assert two.counters.escalated == 2
    box.close()


def test_a_result_frees_its_slot_even_when_its_row_is_gone(tmp_path: Path) -> None:
    """An escalation whose outbox row went (dropped for age, or taken by an earlier answer)
    must not hold its place among the unanswered for ever: the pipeline would stop escalating."""
    box = outbox(tmp_path)
    desk = EscalationDesk("gw-1", box, lambda: True, max_waiting=1)
    config = EscalateConfig(band=(0.4, 0.6), queue_max=10, budget_per_min=100)
    encoder = window_encoder("one", 12800.0, (), PrivacyConfig())
    one = desk.escalator(config, "one", encoder, Clock())
    desk.start()
    offer(one, 1)
    desk.flush()
    (sent,) = stored(tmp_path)
    assert box.take(sent.id) is not None  # the row goes without an answer
    desk.answered(answer(sent, label="imbalance"))
    offer(one, 1)
    desk.stop()
    assert (one.counters.escalated, one.counters.dropped_offline) == (2, 0)
    box.close()


def test_an_escalated_input_dropped_offline_is_still_kept_as_a_sample(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30, max_files=1000, queue_size=100)
    spool.start()
    box = outbox(tmp_path)
    desk = EscalationDesk("gw-1", box, lambda: False, spool)
    encoder = window_encoder("vib", 12800.0, (), PrivacyConfig())
    escalator = desk.escalator(
        EscalateConfig(band=(0.4, 0.6), offline="drop"), "vib", encoder, Clock()
    )
    collector = Collector(
        CollectConfig(), pipeline="vib", agent_id="gw-1", spool=spool, encoder=encoder
    )
    desk.start()
    escalator.offer(np.ones(64, np.float32), 0.5, "imbalance", T0, EDGE, collector=collector)
    desk.stop()
    spool.stop()
    assert stored(tmp_path) == []
    assert (escalator.counters.escalated, escalator.counters.dropped_offline) == (0, 1)
    ((meta_line, blob),) = [entry.read() for entry in spool.oldest(10)]
    assert SampleMeta.model_validate_json(meta_line).reason == "escalated"
    assert np.array_equal(np.load(io.BytesIO(blob)), np.ones(64))
    box.close()


def test_a_camera_pipeline_escalates_blurred_crops_linked_to_its_object_events(
    tmp_path: Path,
) -> None:
    """The real detector on a synthetic street: every detection is unsure (band [0.5, 1]);
    each frame escalates a crop of its first one, people blurred, and the frame that starts
    an object's event links it."""
    manifest = Path(models.__file__).resolve().parent / "manifest.json"
    config = PipelineConfig.model_validate(
        {
            "name": "gate",
            "source": {
                "type": "synthetic_scene", "fps": 10, "speed": 0, "seed": 3, "duration_s": 2,
                "actors": [{"label": "person", "enter_s": 0, "start_xy": [300, 200],
                            "velocity": [0, 0], "size": [40, 110]}],
            },
            "model": {"name": "scene-detector", "manifest": str(manifest)},
            "vision": {"motion": {"enabled": False}},
            "filters": [],
            "privacy": {"images": "crops", "blur": ["person"]},
            "escalate": {"band": [0.5, 1.0], "budget_per_min": 10_000},
        }
    )  # fmt: skip
    box = outbox(tmp_path)
    desk = EscalationDesk("gw-1", box, lambda: True)
    pipeline = VisionPipeline(
        config, load_slot(config.model, config.runtime), agent_id="gw-1", escalations=desk
    )
    desk.start()
    events = []
    for sample in pipeline.source.samples(threading.Event()):
        events += pipeline.process_sample(sample)
    desk.stop()
    sent = stored(tmp_path)
    assert len(sent) >= 10
    assert {e.label for e in sent} == {"person"}
    for escalation in sent:
        assert escalation.image is not None
        assert (escalation.kind, escalation.image.region) == ("image", "crop")
        assert escalation.image.blurred >= 1
    start = next(e for e in events if e.kind == "object" and e.state == "start")
    assert start.id in {e.event_id for e in sent}
    box.close()


class Recorder:
    """What the local actions were handed (``Actions.submit``)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def submit(self, events: list[Event]) -> None:
        self.events += events


def stored_events(tmp_path: Path) -> list[Event]:
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        rows = db.execute("SELECT payload FROM outbox WHERE kind = 'event'").fetchall()
    return [Event.model_validate_json(payload) for (payload,) in rows]


def run_spindle(tmp_path: Path, *, escalates: bool) -> tuple[Recorder, Outbox]:
    """One run of a short vibration pipeline on the outbox file, as an agent that starts."""
    section: dict[str, object] = {
        "name": "spindle",
        "source": {"type": "simulated_vibration", "seed": 3, "speed": 0, "duration_s": 2},
        "model": model_section(),
        "summary_interval_s": 0,
    }
    if escalates:
        section["escalate"] = {"band": [0.4, 0.6]}
    config = PipelineConfig.model_validate(section)
    box = outbox(tmp_path)
    recorder = Recorder()
    desk = EscalationDesk("gw-1", box, lambda: True)
    pipeline = SensorPipeline(
        config, load_slot(config.model, config.runtime), agent_id="gw-1",
        actions=cast(Actions, recorder), escalations=desk,
    )  # fmt: skip
    assert (pipeline.escalator is not None) is escalates
    desk.start()
    with OutboxWriter(box) as writer:
        pipeline.run(writer, threading.Event())
    desk.stop()
    return recorder, box


@pytest.mark.parametrize("escalates", [True, False], ids=["escalates", "no-longer-escalates"])
def test_an_answer_a_crash_interrupts_is_emitted_once_after_the_restart(
    tmp_path: Path, escalates: bool
) -> None:
    """The result takes the escalation out of the outbox and stores its reconciled event in
    the same transaction; the agent dies before its pipeline emits it. The next run emits it
    (whether the pipeline still escalates or not): once to the actions, once in the outbox."""
    box = outbox(tmp_path)
    desk = EscalationDesk("gw-1", box, lambda: True)
    config = EscalateConfig(band=(0.4, 0.6))
    encoder = window_encoder("spindle", 12800.0, (), PrivacyConfig())
    escalator = desk.escalator(config, "spindle", encoder, Clock())
    desk.start()
    edge_event = new_event_id()
    escalator.offer(np.zeros(64, np.float32), 0.5, "imbalance", T0, EDGE, event_id=edge_event)
    desk.flush()
    (sent,) = stored(tmp_path)
    desk.answered(answer(sent, label="misalignment"))
    (pending,) = escalator.answers  # in memory only, until the pipeline's next sample ...
    desk.stop()
    box.close()  # ... which never comes: the agent dies here

    recorder, box = run_spindle(tmp_path, escalates=escalates)
    assert box.answers("spindle") == []
    box.close()
    (acted,) = [e for e in recorder.events if e.kind == "escalation"]
    (event,) = [e for e in stored_events(tmp_path) if e.kind == "escalation"]
    assert acted == event
    assert event.id == pending.id
    assert event.attributes["escalation_id"] == sent.id
    assert event.attributes["edge_event_id"] == edge_event
    assert (event.label, event.attributes["agree"]) == ("misalignment", False)
    assert stored(tmp_path) == []

    recorder, box = run_spindle(tmp_path, escalates=escalates)  # and once only
    box.close()
    assert [e for e in recorder.events if e.kind == "escalation"] == []
    assert [e.id for e in stored_events(tmp_path) if e.kind == "escalation"] == [event.id]


def test_an_answer_emitted_in_time_leaves_no_stored_answer(tmp_path: Path) -> None:
    """The answer's row goes in the transaction that stores it as an event."""
    box = outbox(tmp_path)
    answer_event = Event(
        id=new_event_id(), pipeline="vib", kind="escalation", state="instant",
        label="imbalance", score=0.9, ts=datetime.now(UTC), seq=0, model=CLOUD,
    )  # fmt: skip
    box.put_escalation("0190a6b2-0000-7000-8000-000000000002", b"{}", pipeline="vib")
    assert box.take("0190a6b2-0000-7000-8000-000000000002", answer_event) == b"{}"
    assert box.take("0190a6b2-0000-7000-8000-000000000002", answer_event) is None
    assert box.answers("vib") == [answer_event]
    assert box.answers("other") == []
    assert box.depth() == 1  # the agent is not done while an answer has not left
    box.put([answer_event.model_copy(update={"seq": 7})])
    assert box.answers("vib") == []
    assert box.depth() == 1
    box.close()


@pytest.mark.parametrize("bound", ["age", "size"])
def test_escalations_the_outbox_drops_free_their_places(tmp_path: Path, bound: str) -> None:
    """Offline, ``queue_max`` escalations wait; when the outbox drops them (too old, or
    pushed out by events), new ones take their places instead of being dropped."""
    now = [T0]
    events = [big_event(i) for i in range(20)]
    room = sum(len(encode(e)) for e in events) + 100  # the events, and not one escalation more
    box = Outbox(tmp_path / "outbox.db", max_bytes=room, max_age_s=60.0, clock=lambda: now[0])
    desk = EscalationDesk("gw-1", box, lambda: False)
    config = EscalateConfig(band=(0.4, 0.6), queue_max=2, budget_per_min=1000)
    escalator = desk.escalator(
        config, "vib", window_encoder("vib", 12800.0, (), PrivacyConfig()), Clock()
    )
    desk.start()
    offer(escalator, 3)
    desk.flush()
    c = escalator.counters
    assert (c.escalated, c.queued, c.dropped_offline) == (2, 2, 1)
    first = {e.id for e in stored(tmp_path)}
    if bound == "age":
        now[0] += 61.0
    else:
        box.put(events)  # escalations go first (their priority is lower), the events stay
        assert box.dropped == 2
        box.ack(e.id for e in events)  # delivered later: room for new escalations
    assert box.waiting_escalations() == {}
    offer(escalator, 3)
    desk.stop()
    assert box.dropped == 2
    assert (c.escalated, c.queued, c.dropped_offline) == (4, 4, 2)
    assert len(stored(tmp_path)) == 2
    assert not first & {e.id for e in stored(tmp_path)}
    box.close()


def big_event(i: int) -> Event:
    return Event(
        id=new_event_id(), pipeline="vib", kind="anomaly", state="instant", label="imbalance",
        score=0.9, ts=datetime.now(UTC), seq=i, model=EDGE,
        attributes={f"pad{k}": "x" * 250 for k in range(4)},
    )  # fmt: skip


def test_escalations_a_previous_run_left_still_wait_for_their_answers(tmp_path: Path) -> None:
    clock = Clock()
    desk, escalator, box = window_desk(tmp_path, [False], clock, queue_max=2)
    desk.start()
    offer(escalator, 2)
    desk.stop()
    box.close()  # the agent restarts, still offline
    desk, escalator, box = window_desk(tmp_path, [False], clock, queue_max=2)
    desk.start()
    offer(escalator, 1)
    desk.flush()
    assert (escalator.counters.escalated, escalator.counters.dropped_offline) == (0, 1)
    old = stored(tmp_path)[0]
    desk.answered(answer(old, label="imbalance"))  # the answer to the last run's escalation
    offer(escalator, 1)
    desk.stop()
    c = escalator.counters
    assert (c.escalated, c.answered, c.dropped_offline) == (1, 1, 1)
    (reconciled,) = escalator.take_answers()
    assert reconciled.attributes["escalation_id"] == old.id
    box.close()


def test_an_outbox_of_the_previous_release_counts_its_escalations(tmp_path: Path) -> None:
    """Schema 3 had no pipeline column: opening it fills the column from the payloads."""
    escalation = {"id": "e1", "pipeline": "vib", "label": "imbalance"}
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        db.executescript(
            "CREATE TABLE outbox (rowid_ INTEGER PRIMARY KEY AUTOINCREMENT,"
            " item_id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL DEFAULT 'event',"
            " priority INTEGER NOT NULL, created REAL NOT NULL, size INTEGER NOT NULL,"
            " payload BLOB NOT NULL, leased INTEGER NOT NULL DEFAULT 0);"
            " PRAGMA user_version=3;"
        )
        db.execute(
            "INSERT INTO outbox (item_id, kind, priority, created, size, payload)"
            " VALUES ('e1', 'escalation', 5, ?, 10, ?)",
            (datetime.now(UTC).timestamp(), json.dumps(escalation).encode()),
        )
    box = outbox(tmp_path)
    assert box.waiting_escalations() == {"vib": 1}
    assert box.answers("vib") == []
    box.close()
