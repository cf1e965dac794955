"""Retrain the vibration classifier with a fleet's labelled windows added to its base data.

A pure function from data to ONNX bytes and figures, used by the cloud's training jobs: the
shipped model learnt from simulated machines (``models.vibration.make_dataset``); a fleet's
machines differ (another shaft speed, another baseline), and the windows their people and
the cloud model labelled teach the classifier what is normal there. The fleet's windows are
repeated ``fleet_weight`` times, so a few dozen of them count against thousands of base ones.

``evaluate`` measures any vibration model (the serving one, the candidate) on labelled
windows with the edge's own ONNX Runtime session: what decides whether a candidate serves.
Importing this module needs only numpy and ONNX Runtime (the cloud's extra); training
imports the build (onnx, scikit-learn: the ``models`` extra) when it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_agent.inference.runtime import Runtime
from edge_agent.sources.machine_physics import LABELS, MachineSpec
from models.quality import EMPTY, Quality, share
from shared.errors import ModelError

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
NORMAL = 0
"""The index of the normal label in LABELS."""
WINDOW = MachineSpec().window
"""Samples per window the classifier reads (``models.vibration.WINDOW``)."""


@dataclass(frozen=True, slots=True)
class Retrained:
    """The candidate and what its training saw."""

    model: bytes
    base_windows: int
    fleet_windows: int
    fleet_weight: int


def label_names() -> list[str]:
    """The classifier's labels, in the order of its output."""
    return list(LABELS)


def label_indices(labels: list[str]) -> I64:
    """Labels as indices into LABELS; ModelError naming a label the classifier cannot learn."""
    unknown = sorted({label for label in labels if label not in LABELS})
    if unknown:
        raise ModelError(f"labels {unknown} are not among the classifier's {list(LABELS)}")
    return np.asarray([LABELS.index(label) for label in labels], dtype=np.int64)


def check_windows(windows: F32) -> None:
    """ModelError unless ``windows`` is ``[N, WINDOW]`` of finite values."""
    if windows.ndim != 2 or windows.shape[1] != WINDOW:
        raise ModelError(f"windows are {list(windows.shape)}; the classifier reads [N, {WINDOW}]")
    if not np.all(np.isfinite(windows)):
        raise ModelError("windows hold NaN or infinite values")


def retrain(
    windows: F32,
    labels: I64,
    *,
    seed: int = 0,
    base_per_machine: int | None = None,
    fleet_weight: int = 5,
) -> Retrained:
    """Train the classifier on the base data plus ``windows`` (``[N, WINDOW]``, labels as
    indices into LABELS) repeated ``fleet_weight`` times; ModelError for data it cannot use.
    ``base_per_machine`` None is the shipped model's own base data."""
    from models import vibration

    check_windows(windows)
    if len(windows) == 0:
        raise ModelError("no fleet windows to train on")
    if len(np.unique(labels)) < 2:
        raise ModelError(f"fleet windows have one label only ({LABELS[int(labels[0])]})")
    per_machine = base_per_machine or vibration.TRAIN_PER_MACHINE
    base = vibration.make_dataset(vibration.TRAIN_SEED, per_machine)
    fleet = np.repeat(windows, fleet_weight, axis=0)
    all_windows = np.concatenate([base.windows, fleet])
    all_labels = np.concatenate([base.labels, np.repeat(labels, fleet_weight)])
    classifier = vibration.train(vibration.features(all_windows), all_labels, seed=seed)
    return Retrained(
        model=vibration.to_onnx(classifier).SerializeToString(),
        base_windows=len(base.windows),
        fleet_windows=len(windows),
        fleet_weight=fleet_weight,
    )


def shipped_test_set(per_machine: int) -> tuple[F32, I64]:
    """The shipped model's held-out set (its seed), ``per_machine`` windows of each label."""
    from models import vibration

    held_out = vibration.make_dataset(vibration.HELD_OUT_SEED, per_machine)
    return held_out.windows, held_out.labels


def evaluate(model: bytes, windows: F32, labels: I64) -> Quality:
    """``model``'s false-alarm rate, fault recall and accuracy on labelled ``windows``."""
    if len(windows) == 0:
        return EMPTY
    check_windows(windows)
    predicted = Runtime(model).run(windows).argmax(axis=1)
    normal, faults = labels == NORMAL, labels != NORMAL
    return Quality(
        windows=len(windows),
        normal=int(normal.sum()),
        faults=int(faults.sum()),
        false_alarm_rate=share(predicted[normal] != NORMAL),
        recall=share(predicted[faults] != NORMAL),
        accuracy=share(predicted == labels),
    )
