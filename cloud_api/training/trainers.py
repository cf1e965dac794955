"""The trainers a job may name, each declared once: its options, the sample shape it reads,
and the functions of ``models/`` that train and measure it.

A trainer turns the frozen dataset's arrays into ONNX bytes (``train``) and measures any model
of its kind on labelled arrays (``evaluate``): the serving version and the candidate are
measured by the same function on the same data. ``test_set`` is the set the shipped model was
measured on, so that a candidate does not regress on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloud_api.sample_schemas import FALSE_ALARM_LABEL
from models import vibration_retrain
from models.vibration_retrain import Quality
from shared.errors import ContractError

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


class VibrationOptions(BaseModel):
    """Options of the vibration classifier's retraining."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(default=0, ge=0, le=2**31)
    base_per_machine: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="base windows per label and simulated machine; None: the shipped model's",
    )
    fleet_weight: int = Field(default=5, ge=1, le=100, description="repeats of fleet windows")
    test_share: float = Field(default=0.25, gt=0, lt=1, description="held-out share of samples")
    shipped_test_per_machine: int = Field(default=50, ge=1, le=1000)


@dataclass(frozen=True)
class Trainer:
    """One trainer: how to read its options, its data, and what it runs."""

    options: type[BaseModel]
    window_shape: tuple[int, ...]
    labels: tuple[str, ...]
    train: Callable[[F32, I64, Any], bytes]
    evaluate: Callable[[bytes, F32, I64], Quality]
    test_set: Callable[[Any], tuple[F32, I64]]
    normal_label: str

    def label_index(self) -> dict[str, int]:
        """Each label the trainer learns, by its index; a person's false alarm (labelled
        ``normal``, cloud_api/sample_schemas.py) is the trainer's own normal label."""
        index = {label: at for at, label in enumerate(self.labels)}
        index.setdefault(FALSE_ALARM_LABEL, index[self.normal_label])
        return index

    def parse_options(self, values: dict[str, Any]) -> BaseModel:
        """The options, checked; ContractError naming the first bad one."""
        try:
            return self.options.model_validate(values)
        except ValidationError as exc:
            error = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in error["loc"])
            raise ContractError(f"options.{where}: {error['msg']}") from None


def _train_vibration(windows: F32, labels: I64, options: VibrationOptions) -> bytes:
    return vibration_retrain.retrain(
        windows,
        labels,
        seed=options.seed,
        base_per_machine=options.base_per_machine,
        fleet_weight=options.fleet_weight,
    ).model


def _vibration_test_set(options: VibrationOptions) -> tuple[F32, I64]:
    return vibration_retrain.shipped_test_set(options.shipped_test_per_machine)


TRAINERS: dict[str, Trainer] = {
    "vibration-classifier": Trainer(
        options=VibrationOptions,
        window_shape=(vibration_retrain.WINDOW,),
        labels=tuple(vibration_retrain.label_names()),
        train=_train_vibration,
        evaluate=vibration_retrain.evaluate,
        test_set=_vibration_test_set,
        normal_label=vibration_retrain.label_names()[vibration_retrain.NORMAL],
    ),
}


def trainer_named(name: str) -> Trainer:
    """The trainer ``name``; ContractError listing the known ones."""
    trainer = TRAINERS.get(name)
    if trainer is None:
        raise ContractError(f"trainer {name!r} is unknown: use one of {sorted(TRAINERS)}")
    return trainer
