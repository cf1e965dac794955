"""Refit a machine's fit-normal scorer on the normal windows its agent collected.

A pure function from data to ONNX bytes, used by the cloud's training jobs: the scorer
``aiot models fit-normal`` learnt on a gateway goes stale when the machine's normal moves (a
new speed, a new baseline); the windows people marked as false alarms, and those the cloud
model called normal, are the new normal. The refit keeps the threshold the pipeline is set to
(the score is scaled so that its calibrated threshold is that one), so the new version drops
into the pipeline without a configuration change.

``evaluate`` measures any scorer on labelled windows against a threshold: a score above it is
an alarm. Importing this module needs numpy and ONNX Runtime only; fitting imports
scikit-learn and onnx (the ``models`` extra) when it runs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge_agent.inference.runtime import Runtime
from models.quality import EMPTY, Quality, share
from shared.errors import ModelError

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
NORMAL = 0
FAULT = 1
LABELS = ("normal", "fault")
"""A scorer knows normal and not normal: every label but normal counts as a fault."""


def check_windows(windows: F32) -> None:
    """ModelError unless ``windows`` is ``[N, C, W]`` of finite values."""
    if windows.ndim != 3:
        raise ModelError(f"windows are {list(windows.shape)}; a scorer reads [N, channels, size]")
    if not np.all(np.isfinite(windows)):
        raise ModelError("windows hold NaN or infinite values")


def refit(
    windows: F32,
    labels: I64,
    *,
    threshold: float,
    false_alarm_rate: float = 0.005,
    name: str = "fit-normal",
    version: str = "refit",
) -> bytes:
    """A scorer fitted on the normal ones of ``windows`` (``[N, C, W]``, in time order), its
    score scaled so that ``threshold`` stays its threshold; ModelError for data it cannot use."""
    from models.normal import fit_windows
    from models.window_features import WindowSpec

    check_windows(windows)
    normal = windows[labels == NORMAL]
    channels = tuple(f"ch{index}" for index in range(windows.shape[1]))
    spec = WindowSpec(channels=channels, size=windows.shape[2], hop=windows.shape[2])
    result = fit_windows(
        normal, spec, name=name, version=version, false_alarm_rate=false_alarm_rate,
        threshold=threshold,
    )  # fmt: skip
    return result.model


def evaluate(model: bytes, windows: F32, labels: I64, *, threshold: float) -> Quality:
    """``model``'s false-alarm rate and recall on labelled ``windows`` at ``threshold``."""
    if len(windows) == 0:
        return EMPTY
    check_windows(windows)
    alarms = Runtime(model).run(windows) > threshold
    normal, faults = labels == NORMAL, labels != NORMAL
    return Quality(
        windows=len(windows),
        normal=int(normal.sum()),
        faults=int(faults.sum()),
        false_alarm_rate=share(alarms[normal]),
        recall=share(alarms[faults]),
        accuracy=share(alarms == faults),
    )
