"""The racing track: a closed centreline with a half-width, and the frame along it.

Two layouts: the stadium (`TrackParams`, two straights and two constant-radius turns: the
``racing-stadium`` task) and the circuit (`CircuitParams`, a closed periodic cubic spline
through control points: hairpin, chicane, sweepers and straights, the ``racing`` task).

Track-frame conventions: arc-length ``s`` (m) along the centreline in the driving direction
(counter-clockwise for the default stadium), 0 at the start line; lateral offset ``ey`` (m,
positive to the left); heading error ``epsi`` (rad, wrapped to [-π, π)); boundary deviation
``b = ey / half_width`` (``|b| = 1`` on the boundary). `Track.project` maps a point to
``(s mod length, ey)``; `Track.frame` gives the centre, normal and heading at ``s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


def _require(ok: bool, name: str, allowed: str, value: Any) -> None:
    """Raise ``ValueError`` naming the parameter and its allowed range unless ``ok``."""
    if not ok:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _finite(value: Any) -> bool:
    values = value if isinstance(value, tuple) else (value,)
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _require_pair(name: str, value: tuple[float, ...], lo: float, hi: float) -> None:
    """``value`` must be a pair (low, high) with lo <= low <= high <= hi."""
    ok = len(value) == 2 and lo <= value[0] <= value[1] <= hi
    _require(ok, name, f"(low, high) with {lo} <= low <= high <= {hi}", value)


@dataclass(frozen=True)
class TrackParams:
    """The default closed track: a stadium (two straights joined by two half-circles)."""

    straight_length: float = 80.0  # length of each straight (m), >= 0
    radius: float = 30.0  # centreline radius of the turns (m), > half_width
    half_width: float = 6.0  # centre-to-edge distance (m), > 0
    spacing: float = 1.0  # arc-length between centreline table points (m), (0, radius / 4]

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            _require(_finite(value), f"TrackParams.{name}", "a finite number", value)
        r = self.radius
        _require(r > 0, "TrackParams.radius", "> 0", r)
        _require(
            self.straight_length >= 0, "TrackParams.straight_length", ">= 0", self.straight_length
        )
        _require(
            0 < self.half_width < r,
            "TrackParams.half_width",
            f"in (0, radius={r})",
            self.half_width,
        )
        _require(
            0 < self.spacing <= r / 4,
            "TrackParams.spacing",
            f"in (0, radius/4={r / 4}]",
            self.spacing,
        )

    def build(self) -> Track:
        return Track.stadium(self)


def stadium_centreline(p: TrackParams) -> np.ndarray:
    """Centreline points ``[N, 2]`` of the stadium, evenly spaced in arc-length, counter-clockwise.

    The first point is the start of the bottom straight, ``(-straight/2, -radius)``, heading +x.
    """
    half, r = p.straight_length / 2, p.radius
    length = 2 * p.straight_length + 2 * math.pi * r
    s = np.arange(round(length / p.spacing)) * (length / round(length / p.spacing))
    a1, a2, a3 = (
        p.straight_length,
        p.straight_length + math.pi * r,
        2 * p.straight_length + math.pi * r,
    )
    th1 = (s - a1) / r - math.pi / 2  # angle on the right turn (centre (+half, 0))
    th2 = (s - a3) / r + math.pi / 2  # angle on the left turn (centre (-half, 0))
    x = np.select(
        [s < a1, s < a2, s < a3],
        [s - half, half + r * np.cos(th1), half - (s - a2)],
        -half + r * np.cos(th2),
    )
    y = np.select(
        [s < a1, s < a2, s < a3], [-r + 0 * s, r * np.sin(th1), r + 0 * s], r * np.sin(th2)
    )
    return np.stack([x, y], axis=-1)


#: The circuit's control points (m), counter-clockwise from the start line: a ~250 m start
#: straight into a left-hand complex (R ≈ 32-37 m), a right-left chicane (R ≈ 26 and 28 m),
#: sweepers (R ≈ 41-64 m) and a long left-hand loop back to the straight; 919.9 m a lap at 5 m
#: half-width (`envs.racing.env` has the measurements behind it).
CIRCUIT_CONTROL: tuple[tuple[float, float], ...] = (
    (0.0, 0.0), (96.0, 0.0), (192.0, 0.0), (284.0, 3.2), (296.0, 28.8), (280.0, 60.8),
    (240.0, 64.0), (192.0, 51.2), (152.0, 72.0), (104.0, 64.0), (48.0, 88.0), (16.0, 136.0),
    (-40.0, 144.0), (-72.0, 96.0), (-64.0, 40.0), (-40.0, 8.0),
)  # fmt: skip


@dataclass(frozen=True)
class CircuitParams:
    """A closed circuit: the periodic cubic spline through ``control`` (`closed_spline`),
    the same every episode; the start line at the first control point."""

    control: tuple[tuple[float, float], ...] = CIRCUIT_CONTROL  # spline knots (m), >= 4
    half_width: float = 5.0  # centre-to-edge distance (m), > 0
    spacing: float = 1.0  # arc-length between centreline table points (m), (0, 2]

    def __post_init__(self) -> None:
        pts = np.asarray(self.control, dtype=np.float64)
        _require(
            pts.ndim == 2 and pts.shape[0] >= 4 and pts.shape[1] == 2 and np.all(np.isfinite(pts)),
            "CircuitParams.control",
            "at least 4 finite (x, y) points",
            self.control,
        )
        _require(_finite(self.half_width) and self.half_width > 0, "CircuitParams.half_width",
                 "a finite number > 0", self.half_width)  # fmt: skip
        _require(_finite(self.spacing) and 0 < self.spacing <= 2.0, "CircuitParams.spacing",
                 "in (0, 2]", self.spacing)  # fmt: skip

    def build(self) -> Track:
        return Track(closed_spline(np.asarray(self.control, dtype=np.float64), self.spacing),
                     self.half_width)  # fmt: skip


def closed_spline(control: np.ndarray, spacing: float, density: int = 20) -> np.ndarray:
    """Points ``[N, 2]`` evenly spaced (about ``spacing`` m) in arc-length along the closed
    periodic cubic spline through ``control [n, 2]`` (chord-length knots, C2: the curvature
    is continuous, also across the first knot), starting at ``control[0]``.

    The spline is sampled ``density`` times finer than ``spacing`` and resampled linearly in
    arc-length, which puts the points within ~1e-4 m of the curve at the default spacing.
    """
    p = np.asarray(control, dtype=np.float64)
    n = len(p)
    nxt = np.roll(p, -1, axis=0)
    h = np.linalg.norm(nxt - p, axis=1)  # chord lengths: knot spacing
    _require(bool(np.all(h > 1e-6)), "control", "points without repeats", control)
    # cyclic tridiagonal system for the second derivatives m_i (natural form, periodic)
    a = np.zeros((n, n))
    idx = np.arange(n)
    a[idx, idx - 1] += np.roll(h, 1)
    a[idx, idx] += 2.0 * (np.roll(h, 1) + h)
    a[idx, (idx + 1) % n] += h
    slope = (nxt - p) / h[:, None]
    m = np.linalg.solve(a, 6.0 * (slope - np.roll(slope, 1, axis=0)))
    m1 = np.roll(m, -1, axis=0)
    parts = []
    for i in range(n):
        k = max(2, math.ceil(h[i] / spacing * density))
        t = (np.arange(k) / k * h[i])[:, None]  # distance from knot i along the chord
        u = h[i] - t
        parts.append(
            (m[i] * u**3 + m1[i] * t**3) / (6 * h[i])
            + (p[i] / h[i] - m[i] * h[i] / 6) * u
            + (nxt[i] / h[i] - m1[i] * h[i] / 6) * t
        )
    dense = np.concatenate(parts)
    closed = np.concatenate([dense, dense[:1]])
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))])
    count = round(s[-1] / spacing)
    q = np.arange(count) * (s[-1] / count)
    return np.stack([np.interp(q, s, closed[:, 0]), np.interp(q, s, closed[:, 1])], axis=-1)


def wrap_angle(a: Any) -> Any:
    """Angle wrapped to [-π, π) (numpy, torch or float)."""
    return (a + math.pi) % (2 * math.pi) - math.pi


def wrap_gap(ds: Any, length: float) -> Any:
    """An arc-length difference wrapped to [-length/2, length/2) (numpy, torch or float)."""
    return (ds + 0.5 * length) % length - 0.5 * length


class Track:
    """A closed track: a centreline polyline and a constant half-width, with precomputed tables.

    Tables (N vertices, vertex ``i`` at arc-length ``s[i]``; segment ``i`` joins ``i`` and ``i+1``):
    ``points [N, 2]``, ``seg [N, 2]`` (vertex i+1 minus vertex i), ``s [N+1]`` (``s[N]`` = length),
    ``heading [N]`` and ``dheading [N]`` (vertex tangent angle and its change to the next vertex),
    ``normal [N, 2]`` (vertex left normals), ``curvature [N]``. Between vertices, the centre runs
    along the segment and heading, normal and curvature are interpolated linearly in ``s``.
    """

    def __init__(self, centreline: np.ndarray, half_width: float) -> None:
        pts = np.asarray(centreline, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < 8 or not np.all(np.isfinite(pts)):
            raise ValueError(
                f"centreline must be a finite [N >= 8, 2] array, got shape {pts.shape}"
            )
        if not (math.isfinite(half_width) and half_width > 0):
            raise ValueError(f"half_width must be a finite number > 0, got {half_width}")
        self.points, self.half_width = pts, float(half_width)
        self.seg = np.roll(pts, -1, axis=0) - pts
        self.seg_len = np.linalg.norm(self.seg, axis=1)
        if np.any(self.seg_len <= 1e-9):
            raise ValueError("centreline must not repeat consecutive points")
        self.s = np.concatenate([[0.0], np.cumsum(self.seg_len)])
        self.length = float(self.s[-1])
        chord = np.roll(pts, -1, axis=0) - np.roll(pts, 1, axis=0)
        self.heading = np.arctan2(chord[:, 1], chord[:, 0])
        self.dheading = wrap_angle(np.roll(self.heading, -1) - self.heading)
        self.normal = np.stack([-np.sin(self.heading), np.cos(self.heading)], axis=-1)
        span = self.seg_len + np.roll(self.seg_len, 1)
        self.curvature = wrap_angle(np.roll(self.heading, -1) - np.roll(self.heading, 1)) / span
        self._seg_dir = self.seg / self.seg_len[:, None]

    @classmethod
    def stadium(cls, p: TrackParams) -> Track:
        return cls(stadium_centreline(p), p.half_width)

    def _locate(self, s: Any) -> tuple[np.ndarray, np.ndarray]:
        """Segment index and fraction ``[...]`` of (unwrapped) arc-lengths ``s``."""
        sm = np.mod(np.asarray(s, dtype=np.float64), self.length)
        i = np.clip(np.searchsorted(self.s, sm, side="right") - 1, 0, len(self.points) - 1)
        return i, (sm - self.s[i]) / self.seg_len[i]

    def centre(self, s: Any) -> np.ndarray:
        """Centreline point ``[..., 2]`` at arc-length ``s [...]``."""
        i, f = self._locate(s)
        return self.points[i] + f[..., None] * self.seg[i]

    def frame(self, s: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(centre ``[..., 2]``, left normal ``[..., 2]``, heading ``[...]``, curvature ``[...]``) at ``s``."""
        i, f = self._locate(s)
        j = (i + 1) % len(self.points)
        fc = f[..., None]
        centre = self.points[i] + fc * self.seg[i]
        normal = (1 - fc) * self.normal[i] + fc * self.normal[j]
        heading = self.heading[i] + f * self.dheading[i]
        curvature = (1 - f) * self.curvature[i] + f * self.curvature[j]
        return centre, normal, heading, curvature

    def to_xy(self, s: Any, ey: Any) -> np.ndarray:
        """World point ``[..., 2]`` at arc-length ``s`` and lateral offset ``ey``."""
        centre, normal, _, _ = self.frame(s)
        return centre + np.asarray(ey, dtype=np.float64)[..., None] * normal

    def project(self, xy: Any) -> tuple[np.ndarray, np.ndarray]:
        """Nearest point on the centreline polyline: (arc-length in [0, length), signed ``ey``).

        ``xy [..., 2]``; vectorised over all segments (the track is assumed not to come within
        two half-widths of itself, so the nearest segment is the right one).
        """
        q = np.asarray(xy, dtype=np.float64)[..., None, :] - self.points  # [..., N, 2]
        t = np.clip(np.einsum("...nk,nk->...n", q, self._seg_dir), 0.0, self.seg_len)
        d = q - t[..., None] * self._seg_dir
        i = np.argmin(np.einsum("...nk,...nk->...n", d, d), axis=-1)
        t_i = np.take_along_axis(t, i[..., None], -1)[..., 0]
        d_i = np.take_along_axis(d, i[..., None, None], -2)[..., 0, :]
        u = self._seg_dir[i]
        side = np.sign(u[..., 0] * d_i[..., 1] - u[..., 1] * d_i[..., 0])
        return np.mod(self.s[i] + t_i, self.length), side * np.linalg.norm(d_i, axis=-1)


