"""Object tracking and the object event lifecycle. Pure logic, no I/O.

A detector says "a car here" on every frame; an operator wants "a car arrived at 10:15,
stayed 3 minutes, left". ``IouTracker`` links detections across frames into tracks with
stable ids (IoU matching per class, confirmed after ``min_hits`` frames, ended after
``max_age`` frames without a match, with a constant-velocity prediction so a fast object
still overlaps its own track). ``ObjectLifecycle`` turns tracks into a few decisions:
``start`` when a track is confirmed, ``update`` only when the object moved or its score
improved notably (a parked car produces none), ``end`` when the track is lost; plus zone
enter/exit and counting-line crossings. Each decision names the frame to keep as the
object's thumbnail; the pipeline writes it (``edge_agent.pipelines.thumbnails``).

Frames are counted by their ``seq``: a frame skipped by the motion gate is not a miss, and
the prediction spans the seq gap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from edge_agent.config_types import StrictConfig
from edge_agent.inference.postprocess import BoxXYXY, Detection, pairwise_iou

Point = tuple[float, float]
Direction = Literal["left_to_right", "right_to_left"]


class ZoneConfig(StrictConfig):
    """A polygon in frame pixels; an object is in it when its box's bottom-centre is."""

    name: str = Field(min_length=1, max_length=64)
    polygon: list[Point]
    labels: list[str] | None = Field(default=None, description="only these labels; all if unset")

    @field_validator("polygon")
    @classmethod
    def _polygon(cls, value: list[Point]) -> list[Point]:
        if len(value) < 3:
            raise ValueError(f"a zone polygon needs at least 3 points, got {len(value)}")
        return value


class CountingLineConfig(StrictConfig):
    """A line from ``a`` to ``b`` in frame pixels; crossings are counted per direction.

    Directions are as seen standing at ``a`` looking towards ``b``: ``left_to_right`` is a
    crossing from the left-hand side to the right-hand side.
    """

    name: str = Field(min_length=1, max_length=64)
    a: Point
    b: Point
    labels: list[str] | None = None

    @field_validator("b")
    @classmethod
    def _not_a_point(cls, value: Point, info: ValidationInfo) -> Point:
        if tuple(info.data.get("a") or ()) == tuple(value):
            raise ValueError("a counting line needs two distinct points")
        return value


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


# -- geometry ----------------------------------------------------------------------------


def bottom_centre(box: BoxXYXY) -> Point:
    """Where an object stands: the middle of its box's lower edge."""
    return (box[0] + box[2]) / 2, box[3]


def centre(box: BoxXYXY) -> Point:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def point_in_polygon(point: Point, polygon: list[Point] | tuple[Point, ...]) -> bool:
    """Even-odd rule (a ray to the right crosses the boundary an odd number of times)."""
    x, y = point
    inside = False
    n = len(polygon)
    for i in range(n):
        x1, y1 = polygon[i]
        x2, y2 = polygon[(i + 1) % n]
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def side_of(a: Point, b: Point, p: Point) -> float:
    """> 0 right of a->b (image y points down), < 0 left, 0 on the line."""
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


# -- tracker -----------------------------------------------------------------------------


@dataclass(slots=True)
class Track:
    """One object followed across frames."""

    id: int
    label: str
    box: BoxXYXY
    """The last matched box."""
    score: float
    first_seq: int
    first_ts: float
    last_seq: int
    last_ts: float
    best_score: float
    best_box: BoxXYXY
    best_seq: int
    hits: int = 1
    misses: int = 0
    confirmed: bool = False
    velocity: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    """Box change per frame (seq), smoothed."""

    def predicted(self, seq: int) -> BoxXYXY:
        """Where the box should be at ``seq`` if the object keeps its velocity."""
        steps = seq - self.last_seq
        b, v = self.box, self.velocity
        return (b[0] + v[0] * steps, b[1] + v[1] * steps, b[2] + v[2] * steps, b[3] + v[3] * steps)

    def observe(self, detection: Detection, seq: int, ts: float) -> None:
        steps = max(seq - self.last_seq, 1)
        new, old, v = detection.box, self.box, self.velocity
        # Half the old velocity, half this step's: detector jitter should not swing it.
        self.velocity = (
            0.5 * v[0] + 0.5 * (new[0] - old[0]) / steps,
            0.5 * v[1] + 0.5 * (new[1] - old[1]) / steps,
            0.5 * v[2] + 0.5 * (new[2] - old[2]) / steps,
            0.5 * v[3] + 0.5 * (new[3] - old[3]) / steps,
        )
        self.box = new
        self.score = detection.score
        self.last_seq, self.last_ts = seq, ts
        self.hits += 1
        self.misses = 0
        if detection.score > self.best_score:
            self.best_score, self.best_box, self.best_seq = detection.score, new, seq


