"""Object tracking: detections linked across frames into tracks with stable ids. Pure logic.

A detector says "a car here" on every frame; ``IouTracker`` links those detections into
tracks (IoU matching per class, confirmed after ``min_hits`` frames, ended after
``max_age`` frames without a match, with a constant-velocity prediction so a fast object
still overlaps its own track). What a track means for events is the lifecycle's to decide
(``edge_agent.pipelines.tracking.lifecycle``).

Frames are counted by their ``seq``: a frame skipped by the motion gate is not a miss, and
the prediction spans the seq gap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge_agent.inference.postprocess import BoxXYXY, Detection, pairwise_iou


@dataclass(slots=True)
class ObjectTrack:
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

    matched: list[ObjectTrack] = field(default_factory=list)
    """Every track (tentative or confirmed) that got a detection this frame, new ones too."""
    started: list[ObjectTrack] = field(default_factory=list)
    """Tracks confirmed this frame."""
    ended: list[ObjectTrack] = field(default_factory=list)
    """Confirmed tracks lost this frame (or closed)."""
    dropped: list[ObjectTrack] = field(default_factory=list)
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
        self._tracks: list[ObjectTrack] = []

    @property
    def tracks(self) -> list[ObjectTrack]:
        """Live tracks, tentative ones included."""
        return list(self._tracks)

    def update(self, detections: list[Detection], seq: int, ts: float) -> TrackerStep:
        """Feed the detections of frame ``seq``; return what changed."""
        step = TrackerStep()
        matched_tracks: set[int] = set()
        matched_detections: set[int] = set()
        ious = self._predicted_ious(detections, seq)
        # Sorted: a set's order follows the process's hash seed, and the events of one frame
        # must come out in the same order in every process.
        for label in sorted({d.label for d in detections} | {t.label for t in self._tracks}):
            pairs = self._match(label, detections, ious)
            for ti, di in pairs:
                track = self._tracks[ti]
                track.observe(detections[di], seq, ts)
                matched_tracks.add(ti)
                matched_detections.add(di)
                step.matched.append(track)
                if not track.confirmed and track.hits >= self.min_hits:
                    track.confirmed = True
                    step.started.append(track)
        self._absorb(detections, ious, seq, ts, matched_tracks, matched_detections, step)
        survivors: list[ObjectTrack] = []
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

    def _predicted_ious(self, detections: list[Detection], seq: int) -> npt.NDArray[np.float64]:
        """IoU of every track's predicted box (its last box without ``predict``) at ``seq``
        with every detection: computed once per frame, read by each class's matching (an
        IoU depends on its two boxes only, so a block of it is the block's own IoU)."""
        if not self._tracks or not detections:
            return np.zeros((len(self._tracks), len(detections)))
        boxes = [t.predicted(seq) if self.predict else t.box for t in self._tracks]
        return pairwise_iou(
            np.asarray(boxes, dtype=np.float64),
            np.asarray([d.box for d in detections], dtype=np.float64),
        )

    def _absorb(
        self,
        detections: list[Detection],
        ious: npt.NDArray[np.float64],
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
        for ti, di in self._greedy(left_t, left_d, ious):
            track = self._tracks[ti]
            track.observe(detections[di], seq, ts)
            matched_tracks.add(ti)
            matched_detections.add(di)
            step.matched.append(track)
        left_d = [i for i in left_d if i not in matched_detections]
        if not left_d or not matched_tracks:
            return
        seen = sorted(matched_tracks)
        # The boxes as matched this frame (not the predictions ``ious`` holds).
        overlaps = pairwise_iou(
            np.asarray([self._tracks[i].box for i in seen], dtype=np.float64),
            np.asarray([detections[i].box for i in left_d], dtype=np.float64),
        )
        for column, di in enumerate(left_d):
            if overlaps[:, column].max() >= self.iou_threshold:
                matched_detections.add(di)

    def _match(
        self, label: str, detections: list[Detection], ious: npt.NDArray[np.float64]
    ) -> list[tuple[int, int]]:
        track_ix = [i for i, t in enumerate(self._tracks) if t.label == label]
        det_ix = [i for i, d in enumerate(detections) if d.label == label]
        return self._greedy(track_ix, det_ix, ious)

    def _greedy(
        self, track_ix: list[int], det_ix: list[int], all_ious: npt.NDArray[np.float64]
    ) -> list[tuple[int, int]]:
        """Pairs (track, detection) of the given indices, best predicted IoU first."""
        if not track_ix or not det_ix:
            return []
        ious = all_ious[track_ix][:, det_ix]
        pairs: list[tuple[int, int]] = []
        used_t: set[int] = set()
        used_d: set[int] = set()
        # Greedy, best IoU first: optimal enough when objects of a class rarely overlap.
        # Walked as plain ints and floats: a handful of pairs, each numpy scalar costs more.
        flat = np.argsort(-ious, axis=None, kind="stable")
        columns = len(det_ix)
        for position, iou in zip(flat.tolist(), ious.ravel()[flat].tolist(), strict=True):
            if iou < self.iou_threshold:
                break
            t, d = divmod(position, columns)
            if t in used_t or d in used_d:
                continue
            used_t.add(t)
            used_d.add(d)
            pairs.append((track_ix[t], det_ix[d]))
        return pairs

    def _new_track(self, detection: Detection, seq: int, ts: float) -> ObjectTrack:
        track = ObjectTrack(
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
