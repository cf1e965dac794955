"""Collection rules, the spool's bounds and the privacy policy, on a real spool on disk."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from edge_agent.delivery.spool import Spool
from edge_agent.inference.postprocess import Detection
from edge_agent.pipelines.collect import CollectConfig, Collector, image_encoder, window_encoder
from edge_agent.pipelines.privacy import PrivacyConfig, blur_boxes, images_that_leave
from edge_agent.pipelines.thumbnails import crop_region
from shared.messages import ModelRef
from shared.samples import SampleMeta

MODEL = ModelRef(name="vibration-anomaly", version="1.0.0", sha256="0" * 64)
T0 = 1_700_000_000.0


def spool(tmp_path: Path, **bounds: int) -> Spool:
    return Spool(
        tmp_path / "spool",
        max_bytes=bounds.get("max_bytes", 1 << 30),
        max_files=bounds.get("max_files", 100_000),
        queue_size=bounds.get("queue_size", 100_000),
    )


def collector(s: Spool, **rules: object) -> Collector:
    config = CollectConfig.model_validate(
        {"max_per_minute": 10_000, "max_per_day": 100_000, **rules}
    )
    encoder = window_encoder("vib", 12800.0, ("x", "y"), PrivacyConfig())
    return Collector(config, pipeline="vib", agent_id="gw-1", spool=s, encoder=encoder)


def written(s: Spool) -> list[tuple[SampleMeta, bytes]]:
    s.start()
    s.stop()
    out = []
    for entry in s.oldest(1_000_000):
        meta_line, blob = entry.read()
        out.append((SampleMeta.model_validate_json(meta_line), blob))
    return out


def test_an_event_keeps_its_input_the_ring_before_it_and_a_few_after(tmp_path: Path) -> None:
    s = spool(tmp_path)
    c = collector(s, before=2, after=3)
    windows = [np.full((2, 8), i, dtype=np.float32) for i in range(12)]
    for i, window in enumerate(windows):
        event = "0190a5a0-0000-7000-8000-000000000001" if i == 5 else None
        c.offer(window, 0.1, "normal", T0 + i, MODEL, event_id=event)
    kept = written(s)
    values = [int(np.load(io.BytesIO(blob))[0, 0]) for _, blob in kept]
    assert sorted(values) == [3, 4, 5, 6, 7, 8]
    assert {meta.reason for meta, _ in kept} == {"event"}
    assert {meta.event_id for meta, _ in kept} == {"0190a5a0-0000-7000-8000-000000000001"}
    meta = kept[0][0]
    assert meta.window is not None
    assert (meta.window.shape, meta.window.channels, meta.window.sample_rate_hz) == (
        [2, 8], ["x", "y"], 12800.0,
    )  # fmt: skip
    assert meta.privacy.images == "never"
    assert c.counters.kept == {"event": 6}


def test_the_ring_keeps_what_it_saw_when_its_source_reuses_a_buffer(tmp_path: Path) -> None:
    """A source that refills one buffer (or a batch the pipeline slices into views) must not
    rewrite the ``before`` inputs the ring holds."""
    s = spool(tmp_path)
    c = collector(s, before=2)
    buffer = np.zeros((2, 8), dtype=np.float32)
    for i in range(6):
        buffer[:] = i
        event = "0190a5a0-0000-7000-8000-000000000002" if i == 5 else None
        c.offer(buffer, 0.1, "normal", T0 + i, MODEL, event_id=event)
    values = sorted(int(np.load(io.BytesIO(blob))[0, 0]) for _, blob in written(s))
    assert values == [3, 4, 5]


def test_band_random_share_and_caps(tmp_path: Path) -> None:
    s = spool(tmp_path)
    c = collector(s, band=[0.4, 0.6], random_share=0.1, seed=7, events=False, before=0)
    window = np.zeros(16, dtype=np.float32)
    for i in range(2000):
        c.offer(window, 0.5 if i % 10 == 0 else 0.05, "normal", T0 + i * 0.01, MODEL)
    assert c.counters.kept["band"] == 200
    assert 130 < c.counters.kept["random"] < 230  # 10 % of 1800, seeded

    capped = collector(s, band=[0.0, 1.0], max_per_minute=5, max_per_day=12, before=0)
    for i in range(60 * 4):  # four minutes, one input a second
        capped.offer(window, 0.5, "normal", T0 - T0 % 86400 + i, MODEL)
    assert capped.counters.kept["band"] == 12
    assert capped.counters.capped == 240 - 12


def test_a_band_must_be_in_order() -> None:
    with pytest.raises(ValidationError, match="lo <= hi"):
        CollectConfig.model_validate({"band": [0.7, 0.3]})


def test_the_spool_drops_the_oldest_beyond_its_bounds_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    s = spool(tmp_path, max_bytes=10_000)
    c = collector(s, band=[0.0, 1.0], before=0)
    for i in range(40):
        c.offer(np.full(256, i, dtype=np.float32), 0.5, "normal", T0 + i, MODEL)
    kept = written(s)
    assert s.bytes <= 10_000
    assert s.counters.dropped == 40 - len(kept)
    values = [int(np.load(io.BytesIO(blob))[0]) for _, blob in kept]
    assert values == list(range(40 - len(kept), 40))  # the newest, in order
    again = spool(tmp_path, max_bytes=10_000)
    assert [e.id for e in again.oldest(100)] == [meta.id for meta, _ in kept]  # by input time
    assert again.depth("vib") == len(kept)


def test_a_sample_written_again_under_its_id_counts_once(tmp_path: Path) -> None:
    s = spool(tmp_path)
    c = collector(s, band=[0.0, 1.0], before=0)
    c.offer(np.zeros(256, dtype=np.float32), 0.5, "normal", T0, MODEL)
    ((meta, blob),) = written(s)
    size = s.bytes
    s.write(meta, blob)  # the same sample again (a retried write)
    assert (s.depth(), s.depth("vib"), s.bytes) == (1, 1, size)
    (entry,) = s.oldest(10)
    s.remove(entry)
    assert (s.depth(), s.depth("vib"), s.bytes) == (0, 0, 0)


def test_a_full_writer_queue_refuses_without_waiting(tmp_path: Path) -> None:
    s = spool(tmp_path, queue_size=2)
    c = collector(s, band=[0.0, 1.0], before=0)
    for i in range(5):
        c.offer(np.zeros(8, dtype=np.float32), 0.5, "normal", T0 + i, MODEL)
    assert s.counters.queue_full == 3
    assert c.counters.kept["band"] == 2


def frame_with_person() -> tuple[np.ndarray, list[Detection]]:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, size=(240, 320, 3), dtype=np.uint8)
    return frame, [
        Detection("person", 0.9, (100.0, 60.0, 140.0, 160.0)),
        Detection("car", 0.8, (200.0, 150.0, 300.0, 200.0)),
    ]


def test_never_lets_no_pixels_out_and_crops_blur_people(tmp_path: Path) -> None:
    frame, detections = frame_with_person()
    assert images_that_leave(PrivacyConfig(), frame, detections) == []
    policy = PrivacyConfig(images="crops", blur=["person"])
    crops = images_that_leave(policy, frame, detections)
    assert [info.detections[0].label for _, info in crops] == ["person", "car"]
    blob, info = crops[0]
    assert (info.region, info.blurred) == ("crop", 1)
    image = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    left, top, _, _ = crop_region(frame.shape, detections[0].box)
    box = (slice(60 - top + 5, 160 - top - 5), slice(100 - left + 5, 140 - left - 5))
    sharp = frame[top:, left:][box]
    assert image[box].astype(float).var() < 0.2 * sharp.astype(float).var()
    car_blob, car_info = crops[1]
    assert car_info.blurred == 0
    car = cv2.imdecode(np.frombuffer(car_blob, np.uint8), cv2.IMREAD_COLOR)
    assert car is not None
    assert car.astype(float).var() > 0.5 * frame.astype(float).var()


def test_keep_labels_and_frames(tmp_path: Path) -> None:
    frame, detections = frame_with_person()
    only_cars = PrivacyConfig(images="crops", keep_labels=["car"])
    assert [i.detections[0].label for _, i in images_that_leave(only_cars, frame, detections)] == [
        "car"
    ]
    frames = PrivacyConfig(images="frames", blur=["person"], keep_labels=["car"])
    ((_, info),) = images_that_leave(frames, frame, detections)
    assert (info.width, info.height, info.region, info.blurred) == (320, 240, "frame", 1)
    assert [d.label for d in info.detections] == ["car"]
    nothing_kept = PrivacyConfig(images="frames", keep_labels=["bicycle"])
    assert images_that_leave(nothing_kept, frame, detections) == []
    blurred = blur_boxes(frame, [detections[0].box])
    assert np.array_equal(blurred[:, 200:], frame[:, 200:])

    s = spool(tmp_path)
    c = Collector(
        CollectConfig(random_share=1.0, before=0),
        pipeline="cam", agent_id="gw-1", spool=s,
        encoder=image_encoder("cam", PrivacyConfig(images="crops", blur=["person"])),
    )  # fmt: skip
    c.offer(frame, 0.9, "person", T0, MODEL, detections=detections)
    kept = written(s)
    assert [(m.kind, m.image.region if m.image else "") for m, _ in kept] == [
        ("image", "crop"),
        ("image", "crop"),
    ]
    assert kept[0][0].privacy.blur == ["person"]


def test_a_device_pipeline_on_a_score_model_keeps_its_events_windows(tmp_path: Path) -> None:
    """The scorer's one-window path: the event's window and its neighbours, [C, W] with the
    channels' names, labelled by the edge's own call."""
    import threading

    from edge_agent.inference.slot import load_slot
    from edge_agent.pipelines.config import PipelineConfig
    from edge_agent.pipelines.sensor import SensorPipeline
    from models.normal import fit_normal
    from models.normal_files import write_model
    from models.window_features import WindowSpec

    rng = np.random.default_rng(1)
    spec = WindowSpec(("flow", "pressure"), size=8, hop=8)
    write_model(fit_normal(rng.normal(size=(600, 2)), spec, name="n", version="1"), tmp_path)
    replay = np.vstack([rng.normal(size=(160, 2)), 25 + rng.normal(size=(40, 2))])
    lines = ["flow,pressure"] + [",".join(map(str, row)) for row in replay]
    (tmp_path / "replay.csv").write_text("\n".join(lines) + "\n")
    config = PipelineConfig.model_validate({
        "name": "line",
        "source": {"type": "csv", "path": str(tmp_path / "replay.csv"), "rate_hz": 10, "speed": 0},
        "window": {"size": 8, "hop": 8},
        "model": {"name": "n", "manifest": str(tmp_path / "manifest.json")},
        "collect": {"before": 1, "after": 1},
    })  # fmt: skip
    s = spool(tmp_path)
    pipeline = SensorPipeline(
        config, load_slot(config.model, config.runtime), agent_id="gw-1", spool=s
    )
    events = []
    for sample in pipeline.source.samples(threading.Event()):
        events += pipeline.process_sample(sample)
    (start,) = [e for e in events if e.state == "start"]
    kept = written(s)
    assert len(kept) == 3
    assert {meta.event_id for meta, _ in kept} == {start.id}
    assert {tuple(meta.window.shape) for meta, _ in kept if meta.window} == {(2, 8)}
    assert kept[0][0].window is not None
    assert kept[0][0].window.channels == ["flow", "pressure"]
    # The debounce starts the event on the third high window: its neighbours are high too.
    threshold = pipeline.slot.current().threshold
    assert threshold is not None
    for meta, _ in kept:
        assert meta.label == ("anomaly" if meta.score >= threshold else "normal")
    assert pipeline.status().samples_kept == {"event": 3}