@dataclass(slots=True)
class TrackerStep:
    """What one frame changed."""

    matched: list[Track] = field(default_factory=list)
    """Every track (tentative or confirmed) that got a detection this frame, new ones too."""
    started: list[Track] = field(default_factory=list)
    """Tracks confirmed this frame."""
    ended: list[Track] = field(default_factory=list)
    """Confirmed tracks lost this frame (or closed)."""
    dropped: list[Track] = field(default_factory=list)
    """Tentative tracks given up this frame (never started, so they never end)."""


class IouTracker:
    """Greedy IoU matching per class between predicted track boxes and detections."""

    def __init__(
        self,
        *,
        iou_threshold: float = 0.3,
        min_hits: int = 3,
        max_age: int = 10,
        predict: bool = True,
        first_id: int = 1,
    ) -> None:
        self.iou_threshold = iou_threshold
        self.min_hits = min_hits
        self.max_age = max_age
        self.predict = predict
        self._next_id = first_id
        self._tracks: list[Track] = []

    @property
    def tracks(self) -> list[Track]:
        """Live tracks, tentative ones included."""
        return list(self._tracks)

    def update(self, detections: list[Detection], seq: int, ts: float) -> TrackerStep:
        """Feed the detections of frame ``seq``; return what changed."""
        step = TrackerStep()
        matched_tracks: set[int] = set()
        matched_detections: set[int] = set()
        for label in {d.label for d in detections} | {t.label for t in self._tracks}:
            pairs = self._match(label, detections, seq)
            for ti, di in pairs:
                track = self._tracks[ti]
                track.observe(detections[di], seq, ts)
                matched_tracks.add(ti)
                matched_detections.add(di)
                step.matched.append(track)
                if not track.confirmed and track.hits >= self.min_hits:
                    track.confirmed = True
                    step.started.append(track)
        self._absorb(detections, seq, ts, matched_tracks, matched_detections, step)
        survivors: list[Track] = []
        for index, track in enumerate(self._tracks):
            if index not in matched_tracks:
                track.misses += 1
                if not track.confirmed:
                    step.dropped.append(track)
                    continue
                if track.misses > self.max_age:
                    step.ended.append(track)
                    continue
            survivors.append(track)
        for index, detection in enumerate(detections):
            if index not in matched_detections:
                track = self._new_track(detection, seq, ts)
                survivors.append(track)
                step.matched.append(track)
                if self.min_hits <= 1:
                    track.confirmed = True
                    step.started.append(track)
        self._tracks = survivors
        return step

    def close(self) -> TrackerStep:
        """End every confirmed track (the stream ends)."""
        step = TrackerStep()
        for track in self._tracks:
            (step.ended if track.confirmed else step.dropped).append(track)
        self._tracks = []
        return step

    def _absorb(
        self,
        detections: list[Detection],
        seq: int,
        ts: float,
        matched_tracks: set[int],
        matched_detections: set[int],
        step: TrackerStep,
    ) -> None:
        """A detection of another class on a known object is that object, not a new one.

        Detectors flicker between classes on partial views (a car half out of the frame
        read as a person): a confirmed track left unmatched takes such a detection and keeps
        its own label, and a detection on top of a track matched this frame is a duplicate.
        """
        left_d = [i for i in range(len(detections)) if i not in matched_detections]
        if not left_d:
            return
        left_t = [i for i, t in enumerate(self._tracks) if i not in matched_tracks and t.confirmed]
        for ti, di in self._greedy(left_t, left_d, detections, seq):
            track = self._tracks[ti]
            track.observe(detections[di], seq, ts)
            matched_tracks.add(ti)
            matched_detections.add(di)
            step.matched.append(track)
        left_d = [i for i in left_d if i not in matched_detections]
        if not left_d or not matched_tracks:
            return
        seen = sorted(matched_tracks)
        ious = pairwise_iou(
            np.asarray([self._tracks[i].box for i in seen], dtype=np.float64),
            np.asarray([detections[i].box for i in left_d], dtype=np.float64),
        )
        for column, di in enumerate(left_d):
            if ious[:, column].max() >= self.iou_threshold:
                matched_detections.add(di)

    def _match(self, label: str, detections: list[Detection], seq: int) -> list[tuple[int, int]]:
        track_ix = [i for i, t in enumerate(self._tracks) if t.label == label]
        det_ix = [i for i, d in enumerate(detections) if d.label == label]
        return self._greedy(track_ix, det_ix, detections, seq)

    def _greedy(
        self, track_ix: list[int], det_ix: list[int], detections: list[Detection], seq: int
    ) -> list[tuple[int, int]]:
        if not track_ix or not det_ix:
            return []
        boxes = [
            self._tracks[i].predicted(seq) if self.predict else self._tracks[i].box
            for i in track_ix
        ]
        ious = pairwise_iou(
            np.asarray(boxes, dtype=np.float64),
            np.asarray([detections[i].box for i in det_ix], dtype=np.float64),
        )
        pairs: list[tuple[int, int]] = []
        used_t: set[int] = set()
        used_d: set[int] = set()
        # Greedy, best IoU first: optimal enough when objects of a class rarely overlap.
        flat = np.argsort(-ious, axis=None, kind="stable")
        for t, d in zip(*np.unravel_index(flat, ious.shape), strict=True):
            if ious[t, d] < self.iou_threshold:
                break
            if t in used_t or d in used_d:
                continue
            used_t.add(int(t))
            used_d.add(int(d))
            pairs.append((track_ix[t], det_ix[d]))
        return pairs

    def _new_track(self, detection: Detection, seq: int, ts: float) -> Track:
        track = Track(
            id=self._next_id,
            label=detection.label,
            box=detection.box,
            score=detection.score,
            first_seq=seq,
            first_ts=ts,
            last_seq=seq,
            last_ts=ts,
            best_score=detection.score,
            best_box=detection.box,
            best_seq=seq,
        )
        self._next_id += 1
        return track


