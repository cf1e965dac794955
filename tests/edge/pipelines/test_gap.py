"""``Pipeline.wait_for_gap``: the updater opens a new session right after a sample, while the
pipeline waits for its next one (opening a session holds the GIL for milliseconds)."""

from __future__ import annotations

import threading
from pathlib import Path

from edge_agent.delivery.outbox import Outbox
from edge_agent.delivery.outbox_writer import OutboxWriter
from edge_agent.inference.config import RuntimeConfig
from edge_agent.inference.slot import load_slot
from edge_agent.pipelines.sensor import SensorPipeline
from tests.edge.conftest import AgentConfigFactory


def test_a_running_pipeline_gives_a_gap_after_each_sample_and_a_stopped_one_none(
    agent_config: AgentConfigFactory, tmp_path: Path
) -> None:
    # 50x real time: a window every 3.2 ms, the run lasts 0.6 s.
    p = agent_config(speed=50.0, duration_s=30.0).pipelines[0]
    pipeline = SensorPipeline(p, load_slot(p.model, RuntimeConfig()))
    assert not pipeline.wait_for_gap(0.05), "no sample comes from a pipeline that is not running"
    outbox = Outbox(tmp_path / "o.db", max_bytes=10**9, max_age_s=1e12)
    stop = threading.Event()
    with OutboxWriter(outbox) as writer:
        run = threading.Thread(target=pipeline.run, args=(writer, stop))
        run.start()
        try:
            gaps = [pipeline.wait_for_gap(5.0) for _ in range(5)]
            assert gaps == [True] * 5
            assert pipeline.counters.samples_in >= 5, "each gap follows a sample of its own"
        finally:
            stop.set()
            run.join(10)
    assert not run.is_alive()
    assert not pipeline.wait_for_gap(0.05)
    outbox.close()
