"""A camera pipeline: frame -> motion gate -> letterbox -> detector (ORT) -> boxes -> tracker
-> object lifecycle, zones and counting lines -> filters -> events.

A parked car is one event: the tracker keeps its id, the lifecycle reports ``start`` once,
``update`` only when it moves or is seen better, and ``end`` when it is gone. A frame the
motion gate holds back costs no inference: nothing moved, so the last frame's detections
still hold and are fed to the tracker again (an object that left before the scene went
still keeps missing, and its track ends as usual).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from edge_agent.delivery.spool import PendingSample
from edge_agent.inference.postprocess import Detection, Letterboxer, decode_yolo
from edge_agent.inference.slot import LoadedModel
from edge_agent.pipelines.base import Pipeline
from edge_agent.pipelines.collect import Encoder, Kept, image_encoder, sample_meta
from edge_agent.pipelines.config import PipelineConfig, VisionConfig
from edge_agent.pipelines.filters import Decision
from edge_agent.pipelines.motion import MotionGate
from edge_agent.pipelines.privacy import PrivacyConfig, blur_boxes
from edge_agent.pipelines.thumbnails import thumbnail_jpeg
from edge_agent.pipelines.tracking.lifecycle import (
    LifecycleStep,
    ObjectDecision,
    ObjectLifecycle,
    Snapshot,
)
from edge_agent.sources.sample import Sample
from shared.errors import ConfigError
from shared.messages import Event, EventState, ModelRef, new_event_id
from shared.samples import ImageInfo, SampleDetection, SampleMeta

log = logging.getLogger(__name__)

Frame = npt.NDArray[np.uint8]
THUMBNAIL_IDS = 4096
"""Thumbnails whose sample id an object's later events may still name."""