# -- zones and lines ---------------------------------------------------------------------


class Zone:
    """Which tracks stand in a polygon; reports when one enters or leaves it."""

    def __init__(self, config: ZoneConfig) -> None:
        self.name = config.name
        self.polygon = tuple(config.polygon)
        self.labels = None if config.labels is None else frozenset(config.labels)
        self._inside: set[int] = set()

    def contains(self, box: BoxXYXY) -> bool:
        return point_in_polygon(bottom_centre(box), self.polygon)

    def update(self, track_id: int, label: str, box: BoxXYXY) -> Literal["enter", "exit"] | None:
        """The track's new position: ``enter``, ``exit`` or nothing."""
        if self.labels is not None and label not in self.labels:
            return None
        inside = self.contains(box)
        was = track_id in self._inside
        if inside == was:
            return None
        if inside:
            self._inside.add(track_id)
            return "enter"
        self._inside.discard(track_id)
        return "exit"

    def leave(self, track_id: int) -> bool:
        """Forget a track that ended; True when it was inside (so it exits)."""
        if track_id in self._inside:
            self._inside.discard(track_id)
            return True
        return False

    @property
    def occupancy(self) -> int:
        return len(self._inside)


class CountingLine:
    """Counts tracks crossing a line segment, once per track and direction."""

    _DIRECTIONS: dict[bool, Direction] = {True: "left_to_right", False: "right_to_left"}

    def __init__(self, config: CountingLineConfig) -> None:
        self.name = config.name
        self.a = config.a
        self.b = config.b
        self.labels = None if config.labels is None else frozenset(config.labels)
        self.counts: dict[Direction, int] = {"left_to_right": 0, "right_to_left": 0}
        self._last: dict[int, Point] = {}  # track id -> last point off the line
        self._counted: set[tuple[int, Direction]] = set()

    def update(self, track_id: int, label: str, point: Point) -> Direction | None:
        """The track's new position; the direction when this move crosses the line.

        A track crosses each way at most once; ``count`` adds the crossing to the totals
        (the lifecycle does so once the track is confirmed, so noise never counts).
        """
        if self.labels is not None and label not in self.labels:
            return None
        side = side_of(self.a, self.b, point)
        if side == 0:
            return None  # on the line: wait for the side it ends up on
        previous = self._last.get(track_id)
        self._last[track_id] = point
        if previous is None:
            return None
        before = side_of(self.a, self.b, previous)
        if (before > 0) == (side > 0) or not self._within_segment(previous, point):
            return None
        direction = self._DIRECTIONS[side > 0]
        if (track_id, direction) in self._counted:
            return None
        self._counted.add((track_id, direction))
        return direction

    def count(self, direction: Direction) -> int:
        """Add one crossing; the new total for that direction."""
        self.counts[direction] += 1
        return self.counts[direction]

    def forget(self, track_id: int) -> None:
        self._last.pop(track_id, None)
        self._counted.discard((track_id, "left_to_right"))
        self._counted.discard((track_id, "right_to_left"))

    def _within_segment(self, p: Point, q: Point) -> bool:
        """Whether the move p -> q meets the line between its endpoints (not beyond them)."""
        sp, sq = side_of(self.a, self.b, p), side_of(self.a, self.b, q)
        t = sp / (sp - sq)  # where along p -> q it meets the infinite line
        x, y = p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])
        dx, dy = self.b[0] - self.a[0], self.b[1] - self.a[1]
        along = ((x - self.a[0]) * dx + (y - self.a[1]) * dy) / (dx * dx + dy * dy)
        return 0.0 <= along <= 1.0


