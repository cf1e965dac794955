"""The object event lifecycle: tracks become a few decisions, for one pipeline. Pure logic.

An operator wants "a car arrived at 10:15, stayed 3 minutes, left", not a detection per
frame. ``ObjectLifecycle`` feeds the tracker (``tracker.py``) and turns its tracks into
decisions: ``start`` when a track is confirmed, ``update`` only when the object moved or its
score improved notably (a parked car produces none), ``end`` when the track is lost; plus
zone enter/exit and counting-line crossings (``geometry.py``). Each decision names the frame
to keep as the object's thumbnail; the pipeline writes it
(``edge_agent.pipelines.thumbnails``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from edge_agent.config_types import StrictConfig
from edge_agent.inference.postprocess import BoxXYXY, Detection
from edge_agent.pipelines.tracking.geometry import (
    CountingLine,
    CountingLineConfig,
    Direction,
    Point,
    Zone,
    ZoneConfig,
    bottom_centre,
    centre,
)
from edge_agent.pipelines.tracking.tracker import IouTracker, ObjectTrack


class TrackingConfig(StrictConfig):
    """How detections become tracks, and tracks become events."""

    iou_threshold: float = Field(default=0.3, gt=0, lt=1, description="least IoU to match")
    min_hits: int = Field(default=3, ge=1, description="matched frames before a track starts")
    max_age: int = Field(default=10, ge=1, description="missed frames before a track ends")
    predict: bool = Field(default=True, description="constant-velocity prediction")
    min_move_px: float = Field(default=30.0, gt=0, description="movement that is an update")
    min_score_gain: float = Field(default=0.1, gt=0, description="score gain that is an update")
    thumbnail_min_gain: float = Field(
        default=0.05, ge=0, description="score gain that replaces the thumbnail"
    )
    zones: list[ZoneConfig] = Field(default_factory=list)
    lines: list[CountingLineConfig] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ObjectDecision:
    """An object event: ``start`` (confirmed), ``update`` (moved / better score), ``end``."""

    state: Literal["start", "update", "end"]
    track_id: int
    label: str
    score: float
    """The best score seen so far."""
    box: BoxXYXY
    """The box at the best score."""
    seq: int
    ts: float
    """The frame the decision is made at."""
    first_seen: float
    last_seen: float
    first_seq: int
    thumbnail: str | None
    """The frame kept as the object's picture, relative to the thumbnail directory."""


@dataclass(frozen=True, slots=True)
class ZoneDecision:
    """A tracked object entered or left a zone."""

    zone: str
    state: Literal["enter", "exit"]
    track_id: int
    label: str
    seq: int
    ts: float
    occupancy: int
    """Objects in the zone after this change."""


@dataclass(frozen=True, slots=True)
class LineCrossing:
    """A tracked object crossed a counting line."""

    line: str
    direction: Direction
    track_id: int
    label: str
    seq: int
    ts: float
    count: int
    """Crossings in this direction so far, this one included."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Write the current frame's crop of ``box`` to ``path``: a better thumbnail."""

    track_id: int
    box: BoxXYXY
    path: str
    label: str = ""
    score: float = 0.0


@dataclass(slots=True)
class LifecycleStep:
    """Everything one frame decided; the pipeline writes snapshots, then emits events."""

    objects: list[ObjectDecision] = field(default_factory=list)
    zones: list[ZoneDecision] = field(default_factory=list)
    crossings: list[LineCrossing] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)


@dataclass(slots=True)
class _Reported:
    """What the last decision about a track said, to tell whether a new one is worth it."""

    centre: Point
    score: float
    thumbnail: str | None = None
    thumbnail_score: float = -1.0
    pending: list[tuple[CountingLine, Direction, int, float]] = field(default_factory=list)
    """Crossings of a tentative track: (line, direction, seq, ts), counted at its start."""


