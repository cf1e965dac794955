"""A camera pipeline reads its model slot once per frame: a swap that lands in the middle of a
frame changes nothing for that frame, and every event names the model that saw the frame."""

from __future__ import annotations

import threading
from pathlib import Path

import models
from edge_agent.inference.slot import LoadedModel, ModelSlot, load_slot
from edge_agent.pipelines.config import PipelineConfig
from edge_agent.pipelines.vision import VisionPipeline
from shared.messages import Event

MANIFEST = Path(models.__file__).resolve().parent / "manifest.json"


class SwapAfterRead(ModelSlot):
    """Once armed, swaps to ``then`` right after the next read: the worst moment for a swap."""

    def __init__(self, model: LoadedModel, then: LoadedModel) -> None:
        super().__init__(model)
        self._then = then
        self.armed = False

    def current(self) -> LoadedModel:
        model = super().current()
        if self.armed:
            self.armed = False
            self.swap(self._then)
        return model


def gate_config() -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "name": "gate",
            "source": {
                "type": "synthetic_scene", "fps": 10, "speed": 0, "seed": 3, "duration_s": 3,
                "actors": [{"label": "car", "enter_s": 0, "start_xy": [100, 220],
                            "velocity": [40, 0], "size": [90, 45]}],
            },
            "model": {"name": "scene-detector", "manifest": str(MANIFEST)},
            "vision": {"motion": {"enabled": False}},
            "filters": [],
        }
    )  # fmt: skip


def test_events_of_a_frame_name_the_model_that_saw_it() -> None:
    config = gate_config()
    plain = VisionPipeline(config, load_slot(config.model, config.runtime))
    first = next(s.seq for s in plain.source.samples(threading.Event()) if plain.process_sample(s))
    old = load_slot(config.model, config.runtime).current()
    new_ref = old.ref.model_copy(update={"version": "9.9.9"})
    new = LoadedModel(
        new_ref, old.runtime, old.labels, old.normal_index, old.window, old.fault_indices,
        task=old.task, input_hw=old.input_hw,
    )  # fmt: skip
    slot = SwapAfterRead(old, new)
    pipeline = VisionPipeline(config, slot)
    events: list[Event] = []
    for sample in pipeline.source.samples(threading.Event()):
        slot.armed = sample.seq == first
        frame_events = pipeline.process_sample(sample)
        if sample.seq == first:
            # The swap landed while this frame was processed: it still names the old model.
            assert frame_events
            assert {e.model for e in frame_events} == {old.ref}
        events += frame_events
    later = [e for e in events if e.seq > first]
    assert later
    assert {e.model for e in later} == {new_ref}
