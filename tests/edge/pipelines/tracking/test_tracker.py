"""The IoU tracker: ids stay with their objects, classes apart, tracks end after max_age."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.inference.postprocess import Detection, box_iou, pairwise_iou
from edge_agent.pipelines.tracking.tracker import IouTracker
from edge_agent.sources.synthetic_scene import Actor, SyntheticScene
from tests.edge.pipelines.tracking.truth import FPS, detections_at


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


def test_classes_are_tracked_apart() -> None:
    tracker = IouTracker(min_hits=1)
    box = (10.0, 10.0, 50.0, 50.0)
    first = tracker.update([Detection("car", 0.9, box), Detection("person", 0.9, box)], 0, 0.0)
    second = tracker.update([Detection("person", 0.9, box), Detection("car", 0.9, box)], 1, 0.1)
    by_label = {t.label: t.id for t in first.matched}
    assert {t.label: t.id for t in second.matched} == by_label
    assert len(set(by_label.values())) == 2


def test_a_class_flicker_keeps_its_track_and_a_duplicate_is_dropped() -> None:
    tracker = IouTracker(min_hits=2)
    car = (100.0, 100.0, 180.0, 140.0)
    moved = (104.0, 100.0, 184.0, 140.0)
    tracker.update([Detection("car", 0.9, car)], 0, 0.0)
    confirmed = tracker.update([Detection("car", 0.9, moved)], 1, 0.1)
    (track,) = confirmed.started
    # Read as a person where the car is predicted: the car's track takes it, keeps "car".
    flicker = tracker.update([Detection("person", 0.6, (108.0, 100.0, 188.0, 140.0))], 2, 0.2)
    assert [(t.id, t.label) for t in flicker.matched] == [(track.id, "car")]
    # The car seen, and a person box on top of it: a duplicate, not a new object.
    both = [Detection("car", 0.9, (112.0, 100.0, 192.0, 140.0)), Detection("person", 0.5, car)]
    step = tracker.update(both, 3, 0.3)
    assert [t.id for t in step.matched] == [track.id]
    assert [t.id for t in tracker.tracks] == [track.id]


def test_a_track_survives_max_age_missed_frames_and_ends_after() -> None:
    tracker = IouTracker(min_hits=1, max_age=3)
    box = (10.0, 10.0, 50.0, 50.0)
    tracker.update([Detection("car", 0.9, box)], 0, 0.0)
    for seq in (1, 2, 3):
        assert tracker.update([], seq, 0.0).ended == []
    assert [t.id for t in tracker.update([], 4, 0.0).ended] == [1]


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
