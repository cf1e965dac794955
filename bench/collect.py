"""The cost of collection on the edge: the sensor pipeline with ``collect:`` on against the
same pipeline without it, window by window in the same run.

Collection decides in O(1) on the hot path and hands a copy of a kept window to the spool's
writer thread through a bounded queue; the writer (running, in its own thread, as in the
agent) encodes and writes the ``.npy`` files. The policy is a busy one: every event's input
with two windows before and after it, a band around the threshold, a 2 % random share, and
caps that let most of that through.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

import models
from bench.edge import test_windows
from bench.result import Goal, Result
from edge_agent.delivery.spool import Spool
from edge_agent.inference.slot import load_slot
from edge_agent.pipelines.config import PipelineConfig
from edge_agent.pipelines.sensor import SensorPipeline

WINDOWS = 1500
ROUNDS = 9
COLLECT = {
    "random_share": 0.02,
    "band": [0.3, 0.7],
    "before": 2,
    "after": 2,
    "max_per_minute": 120,
    "max_per_day": 1_000_000,
    "seed": 1,
}


def _pipeline(manifest: Path, threads: int, collect: bool, spool: Spool) -> SensorPipeline:
    config = PipelineConfig.model_validate(
        {
            "name": "bench",
            "source": {"type": "simulated_vibration", "seed": 1},
            "model": {"name": "vibration-anomaly", "manifest": str(manifest)},
            "runtime": {"intra_op_threads": threads, "inter_op_threads": 1},
            **({"collect": COLLECT} if collect else {}),
        }
    )
    return SensorPipeline(
        config, load_slot(config.model, config.runtime), agent_id="bench-gw", spool=spool
    )


def bench_collect(threads: int = 1) -> list[Result]:
    manifest = Path(models.__file__).resolve().parent / "manifest.json"
    workdir = Path(tempfile.mkdtemp(prefix="aiot-bench-collect-"))
    spool = Spool(workdir / "spool", max_bytes=256 << 20, max_files=100_000, queue_size=256)
    spool.start()
    plain = _pipeline(manifest, threads, False, spool)
    collecting = _pipeline(manifest, threads, True, spool)
    assert collecting.collector is not None
    rows = [w[np.newaxis] for w in test_windows(WINDOWS, faults=True)]

    def paired() -> tuple[float, float]:
        """Alternate window by window, and which goes first, so drift on a shared machine and
        a warm cache favour neither side."""
        clock = time.perf_counter
        plain_s = collect_s = 0.0
        for i, row in enumerate(rows):
            first, second = (plain, collecting) if i % 2 else (collecting, plain)
            t0 = clock()
            first.process_windows(row)
            t1 = clock()
            second.process_windows(row)
            t2 = clock()
            plain_s += t1 - t0 if first is plain else t2 - t1
            collect_s += t2 - t1 if first is plain else t1 - t0
        return len(rows) / plain_s, len(rows) / collect_s

    paired()  # warm-up
    plain_rates, collect_rates, ratios = [], [], []
    for _ in range(ROUNDS):
        p, c = paired()
        plain_rates.append(p)
        collect_rates.append(c)
        ratios.append(c / p)
    spool.stop()
    kept = collecting.collector.counters.kept
    return [
        Result(
            name="edge pipeline with collection on",
            value=float(np.median(collect_rates)),
            unit="windows/s",
            baseline=float(np.median(plain_rates)),
            baseline_name="the same pipeline, collection off",
            goal=Goal.ratio(">=", 0.95),
            details={
                "windows": WINDOWS,
                "rounds": ROUNDS,
                "ort_threads": threads,
                **{f"kept_{reason}": count for reason, count in sorted(kept.items())},
                "capped": collecting.collector.counters.capped,
                "spool_written": spool.counters.written,
                "spool_queue_full": spool.counters.queue_full,
                "median_paired_ratio": round(float(np.median(ratios)), 3),
            },
        )
    ]