def speed_profile(
    track: Track, v_max: float, lateral_accel: float, long_accel: float, smooth: float = 5.0
) -> np.ndarray:
    """Speeds ``[N]`` at the track's vertices for a driver on the centreline, as on a racing line.

    At most ``v_max``; at most ``sqrt(lateral_accel / |κ|)`` where the centreline curves (|κ|
    averaged over ``smooth`` m, so a waypoint-traced centreline's noise does not show, then
    its largest value within ``smooth / 2`` m taken, so a corner's entry is not cut); and
    changing by at most ``long_accel`` along the track (``|v_{i+1}² - v_i²| <= 2 a ds``): it
    brakes before a corner and speeds up after it. Forward and backward passes, twice around
    the closed track. Where no corner limits it the speed is exactly ``v_max``.
    """
    for name, value in (("v_max", v_max), ("lateral_accel", lateral_accel),
                        ("long_accel", long_accel)):  # fmt: skip
        _require(_finite(value) and value > 0, name, "a finite number > 0", value)
    n = len(track.points)
    k = max(1, round(smooth / float(np.mean(track.seg_len))))
    kernel = np.ones(2 * (k // 2) + 1) / (2 * (k // 2) + 1)
    pad = len(kernel) // 2
    kappa = np.abs(track.curvature)
    if pad:
        wrap = lambda a: np.concatenate([a[-pad:], a, a[:pad]])
        kappa = np.convolve(wrap(kappa), kernel, "valid")
        kappa = np.lib.stride_tricks.sliding_window_view(wrap(kappa), len(kernel)).max(axis=1)
    with np.errstate(divide="ignore"):
        v = np.minimum(v_max, np.sqrt(lateral_accel / kappa))
    ds = track.seg_len  # segment i joins vertex i and i + 1
    for _ in range(2):  # twice around: the limits carry over the start line
        for i in range(n):  # forward: speeding up
            j = (i + 1) % n
            v[j] = min(v[j], math.sqrt(v[i] ** 2 + 2 * long_accel * ds[i]))
        for i in range(n - 1, -1, -1):  # backward: braking
            j = (i + 1) % n
            v[i] = min(v[i], math.sqrt(v[j] ** 2 + 2 * long_accel * ds[i]))
    return v
