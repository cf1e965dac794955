"""Smart traffic on the real detector: a queue in a zone reaching N switches a signal (a
local action whose payload has the count), and crossings are counted by line and direction.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from edge_agent.delivery.action_workers import Actions
from edge_agent.inference.slot import load_slot
from edge_agent.pipelines.config import PipelineConfig
from edge_agent.pipelines.vision import VisionPipeline
from shared.messages import Event
from tests.integration.test_vision import MANIFEST, scene

pytestmark = pytest.mark.integration

QUEUE_AT = 3
LANE = {"name": "queue-a", "polygon": [[360, 180], [640, 180], [640, 300], [360, 300]]}
STOP_LINE = {"name": "stop-line", "a": [340, 0], "b": [340, 360]}
# Three cars drive in from the right and stop one behind the other in the lane; a fourth
# passes through later the other way, below the lane, crossing the stop line.
QUEUE = [
    {"label": "car", "enter_s": 1 + 3 * i, "start_xy": [700, 240], "velocity": [-80, 0],
     "size": [90, 45], "pauses": [[1 + 3 * i + (700 - (400 + 105 * i)) / 80, 40]]}
    for i in range(QUEUE_AT)
]  # fmt: skip
PASSING = {"label": "car", "enter_s": 20, "start_xy": [-60, 290], "velocity": [90, 0],
           "size": [90, 45]}  # fmt: skip
SIGNAL = "import json, os, sys; open(sys.argv[1], 'a').write(os.environ['AIOT_EVENT_JSON'] + '\\n')"


def test_a_queue_of_n_in_a_zone_switches_the_signal_with_the_count(tmp_path: Path) -> None:
    signal = tmp_path / "signal.jsonl"
    config = PipelineConfig.model_validate(
        {
            "name": "junction",
            "source": scene([*QUEUE, PASSING], 45),
            "model": {"name": "scene-detector", "manifest": str(MANIFEST)},
            "vision": {"tracking": {"zones": [LANE], "lines": [STOP_LINE]}},
            "actions": [
                {"type": "command", "argv": [sys.executable, "-c", SIGNAL, str(signal)],
                 "on": ["instant"], "kinds": ["zone"], "zones": ["queue-a"],
                 "when": f"occupancy >= {QUEUE_AT}"},
            ],
        }
    )  # fmt: skip
    actions = Actions("a1", {"junction": config.actions}, CollectorRegistry())
    pipeline = VisionPipeline(config, load_slot(config.model, config.runtime), actions=actions)
    actions.start()
    events: list[Event] = []
    try:
        for sample in pipeline.source.samples(threading.Event()):
            found = pipeline.process_sample(sample)
            actions.submit(found)
            events += found
        events += pipeline.close()
    finally:
        actions.stop(grace_s=30)
    zone_events = [e for e in events if e.kind == "zone"]
    assert max(int(e.attributes["occupancy"]) for e in zone_events) == QUEUE_AT
    fired: list[dict[str, Any]] = [json.loads(line) for line in signal.read_text().splitlines()]
    assert fired, "the signal never switched"
    first = fired[0]
    assert first["kind"] == "zone"
    assert first["attributes"]["zone"] == "queue-a"
    assert first["attributes"]["occupancy"] == QUEUE_AT
    assert all(f["attributes"]["occupancy"] >= QUEUE_AT for f in fired)
    # Only the passing car crosses the stop line (the queue waits before it). Directions are
    # relative to the line drawn from a to b: this line points down the frame, so a car
    # driving to the right of the frame crosses it from its right side to its left.
    # The occupancy is one incident through the filters: it starts when the lane fills,
    # updates on each change and ends when the lane empties (the end of the scene here).
    occupancy = [(e.state, int(e.score)) for e in events if e.kind == "occupancy"]
    assert occupancy[0] == ("start", 1)
    assert ("update", QUEUE_AT) in occupancy
    assert occupancy[-1] == ("end", 0)
    crossings = [e for e in events if e.kind == "line_crossing"]
    assert [
        (e.attributes["line"], e.attributes["direction"], e.attributes["count"]) for e in crossings
    ] == [("stop-line", "right_to_left", 1)]
