"""Camera pipelines with the shipped detector on real ONNX Runtime: what an operator sees.

Scenes come from the synthetic street (known ground truth); the pipeline is the agent's
own ``VisionPipeline`` with its motion gate, detector, tracker and filters.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import models
from edge_agent.delivery.spool import Spool
from edge_agent.inference.slot import load_slot
from edge_agent.pipelines.config import PipelineConfig
from edge_agent.pipelines.vision import VisionPipeline
from edge_agent.sources.synthetic_scene import SyntheticScene
from shared.messages import Event
from shared.samples import SampleMeta
from tests.edge.vision_fixtures import scene_frames, write_fixture_pair

pytestmark = pytest.mark.integration

MANIFEST = Path(models.__file__).resolve().parent / "manifest.json"
FPS = 10
STOP_LINE = {"name": "stop-line", "a": [320, 0], "b": [320, 360]}
CROSSING_ACTORS: list[dict[str, Any]] = [
    {"label": "car", "enter_s": 1, "start_xy": [-50, 220], "velocity": [80, 0], "size": [90, 45]},
    {"label": "person", "enter_s": 12, "start_xy": [660, 140], "velocity": [-50, 0],
     "size": [22, 56]},
    {"label": "car", "enter_s": 28, "start_xy": [690, 260], "velocity": [-90, 0],
     "size": [100, 50]},
    {"label": "person", "enter_s": 40, "start_xy": [-20, 170], "velocity": [45, 0],
     "size": [24, 60]},
]  # fmt: skip


def pipeline(
    source: dict[str, Any], spool: Spool | None = None, privacy: str = "never", **vision: Any
) -> VisionPipeline:
    config = PipelineConfig.model_validate(
        {
            "name": "intersection",
            "source": source,
            "model": {"name": "scene-detector", "manifest": str(MANIFEST)},
            "vision": {"tracking": {"lines": [STOP_LINE]}, **vision},
            "privacy": {"images": privacy, "blur": ["person"]},
        }
    )
    slot = load_slot(config.model, config.runtime)
    return VisionPipeline(config, slot, spool=spool, agent_id="gw-1" if spool else None)


def run(p: VisionPipeline) -> list[Event]:
    events: list[Event] = []
    for sample in p.source.samples(threading.Event()):
        events += p.process_sample(sample)
    return events + p.close()


def scene(actors: list[dict[str, Any]], duration_s: float, **more: Any) -> dict[str, Any]:
    return {"type": "synthetic_scene", "fps": FPS, "speed": 0, "seed": 3,
            "duration_s": duration_s, "actors": actors, **more}  # fmt: skip


def objects(events: list[Event], state: str) -> list[Event]:
    return [e for e in events if e.kind == "object" and e.state == state]


def test_k_objects_crossing_a_line_give_k_starts_k_ends_and_a_count_of_k(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30, max_files=10_000, queue_size=10_000)
    p = pipeline(scene(CROSSING_ACTORS, 60), spool, "crops", thumbnails=True)
    events = run(p)
    spool.start()
    spool.stop()
    k = len(CROSSING_ACTORS)
    starts, ends = objects(events, "start"), objects(events, "end")
    crossings = [e for e in events if e.kind == "line_crossing"]
    assert [e.label for e in starts] == [a["label"] for a in CROSSING_ACTORS]
    assert len(ends) == k
    assert {e.attributes["track_id"] for e in starts} == {e.attributes["track_id"] for e in ends}
    assert len(crossings) == k
    per_direction: dict[Any, int] = {}
    for crossing in crossings:
        per_direction[crossing.attributes["direction"]] = int(crossing.attributes["count"])
    assert sum(per_direction.values()) == k
    # Each object's best crop is kept as its thumbnail: a sample in the spool (same quota),
    # a JPEG of a crop with people blurred.
    kept = {entry.id: entry for entry in spool.oldest(10_000)}
    for end in ends:
        thumbnail = end.attributes.get("thumbnail")
        assert isinstance(thumbnail, str)
        meta = SampleMeta.model_validate_json(kept[thumbnail].read()[0])
        assert meta.image is not None
        assert (meta.kind, meta.reason, meta.image.region) == ("image", "event", "crop")
        assert meta.image.detections[0].label == end.label
        assert meta.privacy.blur == ["person"]
    # Where no pixels may leave (the default for cameras), there are no thumbnails.
    never = pipeline(scene(CROSSING_ACTORS[:1], 10), spool, thumbnails=True)
    assert all("thumbnail" not in e.attributes for e in run(never))


def test_an_object_that_stops_for_a_minute_is_one_event_not_one_per_frame() -> None:
    parked = {"label": "car", "enter_s": 1, "start_xy": [-50, 220], "velocity": [80, 0],
              "size": [90, 45], "pauses": [[4, 60]]}  # fmt: skip
    p = pipeline(scene([parked], 80))
    events = run(p)
    assert len(objects(events, "start")) == 1
    assert len(objects(events, "end")) == 1
    frames_stopped = 60 * FPS
    assert len(objects(events, "update")) <= 3 < frames_stopped
    # Nothing moved for a minute: the gate spared most inferences.
    assert p.counters.gated >= 0.8 * frames_stopped


def test_static_scene_with_noise_and_a_lighting_change_gates_90_percent() -> None:
    p = pipeline(
        scene(
            [], 30, noise_std=3.0, lighting=[{"at_s": 10, "gain": 1.4}, {"at_s": 20, "gain": 0.8}]
        )
    )
    events = run(p)
    assert events == []
    assert p.counters.samples_in == 30 * FPS
    assert p.counters.gated >= 0.9 * p.counters.samples_in


@pytest.mark.slow  # about 10 s: in make test's second phase
def test_video_file_and_image_folder_give_the_same_events(tmp_path: Path) -> None:
    actors = CROSSING_ACTORS[:2]
    frames = scene_frames(SyntheticScene(actors=_actors(actors), seed=3), fps=FPS, seconds=25)
    video, folder = write_fixture_pair(frames, tmp_path, fps=FPS)
    from_video = run(pipeline({"type": "opencv", "path": str(video), "speed": 0}))
    from_folder = run(pipeline({"type": "image_folder", "path": str(folder), "speed": 0,
                                "fps": FPS}))  # fmt: skip

    def shape(events: list[Event]) -> list[tuple[str, str, str, int]]:
        return [(e.kind, e.state, e.label, e.seq) for e in events]

    assert len(objects(from_video, "start")) == 2
    assert shape(from_video) == shape(from_folder)


def _actors(specs: list[dict[str, Any]]) -> list[Any]:
    from edge_agent.sources.synthetic_scene import Actor

    return [
        Actor(
            label=a["label"], enter_s=a["enter_s"], start_xy=tuple(a["start_xy"]),
            velocity=tuple(a["velocity"]), size=tuple(a["size"]),
        )
        for a in specs
    ]  # fmt: skip
