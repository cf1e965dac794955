"""Counting lines and zone polygons: crossings counted once per direction, between the
endpoints only; point-in-polygon as OpenCV has it."""

from __future__ import annotations

import cv2
import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edge_agent.pipelines.tracking.geometry import (
    CountingLine,
    CountingLineConfig,
    point_in_polygon,
)

coord = st.floats(-500, 500, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    a=st.tuples(coord, coord),
    b=st.tuples(coord, coord),
    t=st.floats(0.02, 0.98),
    angle=st.floats(0.2, np.pi - 0.2),
    reach=st.floats(5, 300),
    steps=st.integers(2, 12),
)
def test_a_straight_path_across_the_segment_is_counted_once_in_its_direction(
    a: tuple[float, float],
    b: tuple[float, float],
    t: float,
    angle: float,
    reach: float,
    steps: int,
) -> None:
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = float(np.hypot(dx, dy))
    assume(length > 10)
    ux, uy = dx / length, dy / length
    # A direction at `angle` from the line (never parallel to it), through a point on it.
    cx, cy = a[0] + t * dx, a[1] + t * dy
    vx = ux * np.cos(angle) - uy * np.sin(angle)
    vy = ux * np.sin(angle) + uy * np.cos(angle)
    start = (cx - reach * vx, cy - reach * vy)
    path = [
        (start[0] + 2 * reach * vx * k / steps, start[1] + 2 * reach * vy * k / steps)
        for k in range(steps + 1)
    ]
    line = CountingLine(CountingLineConfig(name="l", a=a, b=b))
    got = [d for p in path if (d := line.update(7, "car", p)) is not None]
    # Rotating the line's direction clockwise (in image coordinates) points to its right.
    expected = "left_to_right" if np.sin(angle) > 0 else "right_to_left"
    assert got == [expected]
    # Walking back crosses the other way once; forth again is not counted a second time.
    again = [d for p in path[::-1] + path if (d := line.update(7, "car", p)) is not None]
    assert again == [next(d for d in ("left_to_right", "right_to_left") if d != expected)]


@settings(max_examples=300, deadline=None)
@given(
    a=st.tuples(coord, coord),
    b=st.tuples(coord, coord),
    t=st.one_of(st.floats(-3, -0.05), st.floats(1.05, 4)),
    angle=st.floats(0.2, np.pi - 0.2),
)
def test_a_path_crossing_beyond_the_endpoints_is_not_counted(
    a: tuple[float, float], b: tuple[float, float], t: float, angle: float
) -> None:
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = float(np.hypot(dx, dy))
    assume(length > 10)
    ux, uy = dx / length, dy / length
    cx, cy = a[0] + t * dx, a[1] + t * dy
    vx = ux * np.cos(angle) - uy * np.sin(angle)
    vy = ux * np.sin(angle) + uy * np.cos(angle)
    line = CountingLine(CountingLineConfig(name="l", a=a, b=b))
    for k in range(-3, 4):
        assert line.update(1, "car", (cx + 10 * k * vx, cy + 10 * k * vy)) is None


@settings(max_examples=200, deadline=None)
@given(
    points=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 400)), min_size=3, max_size=12),
    probe=st.tuples(st.floats(0, 400), st.floats(0, 400)),
)
def test_point_in_polygon_agrees_with_opencv_on_convex_polygons(
    points: list[tuple[int, int]], probe: tuple[float, float]
) -> None:
    hull = cv2.convexHull(np.asarray(points, dtype=np.float32))
    assume(len(hull) >= 3 and cv2.contourArea(hull) > 1)
    distance = cv2.pointPolygonTest(hull, probe, True)
    assume(abs(distance) > 1e-3)
    polygon = [(float(x), float(y)) for x, y in hull[:, 0]]
    assert point_in_polygon(probe, polygon) == (distance > 0)
