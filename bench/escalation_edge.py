"""The cost of escalation on the edge: the sensor pipeline with ``escalate:`` on against the
same pipeline without it, window by window in the same run.

The band is set from the windows' own scores so that 1 % of them fall in it (a realistic
share of unsure results), with a budget that lets every one through. Outside the band the
hot path pays two comparisons; inside, a token, a copy of the window and a queue put. The
agent's escalation thread runs, as in the agent: it encodes each escalated window as
``.npy``, wraps it in an ``Escalation`` and stores it in a real outbox (SQLite).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

import models
from bench.edge import test_windows
from bench.result import Goal, Result
from edge_agent.delivery.escalation import EscalationDesk
from edge_agent.delivery.outbox import Outbox
from edge_agent.inference.slot import load_slot
from edge_agent.pipelines.config import PipelineConfig
from edge_agent.pipelines.sensor import SensorPipeline

WINDOWS = 1500
ROUNDS = 9
SHARE = 0.01
"""The share of windows whose score lies in the band."""


def _pipeline(
    manifest: Path, threads: int, band: tuple[float, float] | None, desk: EscalationDesk
) -> SensorPipeline:
    escalate = {"band": band, "budget_per_min": 60_000, "queue_max": 100_000}
    config = PipelineConfig.model_validate(
        {
            "name": "bench",
            "source": {"type": "simulated_vibration", "seed": 1},
            "model": {"name": "vibration-anomaly", "manifest": str(manifest)},
            "runtime": {"intra_op_threads": threads, "inter_op_threads": 1},
            **({"escalate": escalate} if band is not None else {}),
        }
    )
    return SensorPipeline(
        config, load_slot(config.model, config.runtime), agent_id="bench-gw", escalations=desk
    )


def _band(pipeline: SensorPipeline, rows: list[np.ndarray]) -> tuple[float, float]:
    """A band holding SHARE of the windows' scores, taken from the middle of the unsure ones
    (above the healthy mass, below the sure faults)."""
    model = pipeline.slot.current()
    probabilities = model.runtime.run(np.concatenate(rows).astype(np.float32))
    scores = np.sort(1.0 - probabilities[:, model.normal_index])
    width = max(1, int(len(scores) * SHARE))
    middle = int(np.searchsorted(scores, 0.5))
    first = min(max(middle - width // 2, 0), len(scores) - width)
    return float(scores[first]), float(scores[first + width - 1])


def _paired(
    plain: SensorPipeline, escalating: SensorPipeline, rows: list[np.ndarray]
) -> tuple[float, float]:
    """Alternate window by window, and which goes first, so drift on a shared machine and a
    warm cache favour neither side."""
    clock = time.perf_counter
    plain_s = escalate_s = 0.0
    for i, row in enumerate(rows):
        first, second = (plain, escalating) if i % 2 else (escalating, plain)
        t0 = clock()
        first.process_windows(row)
        t1 = clock()
        second.process_windows(row)
        t2 = clock()
        plain_s += t1 - t0 if first is plain else t2 - t1
        escalate_s += t2 - t1 if first is plain else t1 - t0
    return len(rows) / plain_s, len(rows) / escalate_s


def bench_escalation_edge(threads: int = 1) -> list[Result]:
    manifest = Path(models.__file__).resolve().parent / "manifest.json"
    workdir = Path(tempfile.mkdtemp(prefix="aiot-bench-escalation-"))
    outbox = Outbox(workdir / "outbox.db", max_bytes=1 << 30, max_age_s=86400)
    desk = EscalationDesk("bench-gw", outbox, lambda: True)
    desk.start()
    rows = [w[np.newaxis] for w in test_windows(WINDOWS, faults=True)]
    plain = _pipeline(manifest, threads, None, desk)
    band = _band(plain, rows)
    escalating = _pipeline(manifest, threads, band, desk)
    escalator = escalating.escalator
    assert escalator is not None

    _paired(plain, escalating, rows)  # warm-up
    plain_rates, escalate_rates, ratios = [], [], []
    for _ in range(ROUNDS):
        p, e = _paired(plain, escalating, rows)
        plain_rates.append(p)
        escalate_rates.append(e)
        ratios.append(e / p)
    desk.stop()
    c = escalator.counters
    offered = c.escalated + c.dropped_budget + c.dropped_offline + sum(c.refused.values())
    depth = outbox.depth()
    outbox.close()
    return [
        Result(
            name="edge pipeline with escalation on (1% in band)",
            value=float(np.median(escalate_rates)),
            unit="windows/s",
            baseline=float(np.median(plain_rates)),
            baseline_name="the same pipeline, escalation off",
            goal=Goal.ratio(">=", 0.95),
            details={
                "windows": WINDOWS,
                "rounds": ROUNDS,
                "ort_threads": threads,
                "band": f"[{band[0]:.6f}, {band[1]:.6f}]",
                "in_band_share": round(offered / (WINDOWS * (ROUNDS + 1)), 4),
                "escalated": c.escalated,
                "dropped": c.dropped_budget + c.dropped_offline,
                "outbox_depth": depth,
                "median_paired_ratio": round(float(np.median(ratios)), 3),
            },
        )
    ]
