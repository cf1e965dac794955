"""Letterbox, YOLO decoding and NMS on crafted tensors with known answers; labels files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.inference.postprocess import (
    PAD_VALUE,
    Detection,
    Letterbox,
    Letterboxer,
    decode_yolo,
    letterbox,
    letterbox_geometry,
    nms,
    read_labels,
)
from shared.errors import ConfigError, ModelError

LABELS = ("car", "person")

# Anchors of a crafted [1, 6, N] head: cx, cy, w, h (model pixels), car score, person score.
# The frame is 640x360, so the 320x320 input holds it at scale 0.5 under 70 rows of padding.
ANCHORS = [
    (100, 150, 40, 20, 0.90, 0.05),  # car -> frame (160, 140, 240, 180)
    (102, 150, 40, 20, 0.80, 0.05),  # car, IoU 0.905 with the first: suppressed
    (100, 150, 40, 20, 0.10, 0.70),  # person on the same spot: kept, another class
    (250, 200, 20, 40, 0.50, 0.00),  # car -> frame (480, 220, 520, 300)
    (60, 100, 20, 20, 0.20, 0.10),  # below the score threshold
    (300, 240, 60, 20, 0.00, 0.60),  # person past the right edge -> clipped to x2 = 640
    (160, 20, 20, 20, 0.95, 0.00),  # wholly in the top padding: not in the frame
]
EXPECTED = [
    Detection("car", 0.90, (160.0, 140.0, 240.0, 180.0)),
    Detection("person", 0.70, (160.0, 140.0, 240.0, 180.0)),
    Detection("person", 0.60, (540.0, 320.0, 640.0, 360.0)),
    Detection("car", 0.50, (480.0, 220.0, 520.0, 300.0)),
]


def crafted_head() -> npt.NDArray[np.float32]:
    return np.asarray(ANCHORS, dtype=np.float32).T[np.newaxis]  # [1, 6, N]


def frame_letterbox() -> Letterbox:
    return letterbox_geometry((360, 640), (320, 320))


def assert_detections(got: list[Detection], expected: list[Detection]) -> None:
    assert [d.label for d in got] == [d.label for d in expected]
    for g, e in zip(got, expected, strict=True):
        assert g.score == pytest.approx(e.score, abs=1e-6)
        assert g.box == pytest.approx(e.box, abs=1e-4)


def test_letterbox_geometry_of_a_wide_frame_pads_top_and_bottom() -> None:
    assert frame_letterbox() == Letterbox(0.5, 0, 70, 640, 360)


def test_decode_yolo_gives_the_hand_computed_boxes() -> None:
    got = decode_yolo(crafted_head(), LABELS, frame_letterbox())
    assert_detections(got, EXPECTED)


def test_decode_yolo_reads_the_transposed_layout_the_same() -> None:
    transposed = np.ascontiguousarray(crafted_head().transpose(0, 2, 1))  # [1, N, 6]
    assert_detections(decode_yolo(transposed, LABELS, frame_letterbox()), EXPECTED)


def test_class_agnostic_nms_lets_the_car_suppress_the_person_on_it() -> None:
    got = decode_yolo(crafted_head(), LABELS, frame_letterbox(), class_agnostic=True)
    assert_detections(got, [EXPECTED[0], EXPECTED[2], EXPECTED[3]])


def test_decode_yolo_thresholds_and_caps() -> None:
    head, box = crafted_head(), frame_letterbox()
    assert decode_yolo(head, LABELS, box, score_threshold=0.99) == []
    assert_detections(decode_yolo(head, LABELS, box, max_detections=2), EXPECTED[:2])
    # A loose IoU threshold keeps the near-duplicate car too.
    assert len(decode_yolo(head, LABELS, box, iou_threshold=0.95)) == 5


def test_decode_yolo_unscales_with_horizontal_padding_on_a_portrait_frame() -> None:
    geometry = letterbox_geometry((640, 480), (320, 320))  # 480 wide, 640 high
    assert geometry == Letterbox(0.5, 40, 0, 480, 640)
    head = np.asarray([[[140.0], [100.0], [40.0], [20.0], [0.9], [0.0]]], dtype=np.float32)
    got = decode_yolo(head, LABELS, geometry)
    assert_detections(got, [Detection("car", 0.9, (160.0, 180.0, 240.0, 220.0))])


def test_decode_yolo_refuses_an_output_that_does_not_fit_the_labels() -> None:
    with pytest.raises(ModelError, match="does not fit 4 labels"):
        decode_yolo(crafted_head(), ("a", "b", "c", "d"), frame_letterbox())


def test_letterbox_tensor_is_rgb_over_255_with_grey_padding() -> None:
    frame = np.zeros((360, 640, 3), dtype=np.uint8)
    frame[..., 0] = 255  # pure blue in BGR
    tensor, geometry = letterbox(frame)
    assert tensor.shape == (1, 3, 320, 320)
    assert tensor.dtype == np.float32
    assert tensor.flags.c_contiguous
    assert geometry.pad_y == 70
    image = tensor[0, :, 70:250, :]
    assert np.all(image[2] == 1.0)  # blue is the last RGB channel
    assert np.all(image[:2] == 0.0)
    grey = np.float32(PAD_VALUE / 255)
    assert np.all(tensor[0, :, :70, :] == grey)
    assert np.all(tensor[0, :, 250:, :] == grey)


def test_letterboxer_reuses_its_buffer_and_follows_a_new_frame_size() -> None:
    boxer = Letterboxer((320, 320))
    wide = np.full((360, 640, 3), 200, dtype=np.uint8)
    first, _ = boxer(wide)
    tall = np.full((640, 480, 3), 10, dtype=np.uint8)
    second, geometry = boxer(tall)
    assert second is first
    assert geometry.pad_x == 40
    grey = np.float32(PAD_VALUE / 255)
    assert np.all(second[0, :, :, :40] == grey)
    assert np.all(second[0, :, :, 280:] == grey)
    assert np.allclose(second[0, :, :, 40:280], 10 / 255)


@settings(max_examples=200, deadline=None)
@given(
    h0=st.integers(16, 2000),
    w0=st.integers(16, 2000),
    fx=st.floats(0, 1),
    fy=st.floats(0, 1),
    fw=st.floats(0, 1),
    fh=st.floats(0, 1),
)
def test_letterbox_round_trip_maps_a_box_back_to_itself(
    h0: int, w0: int, fx: float, fy: float, fw: float, fh: float
) -> None:
    geometry = letterbox_geometry((h0, w0), (320, 320))
    x1, y1 = fx * w0, fy * h0
    x2, y2 = x1 + fw * (w0 - x1), y1 + fh * (h0 - y1)
    model = np.asarray([[x1, y1, x2, y2]]) * geometry.scale
    model[:, 0::2] += geometry.pad_x
    model[:, 1::2] += geometry.pad_y
    assert geometry.to_frame(model)[0] == pytest.approx((x1, y1, x2, y2), abs=1e-6)


# -- NMS ---------------------------------------------------------------------------------


def iou(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    """An independent, plain-Python IoU to check nms against."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


