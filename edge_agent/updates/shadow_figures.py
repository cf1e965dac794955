"""What a shadow window measures: both models' calls on the same inputs, their agreement, the
correlation of their scores and how often each would have alarmed; and how a candidate scores
one input (``Scorer``: a sensor window, or a camera frame).

A model's *call* on an input is its label when the score reaches its threshold and the normal
label otherwise (as the pipelines label the samples they keep). On a camera frame, the score
and label are those of the best detection (``none`` without one), so a frame is in alarm when
the detector sees anything. Two models agree on an input when their calls are the same. The
Pearson correlation is kept as running sums, so the figures cost a few additions per input and
no memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.inference.postprocess import Letterboxer, decode_yolo
from edge_agent.inference.slot import LoadedModel
from edge_agent.pipelines.config import VisionConfig
from shared.errors import ModelError

Scorer = Callable[[npt.NDArray[Any]], tuple[float, str]]
"""One input (a window, or a frame) -> the candidate's score and most likely label."""

SCORE_LABEL = "anomaly"
"""The label a score model's windows get (as in ``edge_agent.pipelines.sensor``)."""
NORMAL_LABEL = "normal"
NO_OBJECT = "none"
"""The label of a frame without a detection (as the camera pipeline's collector says)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """How one model's score and label become its call: its threshold and its normal label."""

    threshold: float
    normal: str

    @classmethod
    def of(cls, model: LoadedModel, vision: VisionConfig | None = None) -> Caller:
        if model.task == "detection":
            return cls((vision or VisionConfig()).score_threshold, NO_OBJECT)
        normal = model.labels[model.normal_index] if model.task == "anomaly" else NORMAL_LABEL
        return cls(model.threshold if model.threshold is not None else 0.5, normal)

    def call(self, score: float, label: str) -> tuple[str, bool]:
        """The call on one input and whether it is an alarm (the score reaches the threshold)."""
        alarm = score >= self.threshold
        return (label if alarm else self.normal), alarm


def score_of(model: LoadedModel, output: np.ndarray) -> tuple[float, str]:
    """One window's score and (most likely fault) label from a sensor model's output.

    The rule of ``SensorPipeline._scores`` for one window: a scorer's output is the score, a
    classifier's is 1 - p(normal) with its most likely fault. ModelError for an output that
    breaks the contract.
    """
    name = f"model {model.ref.name} {model.ref.version}"
    if model.task == "score":
        if output.size != 1:
            raise ModelError(f"{name}: output shape {output.shape} is not one score")
        score, label = float(output.flat[0]), SCORE_LABEL
    else:
        row = output.reshape(-1).tolist()
        if len(row) != len(model.labels):
            raise ModelError(f"{name}: output shape {output.shape} does not fit its labels")
        score = 1.0 - row[model.normal_index]
        label = model.labels[max(model.fault_indices, key=row.__getitem__)]
    if not math.isfinite(score):
        raise ModelError(f"{name}: output is not finite (NaN or inf)")
    return score, label


def scorer(model: LoadedModel, vision: VisionConfig | None = None) -> Scorer:
    """How ``model`` scores one input of its pipeline (ModelError for a broken output)."""
    if model.task != "detection":
        return lambda window: score_of(model, model.runtime.run(model.as_batch(window)))
    settings = vision or VisionConfig()
    letterbox = Letterboxer(model.input_hw)  # its own buffer: the pipeline's is in use

    def best(frame: npt.NDArray[Any]) -> tuple[float, str]:
        tensor, geometry = letterbox(frame)
        detections = decode_yolo(
            model.runtime.run(tensor), model.labels, geometry,
            score_threshold=settings.score_threshold, iou_threshold=settings.iou_threshold,
        )  # fmt: skip
        top = max(detections, key=lambda d: d.score, default=None)
        return (top.score, top.label) if top is not None else (0.0, NO_OBJECT)

    return best


@dataclass(slots=True)
class Agreement:
    """Running figures over the inputs both models scored."""

    count: int = 0
    label_matches: int = 0
    serving_alarm_windows: int = 0
    candidate_alarm_windows: int = 0
    sum_s: float = 0.0
    sum_c: float = 0.0
    sum_ss: float = 0.0
    sum_cc: float = 0.0
    sum_sc: float = 0.0

    def add(self, serving: tuple[float, str, bool], candidate: tuple[float, str, bool]) -> None:
        """One input: each model's (score, call, alarm)."""
        s, s_call, s_alarm = serving
        c, c_call, c_alarm = candidate
        self.count += 1
        self.label_matches += s_call == c_call
        self.serving_alarm_windows += s_alarm
        self.candidate_alarm_windows += c_alarm
        self.sum_s += s
        self.sum_c += c
        self.sum_ss += s * s
        self.sum_cc += c * c
        self.sum_sc += s * c

    def correlation(self) -> float | None:
        """Pearson's r of the two scores; None under 2 inputs or when either is constant."""
        n = self.count
        if n < 2:
            return None
        var_s = n * self.sum_ss - self.sum_s**2
        var_c = n * self.sum_cc - self.sum_c**2
        if var_s <= 1e-12 * max(1.0, n * self.sum_ss) or var_c <= 1e-12 * max(1.0, n * self.sum_cc):
            return None
        r = (n * self.sum_sc - self.sum_s * self.sum_c) / math.sqrt(var_s * var_c)
        return max(-1.0, min(1.0, r))


def percentiles(values: list[float]) -> tuple[float | None, float | None]:
    """The median and p99 of ``values`` (None, None for none)."""
    if not values:
        return None, None
    ordered = sorted(values)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)]
