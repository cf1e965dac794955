"""The synthetic street scene and the shipped scene detector, measured with the edge's code
(its letterbox, decode and ONNX Runtime session; no torch needed)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from edge_agent.inference.postprocess import letterbox, pairwise_iou
from edge_agent.inference.runtime import Runtime
from edge_agent.sources.synthetic_scene import (
    CLASSES,
    Actor,
    SyntheticScene,
    random_actors,
)
from models import MANIFEST_NAME, ModelCard, default_dir, detector, load_manifest
from models.scenes import labelled_frames
from shared.digests import sha256_file

# Not one of the build's seeds (11 train, 22 held out): streets the model never saw.
FRESH_SEED = 777


@pytest.fixture(scope="module")
def entry() -> ModelCard:
    (found,) = [e for e in load_manifest(default_dir() / MANIFEST_NAME) if e.name == detector.NAME]
    return found


@pytest.fixture(scope="module")
def run(entry: ModelCard) -> detector.Runner:
    return Runtime(entry.path(default_dir())).run


# -- the model --------------------------------------------------------------------------


def test_committed_detector_matches_its_manifest(entry: ModelCard) -> None:
    path = entry.path(default_dir())
    assert sha256_file(path) == entry.sha256
    assert path.stat().st_size == entry.size
    assert entry.task == "detection"
    assert entry.labels == list(CLASSES)
    assert entry.normal_label is None
    assert [(t.name, t.shape) for t in entry.inputs] == [("images", [1, 3, 320, 320])]
    assert [(t.name, t.shape) for t in entry.outputs] == [("output0", [1, 6, detector.ANCHORS])]


def test_output_is_yolov8_layout(run: detector.Runner) -> None:
    scene = SyntheticScene(seed=FRESH_SEED)
    tensor, _ = letterbox(scene.render(0.0), (detector.INPUT_SIZE, detector.INPUT_SIZE))
    output = run(tensor)
    assert output.shape == (1, 4 + len(CLASSES), detector.ANCHORS)
    assert output.dtype == np.float32
    scores = output[0, 4:]
    assert scores.min() >= 0.0
    assert scores.max() <= 1.0
    # Box centres lie on the 320x320 input, sizes are positive.
    assert np.all((output[0, :2] > -32) & (output[0, :2] < 352))
    assert np.all(output[0, 2:4] > 0)


def test_finds_the_cars_and_people_of_fresh_streets(run: detector.Runner) -> None:
    tally = detector.Tally.empty()
    for frame in labelled_frames(FRESH_SEED, scenes=24, frames_per_scene=3):
        tally.add(detector.detect(run, frame.image), frame)
    metrics = tally.metrics()
    for label in CLASSES:
        scores = metrics.per_label[label]
        assert scores.support >= 40, label  # enough objects for the bounds to mean something
        assert scores.recall >= 0.8, (label, scores)
        assert scores.precision >= 0.8, (label, scores)


@pytest.mark.parametrize(("seed", "gain", "noise"), [(1, 1.0, 2.0), (2, 0.6, 6.0), (3, 1.3, 1.0)])
def test_an_empty_street_gives_no_confident_detection(
    run: detector.Runner, seed: int, gain: float, noise: float
) -> None:
    scene = SyntheticScene(seed=seed, noise_std=noise, lighting=[(-1.0, gain)])
    for t_s in (0.0, 1.5, 7.25):
        assert detector.detect(run, scene.render(t_s), score_threshold=0.5) == []


def test_detected_box_lands_on_the_object_in_frame_pixels(run: detector.Runner) -> None:
    car = Actor("car", 0.0, (300.0, 280.0), (0.0, 0.0), (100.0, 50.0))
    person = Actor("person", 0.0, (500.0, 110.0), (0.0, 0.0), (24.0, 70.0))
    scene = SyntheticScene(seed=FRESH_SEED, actors=[car, person])
    found = detector.detect(run, scene.render(1.0))
    assert sorted(d.label for d in found) == ["car", "person"]
    for d in found:
        truth = next(b for b in scene.truth(1.0) if b.label == d.label)
        box = np.array([[truth.x1, truth.y1, truth.x2, truth.y2]])
        assert pairwise_iou(np.array([d.box]), box)[0, 0] >= 0.6


# -- what an agent reports (crafted outputs) ------------------------------------------


def crafted(rows: list[list[float]]) -> detector.Runner:
    """A stand-in model whose output has these anchors (cx, cy, w, h, car, person)."""
    output = np.zeros((1, 4 + len(CLASSES), detector.ANCHORS), np.float32)
    output[0, :, : len(rows)] = np.array(rows, np.float32).T

    def run(images: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        assert images.shape == (1, 3, detector.INPUT_SIZE, detector.INPUT_SIZE)
        return output

    return run


def test_detect_keeps_the_best_of_overlapping_boxes_per_class() -> None:
    run = crafted(
        [
            [100, 100, 40, 20, 0.9, 0.1],
            [102, 101, 40, 20, 0.8, 0.1],  # same car, lower score: suppressed
            [101, 100, 10, 30, 0.1, 0.7],  # a person on the car: another class, kept
            [250, 200, 40, 20, 0.3, 0.0],  # below the card's threshold
        ]
    )
    found = detector.detect(run, np.zeros((320, 320, 3), np.uint8))
    assert [(d.label, round(d.score, 2)) for d in found] == [("car", 0.9), ("person", 0.7)]
    assert found[0].box == (80.0, 90.0, 120.0, 110.0)


def test_detect_maps_boxes_back_to_the_trained_camera_frame() -> None:
    """The 640 x 360 camera fills rows 70-250 of the 320 x 320 input, at half scale."""
    frame = np.zeros((360, 640, 3), np.uint8)
    (found,) = detector.detect(crafted([[160, 160, 320, 180, 0.9, 0.0]]), frame)
    assert found.box == (0.0, 0.0, 640.0, 360.0)
    (half,) = detector.detect(crafted([[80, 100, 40, 20, 0.0, 0.8]]), frame)
    assert half.box == (120.0, 40.0, 200.0, 80.0)


# -- the synthetic scene ----------------------------------------------------------------


def test_scene_is_deterministic_for_seed_and_time() -> None:
    actors = random_actors(np.random.default_rng(4), 8, width=640, height=360, duration_s=10.0)
    first, second = (SyntheticScene(seed=3, actors=actors) for _ in range(2))
    frame = first.render(4.2)
    assert frame.shape == (360, 640, 3)
    assert frame.dtype == np.uint8
    np.testing.assert_array_equal(frame, second.render(4.2))
    assert first.truth(4.2) == second.truth(4.2)
    assert not np.array_equal(frame, first.render(4.3))  # fresh sensor noise every frame
    assert not np.array_equal(frame, SyntheticScene(seed=4, actors=actors).render(4.2))


def test_truth_follows_velocity_and_pauses() -> None:
    walker = Actor("person", 1.0, (100.0, 200.0), (20.0, -5.0), (20.0, 60.0), pauses=((3.0, 2.0),))
    scene = SyntheticScene(actors=[walker])
    assert scene.truth(0.5) == []  # not entered yet

    def centre(t_s: float) -> tuple[float, float]:
        (box,) = scene.truth(t_s)
        assert (box.label, box.actor) == ("person", 0)
        return ((box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2)

    assert centre(1.0) == pytest.approx((100.0, 200.0))
    assert centre(2.0) == pytest.approx((120.0, 195.0))
    assert centre(3.0) == pytest.approx((140.0, 190.0))  # stops here ...
    assert centre(4.5) == pytest.approx((140.0, 190.0))
    assert centre(5.0) == pytest.approx((140.0, 190.0))  # ... for 2 s
    assert centre(6.0) == pytest.approx((160.0, 185.0))


def test_truth_is_clipped_and_ends_at_exit_or_edge() -> None:
    car = Actor("car", 0.0, (620.0, 300.0), (100.0, 0.0), (80.0, 40.0))
    parked = Actor("car", 0.0, (200.0, 300.0), (0.0, 0.0), (80.0, 40.0), exit_s=2.0)
    scene = SyntheticScene(actors=[car, parked])
    first = scene.truth(0.0)
    assert [(b.actor, b.x1, b.x2) for b in first] == [(0, 580.0, 640.0), (1, 160.0, 240.0)]
    assert [b.actor for b in scene.truth(0.5)] == [0, 1]
    assert [b.actor for b in scene.truth(2.0)] == []  # left the frame at 0.6 s; parked exits


def test_lighting_ramps_brightness() -> None:
    scene = SyntheticScene(seed=2, noise_std=0.0, lighting=[(2.0, 0.5)])
    before, during, after = (float(scene.render(t).mean()) for t in (1.0, 2.5, 4.0))
    assert scene.gain(1.0) == 1.0
    assert scene.gain(2.5) == pytest.approx(0.75)
    assert after == pytest.approx(before * 0.5, rel=0.02)
    assert after < during < before


def test_actors_are_drawn_where_the_truth_says() -> None:
    car = Actor("car", 0.0, (320.0, 280.0), (0.0, 0.0), (110.0, 50.0))
    empty = SyntheticScene(seed=6, noise_std=0.0).render(0.0).astype(int)
    frame = SyntheticScene(seed=6, noise_std=0.0, actors=[car]).render(0.0).astype(int)
    changed = np.abs(frame - empty).sum(axis=2) > 30
    ys, xs = np.nonzero(changed)
    (box,) = SyntheticScene(actors=[car]).truth(0.0)
    assert (xs.min(), ys.min()) >= (int(box.x1) - 1, int(box.y1) - 1)
    assert (xs.max(), ys.max()) <= (int(box.x2) + 1, int(box.y2) + 1)
    assert changed.sum() > 0.6 * box.width * box.height


def test_random_actors_are_plausible() -> None:
    actors = random_actors(np.random.default_rng(0), 200, width=640, height=360, duration_s=30.0)
    cars = [a for a in actors if a.label == "car"]
    people = [a for a in actors if a.label == "person"]
    assert len(cars) > 50
    assert len(people) > 50
    assert all(40 <= a.size[0] <= 120 and a.size[0] > a.size[1] for a in cars)
    assert all(a.size[1] > 2 * a.size[0] for a in people)
    assert all(0 <= a.enter_s <= 30 for a in actors)
    with pytest.raises(ValueError, match="unknown label"):
        Actor("bicycle", 0.0, (0.0, 0.0), (1.0, 0.0), (10.0, 10.0))
