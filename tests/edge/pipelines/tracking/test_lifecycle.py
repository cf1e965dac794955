"""Tracking and the object lifecycle, driven by the synthetic scene's ground-truth boxes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edge_agent.inference.postprocess import Detection, box_iou, pairwise_iou
from edge_agent.pipelines.tracking.tracker import (
    CountingLine,
    CountingLineConfig,
    IouTracker,
    LifecycleStep,
    ObjectLifecycle,
    TrackingConfig,
    ZoneConfig,
    point_in_polygon,
)
from edge_agent.sources.synthetic_scene import Actor, SyntheticScene

FPS = 10.0
T0 = 1_700_000_000.0


def detections_at(
    scene: SyntheticScene, t_s: float, rng: np.random.Generator | None = None
) -> list[Detection]:
    """The scene's truth as a detector would report it: scores ~0.85, boxes jittering ±1 px."""
    out = []
    for box in scene.truth(t_s):
        jitter = rng.uniform(-1.0, 1.0, size=4) if rng is not None else np.zeros(4)
        score = 0.85 + (float(rng.uniform(-0.03, 0.03)) if rng is not None else 0.0)
        coords = (box.x1 + jitter[0], box.y1 + jitter[1], box.x2 + jitter[2], box.y2 + jitter[3])
        out.append(Detection(box.label, score, coords))
    return out


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


def test_ids_stay_with_their_objects_when_two_pass_each_other() -> None:
    actors = [
        Actor("person", 0.0, (60.0, 150.0), (60.0, 0.0), (24.0, 60.0)),
        Actor("person", 0.0, (580.0, 172.0), (-60.0, 0.0), (24.0, 60.0)),
    ]
    scene = SyntheticScene(seed=4, actors=actors)
    tracker = IouTracker(min_hits=2)
    ids: dict[int, set[int]] = {0: set(), 1: set()}
    overlapped = False
    for seq in range(int(8.0 * FPS)):
        truth = scene.truth(seq / FPS)
        if len(truth) == 2:
            a, b = truth
            overlapped |= box_iou((a.x1, a.y1, a.x2, a.y2), (b.x1, b.y1, b.x2, b.y2)) > 0.1
        step = tracker.update(detections_at(scene, seq / FPS), seq, seq / FPS)
        for track in step.matched:
            actor = next(t.actor for t in truth if (t.x1, t.y1, t.x2, t.y2) == track.box)
            ids[actor].add(track.id)
    assert overlapped  # the test is about boxes that do overlap while passing
    assert len(ids[0]) == 1
    assert len(ids[1]) == 1
    assert ids[0] != ids[1]


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


def test_classes_are_tracked_apart() -> None:
    tracker = IouTracker(min_hits=1)
    box = (10.0, 10.0, 50.0, 50.0)
    first = tracker.update([Detection("car", 0.9, box), Detection("person", 0.9, box)], 0, 0.0)
    second = tracker.update([Detection("person", 0.9, box), Detection("car", 0.9, box)], 1, 0.1)
    by_label = {t.label: t.id for t in first.matched}
    assert {t.label: t.id for t in second.matched} == by_label
    assert len(set(by_label.values())) == 2


def test_a_track_survives_max_age_missed_frames_and_ends_after() -> None:
    tracker = IouTracker(min_hits=1, max_age=3)
    box = (10.0, 10.0, 50.0, 50.0)
    tracker.update([Detection("car", 0.9, box)], 0, 0.0)
    for seq in (1, 2, 3):
        assert tracker.update([], seq, 0.0).ended == []
    assert [t.id for t in tracker.update([], 4, 0.0).ended] == [1]


def test_config_refuses_unknown_keys_and_bad_geometry() -> None:
    with pytest.raises(ValidationError, match="extra"):
        TrackingConfig.model_validate({"max_ages": 3})
    with pytest.raises(ValidationError, match="at least 3 points"):
        ZoneConfig.model_validate({"name": "z", "polygon": [[0, 0], [1, 1]]})
    with pytest.raises(ValidationError, match="two distinct points"):
        CountingLineConfig.model_validate({"name": "l", "a": [1, 2], "b": [1, 2]})


# -- properties ---------------------------------------------------------------------------

