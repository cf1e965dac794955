"""The trainers a job may name, each declared once: its options, its labels, and the
functions of ``models/`` that train and measure it.

A ``Trainer`` learns from sensor windows, an ``ImageTrainer`` from camera frames with the
cloud detector's boxes (:mod:`cloud_api.training.images`); the job's runner dispatches on it.

A trainer turns the frozen dataset's arrays into ONNX bytes (``train``) and measures any model
of its kind on labelled arrays (``evaluate``): the serving version and the candidate are
measured by the same function on the same data. ``test_set`` is the set the shipped model was
measured on (None for a model fitted per machine, which has none), so that a candidate does
not regress on it. A sample's window must have the shape of the base model's input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloud_api.sample_schemas import FALSE_ALARM_LABEL
from models import detector, normal_refit, vibration_retrain
from models.quality import Quality
from models.scenes import LabelledFrame
from shared.errors import ContractError

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    test_share: float = Field(default=0.25, gt=0, lt=1, description="held-out share of samples")


class VibrationOptions(_Options):
    """Options of the vibration classifier's retraining."""

    seed: int = Field(default=0, ge=0, le=2**31)
    base_per_machine: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="base windows per label and simulated machine; None: the shipped model's",
    )
    fleet_weight: int = Field(default=5, ge=1, le=100, description="repeats of fleet windows")
    shipped_test_per_machine: int = Field(default=50, ge=1, le=1000)


class NormalOptions(_Options):
    """Options of a fit-normal scorer's refit."""

    threshold: float = Field(
        gt=0, le=1e9, description="the pipeline's threshold: the refit keeps it, so does the gate"
    )
    false_alarm_rate: float = Field(default=0.005, gt=0, lt=0.5)


class ImageOptions(_Options):
    """Options every trainer of frames has: which of the cloud's boxes it learns."""

    min_score: float = Field(
        default=0.5, ge=0.35, le=1.0,
        description="cloud boxes scored this or more are learnt; weaker ones are ignored",
    )  # fmt: skip


class DetectorOptions(ImageOptions):
    """Options of a scene detector's fine-tuning; None is ``models.detector_finetune.Settings``'
    default (that module needs torch, so its defaults are not read here)."""

    steps: int | None = Field(default=None, ge=1, le=5000)
    learning_rate: float | None = Field(default=None, gt=0, le=0.1)
    replay_scenes: int | None = Field(
        default=None, ge=0, le=300, description="streets of the base's training set replayed"
    )
    seed: int | None = Field(default=None, ge=0, le=2**31)


@dataclass(frozen=True)
class _Declared:
    options: type[_Options]

    def parse_options(self, values: dict[str, Any]) -> _Options:
        """The options, checked; ContractError naming the first bad one."""
        try:
            return self.options.model_validate(values)
        except ValidationError as exc:
            error = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in error["loc"])
            raise ContractError(f"options.{where}: {error['msg']}") from None


@dataclass(frozen=True)
class Trainer(_Declared):
    """One trainer of windows: how to read its options, its labels, and what it runs."""

    labels: tuple[str, ...]
    """The labels it learns, by index; the first is normal."""
    train: Callable[[F32, I64, Any], bytes]
    evaluate: Callable[[bytes, F32, I64, Any], Quality]
    test_set: Callable[[Any], tuple[F32, I64] | None]
    any_fault: bool = False
    """Every label but normal is the fault (a scorer knows normal and not normal)."""

    def index_of(self, label: str) -> int:
        """A sample's label as the trainer's index; a person's false alarm (``normal``,
        cloud_api/sample_schemas.py) is the trainer's normal; ContractError if unknown."""
        if label in (FALSE_ALARM_LABEL, self.labels[0]):
            return 0
        if self.any_fault:
            return 1
        if label not in self.labels:
            raise ContractError(f"label {label!r} is not among the trainer's {list(self.labels)}")
        return self.labels.index(label)


Frames = Sequence[LabelledFrame]


@dataclass(frozen=True)
class ImageTrainer(_Declared):
    """One trainer of frames (its options are ``ImageOptions``): it starts from the base
    model's bytes (a fine-tune) and names the candidate ``name version`` in its file."""

    train: Callable[[bytes, Frames, str, str, Any], bytes]
    """(base model, frames, name, version, options) -> the candidate."""
    evaluate: Callable[[bytes, Frames], Quality]
    test_set: Callable[[], Frames]
    device: Callable[[], str]
    """Where it trains (``cuda`` or ``cpu``), said in the job's log."""


def _train_vibration(windows: F32, labels: I64, options: VibrationOptions) -> bytes:
    return vibration_retrain.retrain(
        windows,
        labels,
        seed=options.seed,
        base_per_machine=options.base_per_machine,
        fleet_weight=options.fleet_weight,
    ).model


def _evaluate_vibration(model: bytes, windows: F32, labels: I64, _: VibrationOptions) -> Quality:
    return vibration_retrain.evaluate(model, windows, labels)


def _vibration_test_set(options: VibrationOptions) -> tuple[F32, I64]:
    return vibration_retrain.shipped_test_set(options.shipped_test_per_machine)


def _refit_normal(windows: F32, labels: I64, options: NormalOptions) -> bytes:
    return normal_refit.refit(
        windows, labels, threshold=options.threshold, false_alarm_rate=options.false_alarm_rate
    )


def _evaluate_normal(model: bytes, windows: F32, labels: I64, options: NormalOptions) -> Quality:
    return normal_refit.evaluate(model, windows, labels, threshold=options.threshold)


def _fine_tune(base: bytes, frames: Frames, name: str, version: str, options: Any) -> bytes:
    from models import detector_finetune  # torch (the train extra): only when a job runs

    assert isinstance(options, DetectorOptions)
    chosen = options.model_dump(exclude_none=True, exclude={"test_share", "min_score"})
    settings = detector_finetune.Settings(**chosen)
    return detector_finetune.fine_tune(
        base, frames, name=name, version=version, settings=settings
    ).model


def _fine_tune_device() -> str:
    from models import detector_finetune  # torch (the train extra): only when a job runs

    return detector_finetune.device().type


TRAINERS: dict[str, Trainer | ImageTrainer] = {
    "vibration-classifier": Trainer(
        options=VibrationOptions,
        labels=tuple(vibration_retrain.label_names()),
        train=_train_vibration,
        evaluate=_evaluate_vibration,
        test_set=_vibration_test_set,
    ),
    "fit-normal": Trainer(
        options=NormalOptions,
        labels=normal_refit.LABELS,
        train=_refit_normal,
        evaluate=_evaluate_normal,
        test_set=lambda _: None,
        any_fault=True,
    ),
    "scene-detector": ImageTrainer(
        options=DetectorOptions,
        train=_fine_tune,
        evaluate=detector.quality,
        test_set=detector.held_out,
        device=_fine_tune_device,
    ),
}


def trainer_named(name: str) -> Trainer | ImageTrainer:
    """The trainer ``name``; ContractError listing the known ones."""
    trainer = TRAINERS.get(name)
    if trainer is None:
        raise ContractError(f"trainer {name!r} is unknown: use one of {sorted(TRAINERS)}")
    return trainer