class VisionPipeline(Pipeline):
    """One camera: its gate, detector, tracker and the events they make."""

    def _prepare(self, config: PipelineConfig) -> None:
        model = self.slot.current()
        if model.task != "detection":
            raise ConfigError(
                f"pipeline {self.name}: a camera source needs a detection model, "
                f"{model.ref.name} {model.ref.version} is an {model.task} model"
            )
        vision = config.vision or VisionConfig()
        self._score_threshold = vision.score_threshold
        self._iou_threshold = vision.iou_threshold
        self._privacy = config.privacy
        self._thumbnails = config.keeps_thumbnails  # none where no pixels may leave
        self._thumbnail_ids: OrderedDict[str, str] = OrderedDict()
        """A snapshot's name -> the id of the sample that holds it."""
        self.gate = MotionGate(vision.motion) if vision.motion.enabled else None
        self._letterbox = Letterboxer(model.input_hw)
        # Track ids start from the wall clock, so thumbnails of a restarted agent never
        # overwrite the previous run's.
        self.lifecycle = ObjectLifecycle(
            vision.tracking, self.name, first_id=int(self._clock() * 1000) % 10**12
        )
        self._last: list[Detection] = []
        self._last_seq = -1
        self._last_ts = 0.0
        self._objects = self._summary.signal("objects")
        self._occupancy: dict[str, int] = {}
        """Each zone's occupancy as last reported through the filters."""

    def process_sample(self, sample: Sample) -> list[Event]:
        frame: Frame = sample.data  # type: ignore[assignment]  # camera sources yield uint8
        return self.process_frame(frame, sample.seq, sample.ts)

    def process_frame(self, frame: Frame, seq: int, ts: float) -> list[Event]:
        """Gate, detect, track; return the events this frame makes. Raises ModelError."""
        counters = self.counters
        counters.samples_in += 1
        counters.raw_bytes += frame.nbytes
        self._last_seq, self._last_ts = seq, ts
        # One read of the slot per frame: a swap lands between two frames, and every event
        # of this frame names the model that saw it.
        model = self.slot.current()
        if self.gate is not None and not self.gate.check(frame):
            counters.gated += 1
            detections = self._last
        else:
            detections = self.detect(frame, model)
            self._last = detections
            self._objects.add(len(detections))
            if (shadow := self.shadow) is not None:  # read once: the updater may clear it
                best = max(detections, key=lambda d: d.score, default=None)
                shadow(frame, best.score if best else 0.0, best.label if best else "none", ts)
        step = self.lifecycle.step(detections, seq, ts)
        events = self._events(step, frame, model.ref)
        counters.events_out += len(events)
        if self.collector is not None:
            self._offer(frame, ts, model.ref, detections, events)
        if self.escalator is not None:  # the first unsure detection's crop (or the frame)
            linked = next((e.id for e in events if e.kind == "object"), None)
            self.escalator.offer_detections(
                frame, detections, ts, model.ref, linked, self.collector
            )
        return events

    def _sample_encoder(self, config: PipelineConfig) -> Encoder | None:
        if config.privacy.images == "never":
            return None  # no pixels leave this camera: nothing to collect
        return image_encoder(self.name, config.privacy)

    def _offer(
        self,
        frame: Frame,
        ts: float,
        ref: ModelRef,
        detections: list[Detection],
        events: list[Event],
    ) -> None:
        """Show the collector the frame: its best detection's score and label, and the first
        object event it starts."""
        assert self.collector is not None
        best = max(detections, key=lambda d: d.score, default=None)
        started = next((e.id for e in events if e.kind == "object" and e.state == "start"), None)
        self.collector.offer(
            frame,
            best.score if best is not None else 0.0,
            best.label if best is not None else "none",
            ts,
            ref,
            event_id=started,
            detections=detections,
        )

    def detect(self, frame: Frame, model: LoadedModel | None = None) -> list[Detection]:
        """One inference (with the slot's current model unless given): objects in frame pixels."""
        model = model if model is not None else self.slot.current()
        tensor, geometry = self._letterbox(frame)
        output = self._timed(model, tensor)[0]
        self.counters.inferences += 1
        return decode_yolo(
            output,
            model.labels,
            geometry,
            score_threshold=self._score_threshold,
            iou_threshold=self._iou_threshold,
        )

    def close(self) -> list[Event]:
        step = self.lifecycle.close(max(self._last_seq, 0), self._last_ts)
        events = self._events(step, None, self.slot.current().ref)
        self.counters.events_out += len(events)
        return events

    def _events(self, step: LifecycleStep, frame: Frame | None, ref: ModelRef) -> list[Event]:
        events: list[Event] = []
        offer = self.filters.offer
        thumbnails = []
        if frame is not None and self._thumbnails and self._spool is not None and self._agent_id:
            thumbnails = [s for s in step.snapshots if self._name_thumbnail(s)]
        for decision in step.objects:
            passed = offer(
                str(decision.track_id),
                decision.state,
                decision.ts,
                decision.seq,
                decision.score,
                decision.label,
            )
            if passed is not None:
                thumbnail = self._thumbnail_ids.get(decision.thumbnail or "")
                events.append(_object_event(self.name, decision, passed, ref, thumbnail))
        if thumbnails:
            assert frame is not None
            by_track = {e.attributes.get("track_id"): e.id for e in events}
            for snapshot in thumbnails:
                self._keep_thumbnail(frame, snapshot, ref, by_track.get(snapshot.track_id))
        for heartbeat in self.filters.tick(self._last_ts, max(self._last_seq, 0)):
            events.append(_heartbeat_event(self.name, heartbeat, ref))
        events += self._occupancy_events(step, ref)
        for zone in step.zones:
            events.append(
                _instant(
                    self.name, "zone", zone.label, 1.0, zone.ts, zone.seq, ref,
                    {"zone": zone.zone, "transition": zone.state, "track_id": zone.track_id,
                     "occupancy": zone.occupancy},
                )
            )  # fmt: skip
        for crossing in step.crossings:
            events.append(
                _instant(
                    self.name, "line_crossing", crossing.label, 1.0, crossing.ts, crossing.seq,
                    ref, {"line": crossing.line, "direction": crossing.direction,
                          "track_id": crossing.track_id, "count": crossing.count},
                )
            )  # fmt: skip
        return events

    def _occupancy_events(self, step: LifecycleStep, ref: ModelRef) -> list[Event]:
        """A zone's occupancy as an incident the filters see like any other: it starts when
        the zone fills, updates when the count changes and ends when it empties (kind
        ``occupancy``, label the zone, score the count). So a chain's report stages (a
        minimum interval, a rate limit, dedup) debounce a queue that flickers between 4
        and 5, and an action can wait for ``occupancy >= 5``."""
        latest: dict[str, tuple[int, float, int]] = {}
        for zone in step.zones:
            latest[zone.zone] = (zone.occupancy, zone.ts, zone.seq)
        events: list[Event] = []
        for name, (count, ts, seq) in latest.items():
            before = self._occupancy.get(name, 0)
            if count == before:
                continue
            self._occupancy[name] = count
            state: EventState = "start" if before == 0 else "end" if count == 0 else "update"
            passed = self.filters.offer(f"zone:{name}", state, ts, seq, float(count), name)
            if passed is not None:
                attributes: dict[str, float | int | str | bool] = {
                    "zone": name,
                    "occupancy": count,
                }
                events.append(
                    _instant(
                        self.name, "occupancy", name, float(count), ts, seq, ref, attributes,
                        state=passed.state,
                    )
                )  # fmt: skip
        return events

    def _name_thumbnail(self, snapshot: Snapshot) -> bool:
        """Give a snapshot the id of the sample that will hold it, if it may leave."""
        keep = self._privacy.keep_labels
        if keep and snapshot.label not in keep:
            return False
        self._thumbnail_ids[snapshot.path] = new_event_id()
        while len(self._thumbnail_ids) > THUMBNAIL_IDS:
            self._thumbnail_ids.popitem(last=False)
        return True

    def _keep_thumbnail(
        self, frame: Frame, snapshot: Snapshot, ref: ModelRef, event_id: str | None
    ) -> None:
        """Hand the object's better crop to the spool (encoded and blurred off the hot path),
        as the sample its events name as ``thumbnail``, linked to this frame's event."""
        spool, agent_id, name, privacy = self._spool, self._agent_id, self.name, self._privacy
        assert spool is not None
        assert agent_id is not None
        sample_id = self._thumbnail_ids[snapshot.path]
        blurred = [d.box for d in self._last if d.label in privacy.blur]
        kept = Kept(
            frame.copy(), snapshot.score, snapshot.label, self._last_ts, "event", ref, event_id
        )

        def build() -> list[tuple[SampleMeta, bytes]]:
            return [thumbnail_sample(kept, snapshot, blurred, privacy, agent_id, name, sample_id)]

        spool.submit(PendingSample(name, build))


