"""Windows of multi-channel readings and the features a sensor model computes in its graph.

``features`` is the numpy reference and ``front_end`` the same computation as ONNX nodes,
per channel: mean, standard deviation, log RMS, log peak-to-peak, skewness, log kurtosis
and, for windows of 16 values or more, log energies in up to 16 log-spaced spectral bands
(DFT of the Hann-windowed, mean-removed window). Computing them in the graph means the
edge feeds raw windows and runs exactly what was validated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.graph import GraphBuilder
from shared.errors import ModelError

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

EPS = 1e-6
MIN_SPECTRAL_SIZE = 16
MAX_BANDS = 16
STAT_FEATURES = ("mean", "std", "log_rms", "log_ptp", "skew", "log_kurtosis")


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """How readings become windows: ``size`` values per channel, a new window every ``hop``."""

    channels: tuple[str, ...]
    size: int
    hop: int
    rate_hz: float | None = None
    """Readings per second, when the readings are sampled at a fixed rate."""

    def __post_init__(self) -> None:
        if not self.channels:
            raise ModelError("a window needs at least one channel")
        if self.size < 2:
            raise ModelError(f"window size must be at least 2, not {self.size}")
        if self.hop < 1:
            raise ModelError(f"window hop must be at least 1, not {self.hop}")


def windows_of(values: F64, spec: WindowSpec) -> F32:
    """``[N, C]`` readings -> ``[B, C, size]`` windows, one every ``hop`` readings."""
    if values.ndim != 2 or values.shape[1] != len(spec.channels):
        raise ModelError(
            f"readings must be [N, {len(spec.channels)}] for channels {list(spec.channels)}, "
            f"not {list(values.shape)}"
        )
    if values.shape[0] < spec.size:
        return np.zeros((0, len(spec.channels), spec.size), dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(values, spec.size, axis=0)[:: spec.hop]
    return np.ascontiguousarray(view, dtype=np.float32)  # [B, C, size]


def band_edges(size: int) -> npt.NDArray[np.int64]:
    """Edges of up to MAX_BANDS log-spaced bands over the DFT bins 1..size//2 (DC left out)."""
    bins = size // 2 + 1
    raw = np.rint(np.geomspace(1, bins, MAX_BANDS + 1)).astype(np.int64)
    edges: npt.NDArray[np.int64] = np.unique(np.clip(raw, 1, bins))
    return edges


def band_matrix(size: int) -> F32:
    """``[bins, bands]`` of 0/1: a MatMul with it sums power per band."""
    edges = band_edges(size)
    matrix = np.zeros((size // 2 + 1, edges.size - 1), dtype=np.float32)
    for band in range(edges.size - 1):
        matrix[edges[band] : edges[band + 1], band] = 1.0
    return matrix


def hann(size: int) -> F32:
    """The periodic Hann window."""
    n = np.arange(size, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / size)).astype(np.float32)


def feature_names(spec: WindowSpec) -> list[str]:
    """One name per feature, in the graph's order (channel-major within each family)."""
    names = [f"{stat}[{ch}]" for stat in STAT_FEATURES for ch in spec.channels]
    if spec.size >= MIN_SPECTRAL_SIZE:
        bands = band_matrix(spec.size).shape[1]
        names += [f"log_band{b}[{ch}]" for ch in spec.channels for b in range(bands)]
    return names


def features(windows: F32) -> F64:
    """The numpy reference of the graph's front end: ``[B, C, W]`` -> ``[B, F]``."""
    x = windows.astype(np.float64)
    mean = x.mean(axis=2)
    centred = x - mean[..., None]
    var = (centred**2).mean(axis=2)
    std = np.sqrt(var + EPS)
    parts = [
        mean,
        std,
        np.log(np.sqrt((x**2).mean(axis=2)) + EPS),
        np.log(x.max(axis=2) - x.min(axis=2) + EPS),
        (centred**3).mean(axis=2) / (std**3),
        np.log((centred**4).mean(axis=2) / (var**2 + EPS) + EPS),
    ]
    size = windows.shape[2]
    if size >= MIN_SPECTRAL_SIZE:
        power = np.abs(np.fft.rfft(centred * hann(size), axis=2)) ** 2  # [B, C, bins]
        bands = np.log(power @ band_matrix(size) + EPS)  # [B, C, bands]
        parts.append(bands.reshape(bands.shape[0], -1))
    return np.concatenate(parts, axis=1)


def front_end(g: GraphBuilder, window: str, size: int) -> str:
    """Graph of :func:`features`: ``[B, C, W]`` -> ``[B, F]``."""
    eps = g.const("eps", EPS)
    mean = g.op("ReduceMean", window, axes=[2], keepdims=0)
    centred = g.op("Sub", window, g.op("Unsqueeze", mean, g.axes(2)))
    square = g.op("Mul", centred, centred)
    var = g.op("ReduceMean", square, axes=[2], keepdims=0)
    std = g.op("Sqrt", g.op("Add", var, eps))

    def log(value: str) -> str:
        return g.op("Log", g.op("Add", value, eps))

    mean_square = g.op("ReduceMean", g.op("Mul", window, window), axes=[2], keepdims=0)
    ptp = g.op(
        "Sub",
        g.op("ReduceMax", window, axes=[2], keepdims=0),
        g.op("ReduceMin", window, axes=[2], keepdims=0),
    )
    third = g.op("ReduceMean", g.op("Mul", square, centred), axes=[2], keepdims=0)
    skew = g.op("Div", third, g.op("Mul", g.op("Mul", std, std), std))
    fourth = g.op("ReduceMean", g.op("Mul", square, square), axes=[2], keepdims=0)
    kurtosis = g.op("Div", fourth, g.op("Add", g.op("Mul", var, var), eps))
    parts = [mean, std, log(g.op("Sqrt", mean_square)), log(ptp), skew, log(kurtosis)]
    if size >= MIN_SPECTRAL_SIZE:
        windowed = g.op("Unsqueeze", g.op("Mul", centred, g.const("hann", hann(size))), g.axes(3))
        spectrum = g.op("DFT", windowed, onesided=1, axis=2)  # [B, C, bins, 2]
        power = g.op("ReduceSum", g.op("Mul", spectrum, spectrum), g.axes(3), keepdims=0)
        bands = log(g.op("MatMul", power, g.const("bands", band_matrix(size))))  # [B, C, K]
        parts.append(g.op("Flatten", bands, axis=1))
    return g.op("Concat", *parts, axis=1)
