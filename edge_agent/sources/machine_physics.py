"""Physics of a simulated rotating machine: accelerometer windows (in g), healthy or faulty.

Pure numpy, no I/O, deterministic for a seed. It stands in for a real accelerometer on a
motor or spindle, both for the demo source and for generating the vibration model's
training data, so the signatures follow textbook vibration analysis:

- healthy: shaft harmonics (1x, 2x, 3x) whose amplitudes follow the load, a speed that
  wanders by up to +-2 % between windows, broadband noise and a structural resonance;
- imbalance: a strong 1x; misalignment: strong 2x and 3x (and some 4x);
- bearing outer / inner race: periodic impacts at BPFO / BPFI ringing a high-frequency
  resonance, the inner race ones amplitude-modulated at shaft rate (the defect passes
  through the load zone once per revolution);
- impact: a few random transient shocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

LABELS: tuple[str, ...] = (
    "healthy",
    "imbalance",
    "misalignment",
    "bearing_outer_race",
    "bearing_inner_race",
    "impact",
)
FAULTS: tuple[str, ...] = LABELS[1:]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class MachineSpec:
    """The sensor and the machine: sampling, shaft speed and the bearing's geometry.

    The default bearing is a deep-groove 6205 (9 balls, 7.94 mm balls, 39.04 mm pitch),
    which gives BPFO ~ 3.58x and BPFI ~ 5.42x shaft speed.
    """

    sample_rate_hz: float = 12800.0
    window: int = 2048  # samples per window (160 ms)
    shaft_hz: float = 29.5  # ~1770 rpm
    balls: int = 9
    ball_diameter_mm: float = 7.94
    pitch_diameter_mm: float = 39.04
    contact_angle_deg: float = 0.0
    bearing_resonance_hz: float = 3600.0  # where bearing impacts ring
    structure_resonance_hz: float = 1100.0  # the frame's main mode

    def _ratio(self) -> float:
        cos = math.cos(math.radians(self.contact_angle_deg))
        return self.ball_diameter_mm / self.pitch_diameter_mm * cos

    @property
    def bpfo_order(self) -> float:
        """Ball pass frequency, outer race, as a multiple of shaft speed."""
        return self.balls / 2.0 * (1.0 - self._ratio())

    @property
    def bpfi_order(self) -> float:
        """Ball pass frequency, inner race, as a multiple of shaft speed."""
        return self.balls / 2.0 * (1.0 + self._ratio())

    @property
    def bpfo_hz(self) -> float:
        """BPFO at nominal speed."""
        return self.bpfo_order * self.shaft_hz

    @property
    def bpfi_hz(self) -> float:
        """BPFI at nominal speed."""
        return self.bpfi_order * self.shaft_hz


@dataclass(frozen=True, slots=True)
class _Conditions:
    """What varies from one healthy window to the next (so healthy is not one point)."""

    shaft_hz: float
    load: float
    noise_g: float
    structure_hz: float


class SimulatedMachine:
    """Synthesises accelerometer windows (in g) of a rotating machine, healthy or with a fault.

    Each call to :meth:`window` draws fresh operating conditions (speed, load, noise) from
    the machine's own random generator, so a sequence of windows is reproducible from the
    seed alone.
    """

    def __init__(self, spec: MachineSpec, seed: int) -> None:
        self.spec = spec
        self._rng = np.random.default_rng(seed)
        self._t = np.arange(spec.window, dtype=np.float64) / spec.sample_rate_hz

    def window(self, fault: str | None = None, severity: float = 1.0) -> npt.NDArray[np.float32]:
        """One window of ``spec.window`` samples; ``fault`` is one of FAULTS or None/"healthy".

        ``severity`` in (0, 1] scales the fault's signature; 1.0 is a clear, developed fault.
        """
        if fault is not None and fault != "healthy" and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}: expected one of {', '.join(FAULTS)}")
        if not 0.0 < severity <= 1.0:
            raise ValueError(f"severity must be in (0, 1], got {severity}")
        cond = self._conditions()
        signal = self._healthy(cond)
        if fault is not None and fault != "healthy":
            signal += _FAULT_SIGNATURES[fault](self, cond, severity)
        return signal.astype(np.float32)

    # -- healthy baseline ---------------------------------------------------------------

    def _conditions(self) -> _Conditions:
        rng = self._rng
        return _Conditions(
            shaft_hz=self.spec.shaft_hz * (1.0 + rng.uniform(-0.02, 0.02)),
            load=rng.uniform(0.4, 1.3),
            noise_g=rng.uniform(0.01, 0.05),
            structure_hz=self.spec.structure_resonance_hz * rng.uniform(0.85, 1.15),
        )

    def _healthy(self, cond: _Conditions) -> FloatArray:
        rng = self._rng
        # Residual imbalance and misalignment exist on every real machine; they grow with load.
        base = np.array([0.08, 0.03, 0.015]) * cond.load
        amplitudes = base * rng.lognormal(0.0, 0.3, size=3)
        signal = self._harmonics(cond.shaft_hz, amplitudes)
        signal += rng.normal(0.0, cond.noise_g, size=self.spec.window)
        signal += self._resonant_noise(cond.structure_hz, q=8.0, rms_g=cond.noise_g * 1.5)
        return signal

    def _harmonics(self, shaft_hz: float, amplitudes: FloatArray) -> FloatArray:
        """Sum of shaft orders 1..len(amplitudes) with random phases."""
        phases = self._rng.uniform(0.0, 2.0 * np.pi, size=amplitudes.size)
        orders = np.arange(1, amplitudes.size + 1, dtype=np.float64)
        angles = 2.0 * np.pi * shaft_hz * np.outer(orders, self._t) + phases[:, None]
        result: FloatArray = amplitudes @ np.sin(angles)
        return result

    def _resonant_noise(self, centre_hz: float, q: float, rms_g: float) -> FloatArray:
        """White noise shaped by one resonance (done in the frequency domain: no IIR loop)."""
        n = self.spec.window
        spectrum = np.fft.rfft(self._rng.normal(0.0, 1.0, size=n))
        freqs = np.fft.rfftfreq(n, 1.0 / self.spec.sample_rate_hz)
        ratio = freqs / centre_hz
        gain = 1.0 / np.sqrt((1.0 - ratio**2) ** 2 + (ratio / q) ** 2)
        shaped = np.fft.irfft(spectrum * gain, n)
        return shaped * (rms_g / max(float(np.std(shaped)), 1e-12))

    # -- fault signatures ---------------------------------------------------------------

    def _imbalance(self, cond: _Conditions, severity: float) -> FloatArray:
        amplitude = severity * 0.5 * self._rng.uniform(0.8, 1.2)
        return self._harmonics(cond.shaft_hz, np.array([amplitude]))

    def _misalignment(self, cond: _Conditions, severity: float) -> FloatArray:
        # Angular/parallel misalignment: 2x dominates, with 3x and some 4x; a little 1x.
        shape = np.array([0.05, 0.35, 0.2, 0.08]) * self._rng.uniform(0.8, 1.2, size=4)
        return self._harmonics(cond.shaft_hz, severity * shape)

    def _outer_race(self, cond: _Conditions, severity: float) -> FloatArray:
        rate = self.spec.bpfo_order * cond.shaft_hz
        n = self._impact_count(rate)
        amplitudes = np.full(n, 0.8 * severity) * self._rng.uniform(0.8, 1.2, size=n)
        return self._ringing(self._impact_times(rate, n), amplitudes)

    def _inner_race(self, cond: _Conditions, severity: float) -> FloatArray:
        rate = self.spec.bpfi_order * cond.shaft_hz
        n = self._impact_count(rate)
        times = self._impact_times(rate, n)
        # The defect rotates with the shaft: it hits hardest once per turn, in the load zone.
        phase = self._rng.uniform(0.0, 2.0 * np.pi)
        load_zone = 0.55 + 0.45 * np.cos(2.0 * np.pi * cond.shaft_hz * times + phase)
        amplitudes = 0.9 * severity * load_zone * self._rng.uniform(0.8, 1.2, size=n)
        return self._ringing(times, amplitudes)

    def _impact(self, cond: _Conditions, severity: float) -> FloatArray:
        rng = self._rng
        count = int(rng.integers(1, 4))
        duration = self.spec.window / self.spec.sample_rate_hz
        times = np.sort(rng.uniform(0.0, duration * 0.9, size=count))
        amplitudes = severity * rng.uniform(2.0, 4.0, size=count)
        # A knock rings the whole structure: lower, longer mode than a bearing defect.
        return self._ringing(times, amplitudes, centre_hz=cond.structure_hz * 1.6, decay_s=0.006)

    def _impact_count(self, rate_hz: float) -> int:
        duration = self.spec.window / self.spec.sample_rate_hz
        return math.ceil(duration * rate_hz) + 1

    def _impact_times(self, rate_hz: float, count: int) -> FloatArray:
        """Impacts at ``rate_hz`` from a random start, with ~1 % slip of the rolling elements."""
        period = 1.0 / rate_hz
        start = self._rng.uniform(-period, 0.0)
        slip = self._rng.normal(0.0, 0.01 * period, size=count)
        times: FloatArray = start + period * np.arange(count) + slip
        return times

    def _ringing(
        self,
        times: FloatArray,
        amplitudes: FloatArray,
        centre_hz: float | None = None,
        decay_s: float = 0.0012,
    ) -> FloatArray:
        """Each impact excites a damped sinusoid at a resonance; sum them over the window.

        Impacts are placed on the sample grid and convolved with one burst, which is ~20x
        cheaper than evaluating every burst over the whole window.
        """
        fs = self.spec.sample_rate_hz
        fc = self.spec.bearing_resonance_hz if centre_hz is None else centre_hz
        fc *= self._rng.uniform(0.95, 1.05)
        lag = np.arange(math.ceil(8.0 * decay_s * fs), dtype=np.float64) / fs
        burst = np.exp(-lag / decay_s) * np.sin(2.0 * np.pi * fc * lag)
        # Impacts up to one burst before the window still ring into it.
        pad = burst.size
        train = np.zeros(self.spec.window + pad, dtype=np.float64)
        index = np.rint(times * fs).astype(np.int64) + pad
        keep = (index >= 0) & (index < train.size)
        np.add.at(train, index[keep], amplitudes[keep])
        result: FloatArray = np.convolve(train, burst)[pad : pad + self.spec.window]
        return result


_FAULT_SIGNATURES = {
    "imbalance": SimulatedMachine._imbalance,
    "misalignment": SimulatedMachine._misalignment,
    "bearing_outer_race": SimulatedMachine._outer_race,
    "bearing_inner_race": SimulatedMachine._inner_race,
    "impact": SimulatedMachine._impact,
}
