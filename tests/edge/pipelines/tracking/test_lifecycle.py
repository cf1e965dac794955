"""The object lifecycle, driven by the synthetic scene's ground-truth boxes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
from pydantic import ValidationError

from edge_agent.inference.postprocess import Detection
from edge_agent.pipelines.tracking.geometry import CountingLineConfig, ZoneConfig
from edge_agent.pipelines.tracking.lifecycle import LifecycleStep, ObjectLifecycle, TrackingConfig
from edge_agent.sources.synthetic_scene import Actor, SyntheticScene
from tests.edge.pipelines.tracking.truth import FPS, T0, detections_at


def run(
    lifecycle: ObjectLifecycle, scene: SyntheticScene, seconds: float, *, jitter: bool = True
) -> Iterator[tuple[int, float, LifecycleStep]]:
    rng = np.random.default_rng(0) if jitter else None
    for seq in range(int(seconds * FPS)):
        t_s = seq / FPS
        yield seq, t_s, lifecycle.step(detections_at(scene, t_s, rng), seq, T0 + t_s)


def collect(steps: Iterator[tuple[int, float, LifecycleStep]]) -> LifecycleStep:
    total = LifecycleStep()
    for _, _, step in steps:
        total.objects += step.objects
        total.zones += step.zones
        total.crossings += step.crossings
        total.snapshots += step.snapshots
    return total


def traffic() -> list[Actor]:
    """Five cars in two lanes, three driving right and two left, some at the same time."""
    return [
        Actor("car", 0.5, (-50.0, 230.0), (110.0, 0.0), (90.0, 40.0)),
        Actor("car", 2.0, (-40.0, 230.0), (140.0, 0.0), (70.0, 34.0)),
        Actor("car", 1.0, (690.0, 300.0), (-120.0, 0.0), (100.0, 48.0)),
        Actor("car", 6.0, (-50.0, 300.0), (100.0, 0.0), (80.0, 40.0)),
        Actor("car", 5.0, (680.0, 230.0), (-90.0, 3.0), (60.0, 30.0)),
    ]


def test_k_objects_crossing_a_line_give_k_starts_k_ends_and_k_crossings() -> None:
    scene = SyntheticScene(seed=1, actors=traffic())
    line = CountingLineConfig(name="gate", a=(320.0, 360.0), b=(320.0, 150.0))
    lifecycle = ObjectLifecycle(TrackingConfig(lines=[line]), "street")
    total = collect(run(lifecycle, scene, 20.0))
    states = Counter(d.state for d in total.objects)
    assert states["start"] == 5
    assert states["end"] == 5
    assert len(total.crossings) == 5
    assert lifecycle.lines[0].counts == {"left_to_right": 3, "right_to_left": 2}
    assert sorted(c.count for c in total.crossings if c.direction == "left_to_right") == [1, 2, 3]
    # Every crossing belongs to a track that started, and each track crossed once.
    started = {d.track_id for d in total.objects if d.state == "start"}
    assert {c.track_id for c in total.crossings} == started


def test_a_line_only_counts_crossings_between_its_endpoints() -> None:
    scene = SyntheticScene(seed=1, actors=traffic())
    short = CountingLineConfig(name="lane2", a=(320.0, 360.0), b=(320.0, 270.0))
    lifecycle = ObjectLifecycle(TrackingConfig(lines=[short]), "street")
    collect(run(lifecycle, scene, 20.0))
    # Only the two cars in the lower lane (bottom edge ~320 px) reach it.
    assert lifecycle.lines[0].counts == {"left_to_right": 1, "right_to_left": 1}


def test_an_object_stopped_for_60_s_is_one_start_no_updates_while_stopped_one_end() -> None:
    car = Actor("car", 1.0, (80.0, 260.0), (60.0, 0.0), (90.0, 40.0), pauses=((4.0, 60.0),))
    scene = SyntheticScene(seed=2, actors=[car])
    lifecycle = ObjectLifecycle(TrackingConfig(), "street")
    total = collect(run(lifecycle, scene, 80.0))
    states = [d.state for d in total.objects]
    assert states.count("start") == 1
    assert states.count("end") == 1
    assert states[0] == "start"
    assert states[-1] == "end"
    stopped = [d for d in total.objects if 4.5 <= d.ts - T0 < 64.0]
    assert stopped == []
    assert states.count("update") >= 2  # it does report while driving
    end = total.objects[-1]
    assert end.first_seen == pytest.approx(T0 + 1.0)
    assert end.last_seen - end.first_seen > 60.0


def test_zone_enter_and_exit_with_occupancy_and_label_filter() -> None:
    actors = [
        Actor("car", 0.0, (-40.0, 260.0), (120.0, 0.0), (80.0, 40.0)),
        Actor("person", 0.0, (-10.0, 150.0), (100.0, 0.0), (20.0, 50.0)),
    ]
    scene = SyntheticScene(seed=5, actors=actors)
    zone = ZoneConfig(
        name="bay", polygon=[(200.0, 0.0), (400.0, 0.0), (400.0, 360.0), (200.0, 360.0)]
    )
    cars_only = ZoneConfig(name="cars", polygon=zone.polygon, labels=["car"])
    lifecycle = ObjectLifecycle(TrackingConfig(zones=[zone, cars_only]), "street")
    total = collect(run(lifecycle, scene, 10.0))
    bay = [(z.state, z.label) for z in total.zones if z.zone == "bay"]
    assert sorted(bay) == [
        ("enter", "car"),
        ("enter", "person"),
        ("exit", "car"),
        ("exit", "person"),
    ]
    assert [(z.state, z.label) for z in total.zones if z.zone == "cars"] == [
        ("enter", "car"),
        ("exit", "car"),
    ]
    assert max(z.occupancy for z in total.zones if z.zone == "bay") == 2
    assert lifecycle.zones[0].occupancy == 0


def test_a_better_score_replaces_the_thumbnail_and_is_an_update() -> None:
    lifecycle = ObjectLifecycle(TrackingConfig(min_hits=2), "cam")
    box = (100.0, 100.0, 180.0, 140.0)
    scores = [0.5, 0.55, 0.57, 0.8, 0.81]
    steps = [lifecycle.step([Detection("car", s, box)], i, T0 + i) for i, s in enumerate(scores)]
    assert [s.objects[0].state if s.objects else None for s in steps] == [
        None,
        "start",
        None,
        "update",
        None,
    ]
    assert [[p.path for p in s.snapshots] for s in steps] == [
        [],
        ["cam/1/1.jpg"],
        [],
        ["cam/1/3.jpg"],
        [],
    ]
    update = steps[3].objects[0]
    assert update.thumbnail == "cam/1/3.jpg"
    assert update.score == pytest.approx(0.8)
    end = lifecycle.close(5, T0 + 5).objects
    assert [(d.state, d.thumbnail, d.score) for d in end] == [("end", "cam/1/3.jpg", 0.81)]


def test_a_fast_object_crossing_before_it_is_confirmed_still_counts_and_noise_never_does() -> None:
    line = CountingLineConfig(name="l", a=(100.0, 200.0), b=(100.0, 0.0))
    lifecycle = ObjectLifecycle(TrackingConfig(min_hits=3, lines=[line]), "cam")
    boxes = [(70.0 + 12 * i, 100.0, 110.0 + 12 * i, 140.0) for i in range(6)]  # x centre 90, 102..
    steps = [lifecycle.step([Detection("car", 0.9, b)], i, T0 + i) for i, b in enumerate(boxes)]
    assert [d.state for d in steps[2].objects] == ["start"]
    crossings = [c for s in steps for c in s.crossings]
    assert [(c.direction, c.seq, c.count) for c in crossings] == [("left_to_right", 1, 1)]
    # A two-frame blip across the line is dropped before it starts: it never counts.
    blip = ObjectLifecycle(TrackingConfig(min_hits=3, lines=[line]), "cam")
    for i, b in enumerate([(76.0, 100.0, 116.0, 140.0), (84.0, 100.0, 124.0, 140.0)]):
        blip.step([Detection("car", 0.9, b)], i, T0 + i)
    assert blip.step([], 2, T0 + 2).crossings == []
    assert blip.lines[0].counts == {"left_to_right": 0, "right_to_left": 0}


def test_config_refuses_unknown_keys_and_bad_geometry() -> None:
    with pytest.raises(ValidationError, match="extra"):
        TrackingConfig.model_validate({"max_ages": 3})
    with pytest.raises(ValidationError, match="at least 3 points"):
        ZoneConfig.model_validate({"name": "z", "polygon": [[0, 0], [1, 1]]})
    with pytest.raises(ValidationError, match="two distinct points"):
        CountingLineConfig.model_validate({"name": "l", "a": [1, 2], "b": [1, 2]})
