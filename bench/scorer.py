"""The edge pipeline with a score model against a bare ``session.run``, in the same run.

``SensorPipeline.process_windows`` on ``[C, W]`` windows with a model learnt by ``fit_normal``
(a ``score`` task), its events handed to the outbox's writer as the agent's pipelines hand
them, against a bare ``session.run`` on the same windows with the same session options,
alternated window by window. Two cases: a healthy machine, and a fault every 100 windows.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from bench.edge import bare_session, min_of_rounds_ratio, paired_rates
from bench.result import Goal, Result
from bench.sources import F32, signals, stride_windows
from edge_agent.delivery.outbox import Outbox
from edge_agent.delivery.outbox_writer import OutboxWriter
from edge_agent.inference.slot import load_slot
from edge_agent.pipelines.config import PipelineConfig
from edge_agent.pipelines.sensor import SensorPipeline
from models.normal import FitResult, fit_normal
from models.normal_files import write_model
from models.window_features import WindowSpec

SCORER_CHANNELS, SCORER_RATE_HZ = ("x", "y", "z"), 100.0
SCORER_SIZE, SCORER_HOP = 64, 32
SCORER_WINDOWS, SCORER_ROUNDS = 5000, 5


def scorer_config(workdir: Path) -> tuple[PipelineConfig, FitResult]:
    """A pipeline on a model ``fit_normal`` learnt from generated normal readings of three
    channels (the source is a CSV of the same readings; the benchmark feeds windows itself)."""
    normal = signals(20_000, len(SCORER_CHANNELS), seed=3, rate_hz=SCORER_RATE_HZ)
    spec = WindowSpec(SCORER_CHANNELS, SCORER_SIZE, SCORER_HOP, rate_hz=SCORER_RATE_HZ)
    write_model(fit := fit_normal(normal, spec, name="bench-scorer", version="1.0.0"), workdir)
    readings = workdir / "normal.csv"
    np.savetxt(readings, normal, fmt="%.6f", delimiter=",", header=",".join(SCORER_CHANNELS),
               comments="")  # fmt: skip
    return PipelineConfig.model_validate({
        "name": "bench-scorer",
        "source": {"type": "csv", "path": str(readings), "rate_hz": SCORER_RATE_HZ, "speed": 0},
        "window": {"size": SCORER_SIZE, "hop": SCORER_HOP},
        "model": {"name": "bench-scorer", "manifest": str(workdir / "manifest.json")},
        "runtime": {"intra_op_threads": 1, "inter_op_threads": 1},
    }), fit  # fmt: skip


def scorer_windows(*, faults: bool) -> list[F32]:
    """``[C, W]`` windows of the running machine, as the windowing stage hands them over;
    with ``faults``, a 20-window episode every 100 windows in which one channel swings three
    times as far (two events each: far busier than a real machine, the harsh case)."""
    rows = SCORER_SIZE + (SCORER_WINDOWS - 1) * SCORER_HOP
    values = signals(rows, len(SCORER_CHANNELS), seed=4, rate_hz=SCORER_RATE_HZ)
    windows = stride_windows(values, SCORER_SIZE, SCORER_HOP)
    for start in range(40, SCORER_WINDOWS, 100) if faults else ():
        windows[start : start + 20, start % len(SCORER_CHANNELS)] *= 3.0
    return list(windows)


def bench_scorer() -> list[Result]:
    workdir = Path(tempfile.mkdtemp(prefix="aiot-bench-scorer-"))
    config, fit = scorer_config(workdir / "models")
    session = bare_session(workdir / "models" / "bench-scorer-1.0.0.onnx", 1)
    outbox = Outbox(workdir / "outbox.db", max_bytes=1 << 30, max_age_s=1e9, sync="normal")
    writer = OutboxWriter(outbox)  # what the agent's pipelines hand their events to
    writer.start()
    results = []
    for faults, case in ((True, "a fault every 100 windows"), (False, "healthy machine")):
        pipeline = SensorPipeline(config, load_slot(config.model, config.runtime))
        windows = scorer_windows(faults=faults)
        paired_rates(pipeline, session, windows, writer)  # warm-up
        rounds = [paired_rates(pipeline, session, windows, writer) for _ in range(SCORER_ROUNDS)]
        ratios = [r.pipe_rate / r.bare_rate for r in rounds]
        results.append(Result(
            name=f"edge pipeline, score model ({fit.kind}, [3, 64] windows), {case}",
            value=float(np.median([r.pipe_rate for r in rounds])),
            unit="windows/s",
            baseline=float(np.median([r.bare_rate for r in rounds])),
            baseline_name="bare session.run",
            goal=Goal.ratio(">=", 0.9),
            details={"windows": SCORER_WINDOWS, "rounds": SCORER_ROUNDS, "ort_threads": 1,
                     "provider": pipeline.slot.current().runtime.provider,
                     "fit_latency_ms": round(fit.latency_ms, 4),
                     "events_per_round": rounds[-1].events,
                     "median_paired_ratio": round(float(np.median(ratios)), 3),
                     "min_of_rounds_ratio": round(min_of_rounds_ratio(rounds), 3)},
        ))  # fmt: skip
    writer.close()
    outbox.close()
    return results