coord = st.floats(-500, 500, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    a=st.tuples(coord, coord),
    b=st.tuples(coord, coord),
    t=st.floats(0.02, 0.98),
    angle=st.floats(0.2, np.pi - 0.2),
    reach=st.floats(5, 300),
    steps=st.integers(2, 12),
)
def test_a_straight_path_across_the_segment_is_counted_once_in_its_direction(
    a: tuple[float, float],
    b: tuple[float, float],
    t: float,
    angle: float,
    reach: float,
    steps: int,
) -> None:
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = float(np.hypot(dx, dy))
    assume(length > 10)
    ux, uy = dx / length, dy / length
    # A direction at `angle` from the line (never parallel to it), through a point on it.
    cx, cy = a[0] + t * dx, a[1] + t * dy
    vx = ux * np.cos(angle) - uy * np.sin(angle)
    vy = ux * np.sin(angle) + uy * np.cos(angle)
    start = (cx - reach * vx, cy - reach * vy)
    path = [
        (start[0] + 2 * reach * vx * k / steps, start[1] + 2 * reach * vy * k / steps)
        for k in range(steps + 1)
    ]
    line = CountingLine(CountingLineConfig(name="l", a=a, b=b))
    got = [d for p in path if (d := line.update(7, "car", p)) is not None]
    # Rotating the line's direction clockwise (in image coordinates) points to its right.
    expected = "left_to_right" if np.sin(angle) > 0 else "right_to_left"
    assert got == [expected]
    # Walking back crosses the other way once; forth again is not counted a second time.
    again = [d for p in path[::-1] + path if (d := line.update(7, "car", p)) is not None]
    assert again == [next(d for d in ("left_to_right", "right_to_left") if d != expected)]


@settings(max_examples=300, deadline=None)
@given(
    a=st.tuples(coord, coord),
    b=st.tuples(coord, coord),
    t=st.one_of(st.floats(-3, -0.05), st.floats(1.05, 4)),
    angle=st.floats(0.2, np.pi - 0.2),
)
def test_a_path_crossing_beyond_the_endpoints_is_not_counted(
    a: tuple[float, float], b: tuple[float, float], t: float, angle: float
) -> None:
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = float(np.hypot(dx, dy))
    assume(length > 10)
    ux, uy = dx / length, dy / length
    cx, cy = a[0] + t * dx, a[1] + t * dy
    vx = ux * np.cos(angle) - uy * np.sin(angle)
    vy = ux * np.sin(angle) + uy * np.cos(angle)
    line = CountingLine(CountingLineConfig(name="l", a=a, b=b))
    for k in range(-3, 4):
        assert line.update(1, "car", (cx + 10 * k * vx, cy + 10 * k * vy)) is None


@settings(max_examples=200, deadline=None)
@given(
    points=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 400)), min_size=3, max_size=12),
    probe=st.tuples(st.floats(0, 400), st.floats(0, 400)),
)
def test_point_in_polygon_agrees_with_opencv_on_convex_polygons(
    points: list[tuple[int, int]], probe: tuple[float, float]
) -> None:
    hull = cv2.convexHull(np.asarray(points, dtype=np.float32))
    assume(len(hull) >= 3 and cv2.contourArea(hull) > 1)
    distance = cv2.pointPolygonTest(hull, probe, True)
    assume(abs(distance) > 1e-3)
    polygon = [(float(x), float(y)) for x, y in hull[:, 0]]
    assert point_in_polygon(probe, polygon) == (distance > 0)


box_strategy = st.tuples(
    st.floats(0, 300), st.floats(0, 300), st.floats(1, 100), st.floats(1, 100)
).map(lambda r: (r[0], r[1], r[0] + r[2], r[1] + r[3]))


@settings(max_examples=200, deadline=None)
@given(
    a=st.lists(box_strategy, min_size=1, max_size=6),
    b=st.lists(box_strategy, min_size=1, max_size=6),
)
def test_pairwise_iou_matches_the_iou_of_each_pair(
    a: list[tuple[float, float, float, float]], b: list[tuple[float, float, float, float]]
) -> None:
    matrix = pairwise_iou(np.asarray(a), np.asarray(b))
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            assert matrix[i, j] == pytest.approx(box_iou(x, y), abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(
    cells=st.sets(st.tuples(st.integers(0, 5), st.integers(0, 3)), min_size=1, max_size=10),
    frames=st.integers(3, 15),
)
def test_static_separate_objects_keep_one_id_each(cells: set[tuple[int, int]], frames: int) -> None:
    boxes = [(x * 100.0, y * 100.0, x * 100.0 + 60.0, y * 100.0 + 60.0) for x, y in sorted(cells)]
    tracker = IouTracker(min_hits=2)
    seen: dict[tuple[float, float, float, float], set[int]] = {b: set() for b in boxes}
    for seq in range(frames):
        step = tracker.update([Detection("car", 0.9, b) for b in boxes], seq, float(seq))
        for track in step.matched:
            seen[track.box].add(track.id)
    assert all(len(ids) == 1 for ids in seen.values())
    assert len({i for ids in seen.values() for i in ids}) == len(boxes)
    assert all(t.confirmed for t in tracker.tracks)
