"""Zones and counting lines in frame pixels, and the plane geometry they need. Pure logic.

A ``Zone`` says when a tracked object enters or leaves a polygon (judged by where it stands:
the bottom-centre of its box); a ``CountingLine`` says when one crosses a segment, once per
track and direction. Both only answer for a track's new position; the lifecycle
(``edge_agent.pipelines.tracking.lifecycle``) decides when that becomes an event.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from edge_agent.config_types import StrictConfig
from edge_agent.inference.postprocess import BoxXYXY

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