boxes_strategy = st.lists(
    st.tuples(
        st.floats(0, 100),
        st.floats(0, 100),
        st.floats(0.5, 60),
        st.floats(0.5, 60),
        st.floats(0, 1),
    ),
    min_size=1,
    max_size=40,
)


def as_arrays(
    rows: list[tuple[float, float, float, float, float]],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    data = np.asarray(rows, dtype=np.float64)
    boxes = np.stack(
        (data[:, 0], data[:, 1], data[:, 0] + data[:, 2], data[:, 1] + data[:, 3]), axis=1
    )
    return boxes, data[:, 4]


@settings(max_examples=300, deadline=None)
@given(rows=boxes_strategy, threshold=st.floats(0.05, 0.95))
def test_nms_kept_boxes_never_overlap_above_the_threshold(
    rows: list[tuple[float, float, float, float, float]], threshold: float
) -> None:
    boxes, scores = as_arrays(rows)
    kept = nms(boxes, scores, threshold).tolist()
    for n, i in enumerate(kept):
        for j in kept[n + 1 :]:
            assert iou(boxes[i], boxes[j]) <= threshold + 1e-12


@settings(max_examples=300, deadline=None)
@given(rows=boxes_strategy, threshold=st.floats(0.05, 0.95))
def test_nms_keeps_the_best_box_and_drops_only_what_a_better_one_covers(
    rows: list[tuple[float, float, float, float, float]], threshold: float
) -> None:
    boxes, scores = as_arrays(rows)
    kept = nms(boxes, scores, threshold).tolist()
    assert scores[kept[0]] == scores.max()
    assert int(np.argmax(scores)) in kept
    assert [scores[i] for i in kept] == sorted((scores[i] for i in kept), reverse=True)
    for j in set(range(len(rows))) - set(kept):
        assert any(
            scores[i] >= scores[j] and iou(boxes[i], boxes[j]) > threshold - 1e-12 for i in kept
        )


def reference_nms(
    boxes: npt.NDArray[np.float64], scores: npt.NDArray[np.float64], t: float
) -> list[int]:
    """The textbook greedy NMS in plain Python."""
    keep: list[int] = []
    for i in sorted(range(len(scores)), key=lambda k: (-scores[k], k)):
        if all(iou(boxes[i], boxes[j]) <= t for j in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("n", [50, 1500])  # one NMS path below 1024 candidates, one above
def test_nms_matches_the_textbook_greedy_algorithm(n: int) -> None:
    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 600, size=(n, 2))
    wh = rng.uniform(5, 80, size=(n, 2))
    boxes = np.concatenate((xy, xy + wh), axis=1)
    scores = rng.random(n)
    assert nms(boxes, scores, 0.45).tolist() == reference_nms(boxes, scores, 0.45)


def test_nms_of_nothing_is_nothing() -> None:
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


# -- labels ------------------------------------------------------------------------------


def test_read_labels_ignores_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("car\n\n  person \n\n", encoding="utf-8")
    assert read_labels(path) == ["car", "person"]


def test_read_labels_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.txt"):
        read_labels(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no labels"):
        read_labels(empty)


def textbook_letterbox(
    frame: npt.NDArray[np.uint8], size: tuple[int, int]
) -> npt.NDArray[np.float32]:
    """Resize, BGR -> RGB, float32 / 255, HWC -> CHW, onto grey: one step at a time."""
    geometry = letterbox_geometry((frame.shape[0], frame.shape[1]), size)
    new_h, new_w = round(frame.shape[0] * geometry.scale), round(frame.shape[1] * geometry.scale)
    resized = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    image = resized[:, :, ::-1].astype(np.float32) * np.float32(1.0 / 255.0)
    tensor = np.full((1, 3, *size), PAD_VALUE / 255, dtype=np.float32)
    y, x = geometry.pad_y, geometry.pad_x
    tensor[0, :, y : y + new_h, x : x + new_w] = image.transpose(2, 0, 1)
    return tensor


@settings(max_examples=60, deadline=None)
@given(h0=st.integers(8, 700), w0=st.integers(8, 700), seed=st.integers(0, 2**16))
def test_letterboxer_is_bit_for_bit_the_textbook_conversion(h0: int, w0: int, seed: int) -> None:
    frame = np.random.default_rng(seed).integers(0, 256, (h0, w0, 3), dtype=np.uint8)
    boxer = Letterboxer((320, 320))
    boxer(np.zeros((50, 90, 3), dtype=np.uint8))  # another size first: the buffers follow
    tensor, _ = boxer(frame)
    assert np.array_equal(tensor, textbook_letterbox(frame, (320, 320)))


def textbook_decode(
    head: npt.NDArray[np.float32], labels: tuple[str, ...], geometry: Letterbox, threshold: float
) -> list[Detection]:
    """Every anchor judged on its own: best class, threshold, a size, then NMS per class."""
    pred = head[0]
    candidates = []
    for i in range(pred.shape[1]):
        cx, cy, w, h = (float(v) for v in pred[:4, i])
        cls = int(np.argmax(pred[4:, i]))
        score = float(pred[4 + cls, i])
        # float32 against float32, as the head's own dtype compares (0.35 passes 0.35).
        if np.float32(score) >= np.float32(threshold) and w > 0 and h > 0:
            candidates.append((cls, score, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)))
    kept = []
    for cls in range(len(labels)):
        mine = [c for c in candidates if c[0] == cls]
        boxes = np.asarray([c[2] for c in mine], dtype=np.float64).reshape(-1, 4)
        for j in nms(boxes, np.asarray([c[1] for c in mine]), 0.45):
            kept.append(mine[j])
    out = []
    for cls, score, box in sorted(kept, key=lambda c: -c[1]):
        b = geometry.to_frame(np.asarray(box))[0]
        if b[2] > b[0] and b[3] > b[1]:
            out.append(Detection(labels[cls], score, (b[0], b[1], b[2], b[3])))
    return out


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 60), seed=st.integers(0, 2**16))
def test_decode_yolo_matches_the_anchor_by_anchor_decode(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    head = np.empty((1, 6, n), dtype=np.float32)
    head[0, :2] = rng.uniform(0, 320, (2, n))
    head[0, 2:4] = rng.choice([0.0, -3.0, 8.0, 30.0, 90.0], (2, n))  # some have no size
    head[0, 4:] = rng.choice([0.1, 0.3, 0.35, 0.5, 0.8, 0.95], (2, n))  # ties on purpose
    geometry = frame_letterbox()
    got = decode_yolo(head, LABELS, geometry, score_threshold=0.35, iou_threshold=0.45)
    expected = textbook_decode(head, LABELS, geometry, 0.35)
    key = sorted((d.label, d.score, d.box) for d in got)
    assert key == sorted((d.label, d.score, d.box) for d in expected)