def thumbnail_sample(
    kept: Kept,
    snapshot: Snapshot,
    blurred: list[tuple[float, float, float, float]],
    privacy: PrivacyConfig,
    agent_id: str,
    pipeline: str,
    sample_id: str,
) -> tuple[SampleMeta, bytes]:
    """A thumbnail as a sample: the object's crop, its ``blur`` boxes blurred first."""
    frame = blur_boxes(kept.data, blurred) if blurred else kept.data
    blob, (left, top, right, bottom), (width, height) = thumbnail_jpeg(frame, snapshot.box)
    info = ImageInfo(
        width=width,
        height=height,
        region="crop",
        box=(float(left), float(top), float(right), float(bottom)),
        detections=[SampleDetection(label=kept.label, score=kept.score, box=snapshot.box)],
        blurred=len(blurred),
    )
    meta = sample_meta(
        kept, agent_id, pipeline, blob, sample_id, kind="image", image=info,
        privacy=privacy.policy(),
    )  # fmt: skip
    return meta, blob


def _object_event(
    pipeline: str, decision: ObjectDecision, passed: Decision, ref: ModelRef, thumbnail: str | None
) -> Event:
    x1, y1, x2, y2 = decision.box
    attributes: dict[str, float | int | str | bool] = {
        "track_id": decision.track_id,
        "x1": round(x1, 1),
        "y1": round(y1, 1),
        "x2": round(x2, 1),
        "y2": round(y2, 1),
        "first_seen": round(decision.first_seen, 3),
        "duration_s": round(decision.last_seen - decision.first_seen, 3),
    }
    if thumbnail is not None:
        attributes["thumbnail"] = thumbnail  # the id of the sample that holds it
    return Event(
        id=new_event_id(),
        pipeline=pipeline,
        kind="object",
        state=passed.state,
        label=passed.label,
        score=round(passed.score, 6),
        ts=datetime.fromtimestamp(decision.ts, UTC),
        seq=decision.seq,
        model=ref,
        attributes=attributes,
    )


def _heartbeat_event(pipeline: str, decision: Decision, ref: ModelRef) -> Event:
    """An ``update`` the filters owe an open object (``report_interval`` with ``max_s``)."""
    return _instant(
        pipeline, "object", decision.label, decision.score, decision.ts, decision.seq, ref,
        {"track_id": decision.key, "duration_s": round(decision.ts - decision.start_ts, 3)},
        state="update",
    )  # fmt: skip


def _instant(
    pipeline: str,
    kind: str,
    label: str,
    score: float,
    ts: float,
    seq: int,
    ref: ModelRef,
    attributes: dict[str, float | int | str | bool],
    *,
    state: str = "instant",
) -> Event:
    return Event.model_validate(
        {
            "id": new_event_id(),
            "pipeline": pipeline,
            "kind": kind,
            "state": state,
            "label": label,
            "score": round(score, 6),
            "ts": datetime.fromtimestamp(ts, UTC),
            "seq": seq,
            "model": ref,
            "attributes": attributes,
        }
    )
