"""A closed route on a CARLA map, as the racing task's `Track`.

A route is traced with the map's waypoints: from the lane nearest to ``RouteSpec.start``, step
``waypoint.next(spacing)`` along the driving direction; where the lane branches (a junction), take
the branch the plan names (``"straight"``, ``"left"``, ``"right"``, judged by the heading change
15 m into each branch; ``"straight"`` once the plan is used up), until the route is back on the
start lane within one spacing of the start. The centreline is that lane's centre shifted left by
``offset`` lane widths (0.5: the road's centre line on a two-lane road, so the track is both
lanes), in the task's plane (`envs.racing.carla_sim.to_plane`), resampled to even ``spacing``.
`check_clearance` then makes sure the track never comes back within its own width (a figure-8
overpass, as on Town04's highway, would make the nearest-point projection ambiguous).

Built-in routes (`ROUTES`):

| town | route |
|---|---|
| Town07 | the lap around the outskirts of the rural town used by Carla-ppo's ``CarlaLapEnv`` (bitsauce/Carla-ppo): start near (-180, 110), junctions straight, right, right, then straight; two-lane country roads |

(Taken from that project's published lap; not yet traced on a live server here. Should the map
disagree, tracing fails with a `ValueError` naming the `RouteSpec` field to change.)

Works on anything with the ``carla.Map`` / ``carla.Waypoint`` attributes it reads
(``get_waypoint``, ``next``, ``transform``, ``road_id``, ``lane_id``, ``lane_width``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs.racing import task as rt

TURNS = ("straight", "left", "right")


def _finite(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


@dataclass(frozen=True)
class RouteSpec:
    """Where a closed route runs on a map and how wide its track is."""

    start: tuple[float, float] = (-180.0, 110.0)  # CARLA world (x, y) near the start line (m)
    plan: tuple[str, ...] = ("straight", "right", "right")  # branch taken at each junction
    spacing: float = 1.0  # waypoint step and centreline spacing (m), in [0.5, 5]
    offset: float = 0.5  # centreline = lane centre + offset lane widths to the left
    half_width: float | None = None  # track half-width (m); None: the start lane's width
    max_length: float = 10_000.0  # give up if the route has not closed by then (m)
    probe: float = field(default=15.0, repr=False)  # how far into a branch its turn is judged (m)

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise ValueError(f"RouteSpec.{name} must be {allowed}, got {getattr(self, name)!r}")

        need(len(self.start) == 2 and _finite(*self.start), "start", "a finite (x, y)")
        need(all(t in TURNS for t in self.plan), "plan", f"a tuple of {TURNS}")
        need(_finite(self.spacing) and 0.5 <= self.spacing <= 5.0, "spacing", "in [0.5, 5]")
        need(_finite(self.offset) and abs(self.offset) <= 2.0, "offset", "in [-2, 2]")
        hw = self.half_width
        need(hw is None or (_finite(hw) and hw > 0), "half_width", "None or a number > 0")
        need(_finite(self.max_length) and self.max_length > 0, "max_length", "> 0")


#: built-in routes by town (see the module docstring)
ROUTES: dict[str, RouteSpec] = {"Town07": RouteSpec()}


def _pose(wp: Any) -> tuple[float, float, float]:
    """A waypoint's plane pose (x, y, ψ) (CARLA's left-handed frame flipped)."""
    tf = wp.transform
    return tf.location.x, -tf.location.y, -math.radians(tf.rotation.yaw)


def _turn(wp: Any, branch: Any, probe: float, step: float) -> float:
    """Heading change (rad, left > 0) from ``wp`` to ``probe`` metres into ``branch``."""
    end, travelled = branch, 0.0
    while travelled < probe:
        nxt = end.next(step)
        if not nxt:
            break
        end, travelled = nxt[0], travelled + step
    return float(rt.wrap_angle(_pose(end)[2] - _pose(wp)[2]))


def trace_route(start: Any, spec: RouteSpec) -> list[Any]:
    """Waypoints of the closed route from waypoint ``start`` (the start excluded at the end)."""
    route, wp, junctions, length = [start], start, 0, 0.0
    x0, y0, _ = _pose(start)
    while length < spec.max_length:
        options = wp.next(spec.spacing)
        if not options:
            x, y, _ = _pose(wp)
            raise ValueError(
                f"route: the lane ends at plane ({x:.1f}, {y:.1f}) after {length:.0f} m;"
                f" change RouteSpec.plan (junction {junctions})"
            )
        if len(options) > 1:
            # a branch point; inside a junction's lanes, overlapping lanes: keep straight on
            rule = "straight"
            if not wp.is_junction:
                rule = spec.plan[junctions] if junctions < len(spec.plan) else "straight"
                junctions += 1
            turns = np.array([_turn(wp, o, spec.probe, spec.spacing) for o in options])
            if rule == "straight":
                pick = np.argmin(np.abs(turns))
            else:
                pick = np.argmax(turns) if rule == "left" else np.argmin(turns)
            wp = options[int(pick)]
        else:
            wp = options[0]
        length += spec.spacing
        x, y, _ = _pose(wp)
        back = (wp.road_id, wp.lane_id) == (start.road_id, start.lane_id)
        if back and length > 20 * spec.spacing and math.hypot(x - x0, y - y0) < spec.spacing:
            return route
        route.append(wp)
    raise ValueError(
        f"route: not back at the start within RouteSpec.max_length={spec.max_length} m"
        f" ({junctions} junctions); change RouteSpec.start or RouteSpec.plan"
    )


def resample_closed(points: np.ndarray, spacing: float) -> np.ndarray:
    """A closed polyline ``[N, k]`` (first k=2 columns: x, y) resampled to even arc-length steps."""
    keep = np.concatenate([[True], np.linalg.norm(np.diff(points[:, :2], axis=0), axis=1) > 1e-6])
    pts = points[keep]
    closed = np.concatenate([pts, pts[:1]])
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed[:, :2], axis=0), axis=1))])
    n = max(8, round(s[-1] / spacing))
    grid = np.arange(n) * (s[-1] / n)
    return np.stack([np.interp(grid, s, closed[:, k]) for k in range(pts.shape[1])], axis=-1)


def check_clearance(track: rt.Track, chunk: int = 256) -> None:
    """`ValueError` unless every centre and near-boundary point projects back onto its own
    stretch of track (the projection in `envs.racing.task.Track.project` is global)."""
    hw = track.half_width
    every = max(1, int(0.5 * hw / float(np.mean(track.seg_len))))
    idx = np.arange(0, len(track.points), every)
    for side in (0.0, 0.95, -0.95):
        pts = track.points[idx] + side * hw * track.normal[idx]
        for lo in range(0, len(idx), chunk):
            s, _ = track.project(pts[lo : lo + chunk])
            gap = np.abs(rt.wrap_gap(s - track.s[idx[lo : lo + chunk]], track.length))
            if np.any(gap > 2 * hw):
                at = float(track.s[idx[lo + int(np.argmax(gap))]])
                raise ValueError(
                    f"route: the track comes within its width of itself (or turns tighter than"
                    f" its half-width {hw:.1f} m) near s = {at:.0f} m; choose another RouteSpec"
                )


def route_track(carla_map: Any, spec: RouteSpec) -> tuple[rt.Track, np.ndarray]:
    """The route's `Track` (task plane) and the road height ``[N]`` (m) at its centreline points."""
    import carla  # noqa: PLC0415  (optional dependency)

    start = carla_map.get_waypoint(carla.Location(x=spec.start[0], y=spec.start[1], z=0.0))
    if start is None:
        raise ValueError(f"RouteSpec.start={spec.start}: no driving lane near it on this map")
    return track_from_waypoints(trace_route(start, spec), spec)


def track_from_waypoints(route: list[Any], spec: RouteSpec) -> tuple[rt.Track, np.ndarray]:
    """`Track` and heights ``[N]`` from traced waypoints (see the module docstring)."""
    rows = []
    for wp in route:
        x, y, psi = _pose(wp)
        shift = spec.offset * wp.lane_width
        rows.append((x - shift * math.sin(psi), y + shift * math.cos(psi), wp.transform.location.z))
    pts = resample_closed(np.asarray(rows, dtype=np.float64), spec.spacing)
    half_width = spec.half_width if spec.half_width is not None else float(route[0].lane_width)
    track = rt.Track(pts[:, :2], half_width)
    check_clearance(track)
    return track, pts[:, 2]
