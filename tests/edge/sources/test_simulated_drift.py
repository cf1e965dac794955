"""``drift:`` of the simulated vibration source: from ``at_s`` on, the machine's normal turns at
the new shaft speed (its 1x line moves there); before it, and without the key, it does not."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from pydantic import ValidationError

from edge_agent.sources.simulated import SimulatedVibrationSource, SimulatedVibrationSourceConfig


def shaft_line_hz(window: np.ndarray, sample_rate_hz: float) -> float:
    """The strongest spectral line below 60 Hz: the 1x shaft line of a healthy machine."""
    spectrum = np.abs(np.fft.rfft(window * np.hanning(window.size)))
    freqs = np.fft.rfftfreq(window.size, 1.0 / sample_rate_hz)
    low = (freqs > 5) & (freqs < 60)
    return float(freqs[low][np.argmax(spectrum[low])])


def lines(**drift: float) -> list[float]:
    config = SimulatedVibrationSourceConfig.model_validate(
        {"type": "simulated_vibration", "seed": 3, "speed": 0, "window": 8192,
         "sample_rate_hz": 4096.0, "duration_s": 40.0, **({"drift": drift} if drift else {})}
    )  # fmt: skip
    source = SimulatedVibrationSource(config)
    return [shaft_line_hz(s.data, 4096.0) for s in source.samples(threading.Event())]


def test_the_shaft_line_moves_at_the_drift_and_not_before() -> None:
    drifted = lines(at_s=20.0, shaft_hz=15.0)
    steady = lines()
    assert len(drifted) == len(steady) == 20  # 2 s windows over 40 s
    assert all(abs(hz - 29.5) < 1.5 for hz in drifted[:10]), drifted
    assert all(abs(hz - 15.0) < 1.5 for hz in drifted[10:]), drifted
    assert all(abs(hz - 29.5) < 1.5 for hz in steady), steady


def test_a_bad_drift_is_refused_with_its_key() -> None:
    with pytest.raises(ValidationError, match=r"drift\.shaft_hz"):
        SimulatedVibrationSourceConfig.model_validate(
            {"type": "simulated_vibration", "drift": {"at_s": 5, "shaft_hz": 0}}
        )