# -- lifecycle ---------------------------------------------------------------------------


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

    def _start(self, track: Track, seq: int, ts: float, out: LifecycleStep) -> None:
        reported = self._reported.setdefault(track.id, _Reported(centre(track.box), 0.0))
        reported.centre, reported.score = centre(track.box), track.best_score
        self._snapshot(track, seq, out, force=True)
        out.objects.append(self._decision("start", track, seq, ts))
        for line, direction, at_seq, at_ts in reported.pending:
            out.crossings.append(self._crossing(line, direction, track, at_seq, at_ts))
        reported.pending.clear()

    def _maybe_update(self, track: Track, seq: int, ts: float, out: LifecycleStep) -> None:
        reported = self._reported[track.id]
        self._snapshot(track, seq, out, force=False)
        cx, cy = centre(track.box)
        moved = np.hypot(cx - reported.centre[0], cy - reported.centre[1])
        better = track.best_score - reported.score >= self.config.min_score_gain
        if moved > self.config.min_move_px or better:
            reported.centre, reported.score = (cx, cy), track.best_score
            out.objects.append(self._decision("update", track, seq, ts))

    def _end(self, track: Track, seq: int, ts: float, out: LifecycleStep) -> None:
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

    def _snapshot(self, track: Track, seq: int, out: LifecycleStep, *, force: bool) -> None:
        """A new thumbnail when this frame shows the object at a clearly better score."""
        reported = self._reported[track.id]
        gain = track.score - reported.thumbnail_score
        if not force and (track.best_seq != seq or gain < self.config.thumbnail_min_gain):
            return
        path = self._template.format(pipeline=self.pipeline, track_id=track.id, seq=seq)
        reported.thumbnail, reported.thumbnail_score = path, track.score
        out.snapshots.append(Snapshot(track.id, track.box, path))

    def _zones(self, track: Track, seq: int, ts: float, out: LifecycleStep) -> None:
        for zone in self.zones:
            change = zone.update(track.id, track.label, track.box)
            if change is not None:
                out.zones.append(
                    ZoneDecision(zone.name, change, track.id, track.label, seq, ts, zone.occupancy)
                )

    def _cross_lines(self, track: Track, seq: int, ts: float, out: LifecycleStep) -> None:
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
        line: CountingLine, direction: Direction, track: Track, seq: int, ts: float
    ) -> LineCrossing:
        count = line.count(direction)
        return LineCrossing(line.name, direction, track.id, track.label, seq, ts, count)

    def _decision(
        self, state: Literal["start", "update", "end"], track: Track, seq: int, ts: float
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