class ObjectLifecycle:
    """Tracker + per-track event decisions + zones + counting lines, for one pipeline."""

    def __init__(
        self,
        config: TrackingConfig,
        pipeline: str,
        *,
        thumbnail_template: str = "{pipeline}/{track_id}/{seq}.jpg",
        first_id: int = 1,
    ) -> None:
        self.config = config
        self.pipeline = pipeline
        self.tracker = IouTracker(
            iou_threshold=config.iou_threshold,
            min_hits=config.min_hits,
            max_age=config.max_age,
            predict=config.predict,
            first_id=first_id,
        )
        self.zones = [Zone(z) for z in config.zones]
        self.lines = [CountingLine(c) for c in config.lines]
        self._template = thumbnail_template
        self._reported: dict[int, _Reported] = {}

    def step(self, detections: list[Detection], seq: int, ts: float) -> LifecycleStep:
        """Feed one processed frame's detections."""
        tracker_step = self.tracker.update(detections, seq, ts)
        out = LifecycleStep()
        for track in tracker_step.ended:
            self._end(track, seq, ts, out)
        for track in tracker_step.dropped:
            self._forget(track.id)
        started = {t.id for t in tracker_step.started}
        for track in tracker_step.matched:
            self._cross_lines(track, seq, ts, out)
            if track.id in started:
                self._start(track, seq, ts, out)
            elif track.confirmed:
                self._maybe_update(track, seq, ts, out)
            if track.confirmed:
                self._zones(track, seq, ts, out)
        return out

    def close(self, seq: int, ts: float) -> LifecycleStep:
        """End every open object (the stream ends or the agent stops)."""
        out = LifecycleStep()
        step = self.tracker.close()
        for track in step.ended:
            self._end(track, seq, ts, out)
        for track in step.dropped:
            self._forget(track.id)
        return out

    def _start(self, track: ObjectTrack, seq: int, ts: float, out: LifecycleStep) -> None:
        reported = self._reported.setdefault(track.id, _Reported(centre(track.box), 0.0))
        reported.centre, reported.score = centre(track.box), track.best_score
        self._snapshot(track, seq, out, force=True)
        out.objects.append(self._decision("start", track, seq, ts))
        for line, direction, at_seq, at_ts in reported.pending:
            out.crossings.append(self._crossing(line, direction, track, at_seq, at_ts))
        reported.pending.clear()

    def _maybe_update(self, track: ObjectTrack, seq: int, ts: float, out: LifecycleStep) -> None:
        reported = self._reported[track.id]
        self._snapshot(track, seq, out, force=False)
        cx, cy = centre(track.box)
        moved = math.hypot(cx - reported.centre[0], cy - reported.centre[1])
        better = track.best_score - reported.score >= self.config.min_score_gain
        if moved > self.config.min_move_px or better:
            reported.centre, reported.score = (cx, cy), track.best_score
            out.objects.append(self._decision("update", track, seq, ts))

    def _end(self, track: ObjectTrack, seq: int, ts: float, out: LifecycleStep) -> None:
        out.objects.append(self._decision("end", track, seq, ts))
        for zone in self.zones:
            if zone.leave(track.id):
                out.zones.append(
                    ZoneDecision(zone.name, "exit", track.id, track.label, seq, ts, zone.occupancy)
                )
        self._forget(track.id)

    def _forget(self, track_id: int) -> None:
        self._reported.pop(track_id, None)
        for line in self.lines:
            line.forget(track_id)

    def _snapshot(self, track: ObjectTrack, seq: int, out: LifecycleStep, *, force: bool) -> None:
        """A new thumbnail when this frame shows the object at a clearly better score."""
        reported = self._reported[track.id]
        gain = track.score - reported.thumbnail_score
        if not force and (track.best_seq != seq or gain < self.config.thumbnail_min_gain):
            return
        path = self._template.format(pipeline=self.pipeline, track_id=track.id, seq=seq)
        reported.thumbnail, reported.thumbnail_score = path, track.score
        out.snapshots.append(Snapshot(track.id, track.box, path, track.label, track.score))

    def _zones(self, track: ObjectTrack, seq: int, ts: float, out: LifecycleStep) -> None:
        for zone in self.zones:
            change = zone.update(track.id, track.label, track.box)
            if change is not None:
                out.zones.append(
                    ZoneDecision(zone.name, change, track.id, track.label, seq, ts, zone.occupancy)
                )

    def _cross_lines(self, track: ObjectTrack, seq: int, ts: float, out: LifecycleStep) -> None:
        """Crossings count from a track's first frame; a tentative track's wait for its start."""
        point = bottom_centre(track.box)
        for line in self.lines:
            direction = line.update(track.id, track.label, point)
            if direction is None:
                continue
            if track.confirmed:
                out.crossings.append(self._crossing(line, direction, track, seq, ts))
            else:
                reported = self._reported.setdefault(track.id, _Reported(centre(track.box), 0.0))
                reported.pending.append((line, direction, seq, ts))

    @staticmethod
    def _crossing(
        line: CountingLine, direction: Direction, track: ObjectTrack, seq: int, ts: float
    ) -> LineCrossing:
        count = line.count(direction)
        return LineCrossing(line.name, direction, track.id, track.label, seq, ts, count)

    def _decision(
        self, state: Literal["start", "update", "end"], track: ObjectTrack, seq: int, ts: float
    ) -> ObjectDecision:
        reported = self._reported.get(track.id)
        return ObjectDecision(
            state=state,
            track_id=track.id,
            label=track.label,
            score=track.best_score,
            box=track.best_box,
            seq=seq,
            ts=ts,
            first_seen=track.first_ts,
            last_seen=track.last_ts,
            first_seq=track.first_seq,
            thumbnail=reported.thumbnail if reported else None,
        )
