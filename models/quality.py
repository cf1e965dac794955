"""What a model does on labelled data where operators feel it: false alarms and missed faults.

One shape for every trainer's evaluation (``models.vibration_retrain``, ``models.normal_refit``),
so the cloud's gate compares a candidate with the serving version by the same figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Quality:
    """A model's figures on labelled windows."""

    windows: int
    normal: int
    faults: int
    false_alarm_rate: float | None
    """Normal windows called a fault, over normal windows (None without normal windows)."""
    recall: float | None
    """Fault windows called any fault, over fault windows (None without fault windows)."""
    accuracy: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        """The figures as JSON-ready values."""
        return {
            "windows": self.windows,
            "normal": self.normal,
            "faults": self.faults,
            "false_alarm_rate": self.false_alarm_rate,
            "recall": self.recall,
            "accuracy": self.accuracy,
        }


EMPTY = Quality(0, 0, 0, None, None, None)


def share(hits: npt.NDArray[np.bool_]) -> float | None:
    """The share of true values, rounded (None for no values)."""
    return round(float(hits.mean()), 4) if hits.size else None
