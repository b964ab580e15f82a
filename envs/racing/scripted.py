"""The racing task's hand-written high-level policy for world-frame targets (App. E's check of
the planner alone: `envs.racing.model.RacingModel.scripted_action`).

`ScriptedDriver` reads only the observation (`envs.racing.task.observation`), as a policy
would, and returns a world-frame target velocity ``[ẋ*, ẏ*]``, normalised:

* **speed**: the track's curvature at the TrackPoints 10, 20 and 30 m ahead (the turn between
  the chords joining the centre points), each turn's speed ``sqrt(a_lat / |κ|)``, and the
  speed from which the car can still brake to it, ``sqrt(v_κ² + 2 a_brake (d - 10 m))``;
  at most ``top_speed``;
* **line**: the centreline; while the opponent is within ``engage`` metres ahead (or less
  than ``clear_ahead`` m behind) a line ``pass_offset`` m beside it, on the side with more
  room (the opponent and the zone are put in track coordinates on the polyline of the
  TrackPoints' centre points); while the
  danger zone lies ahead within ``engage`` metres within ``zone_clearance`` m of that line,
  the middle of the wider corridor beside the zone;
* **direction**: towards the point of that line ``horizon`` seconds ahead at the current
  speed (pure pursuit on the TrackPoints, 5-40 m): the planner holds one target velocity over
  its horizon, and the chord to where the horizon ends is what it can follow in a bend;
* **patience**: while the opponent is close ahead and the car is not yet beside it, no faster
  than the opponent plus ``closing`` (m/s per m of gap beyond ``follow`` m).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ScriptedDriver:
    """Parameters of the scripted world-frame driver (module docstring)."""

    a_lat: float = 6.0  # m/s², cornering speed sqrt(a_lat / |κ|)
    a_brake: float = 5.0  # m/s², braking assumed ahead of a turn
    top_speed: float = 22.0  # m/s
    engage: float = 35.0  # m: the opponent / zone this far ahead changes the line
    pass_offset: float = 3.6  # m beside the opponent's centre (contact at 2.9 m)
    zone_clearance: float = 1.8  # m beside the zone's edge (the car's half-width is 0.9)
    zone_speed: float = 8.0  # m/s: at most this fast past the zone
    edge: float = 1.3  # m: the line stays this far inside the track's edges
    horizon: float = 1.0  # s: the pursuit aims this far ahead at the current speed
    follow: float = 8.0  # m: the gap kept behind an opponent not yet passed
    clear_ahead: float = 15.0  # m: after passing, the passing line is kept until this far ahead
    closing: float = 0.4  # 1/s: speed over the opponent's per m of gap beyond `follow`
    speed_up: float = 3.0  # m/s: the target speed at most this far above the current speed

    def __call__(
        self, obs: Tensor, half_width: float, lookahead: tuple[float, ...], world_speed: float,
        world_points: bool = False,
    ) -> Tensor:  # fmt: skip
        """Actions ``[..., 2]`` in [-1, 1] for observations ``[..., nobs]`` (``world_points``:
        their TrackPoints are in the world frame, `envs.racing.task.TaskParams.world_points`)."""
        hw = half_width
        d = torch.as_tensor(lookahead, dtype=obs.dtype, device=obs.device)
        ey, epsi = obs[..., 7] * hw, obs[..., 8]
        cos_e, sin_e = torch.cos(epsi), torch.sin(epsi)
        v_t = obs[..., 2] * cos_e - obs[..., 3] * sin_e
        pts = obs[..., 9:29].unflatten(-1, (len(lookahead), 2, 2))  # [..., 5, left/right, xy]
        if world_points:  # into the vehicle frame: x' = x c + y s, y' = y c - x s
            c, s = obs[..., 4, None, None], obs[..., 5, None, None]
            wx, wy = pts[..., 0], pts[..., 1]
            pts = torch.stack((wx * c + wy * s, wy * c - wx * s), -1)
        centre, normal = pts.mean(-2), (pts[..., 0, :] - pts[..., 1, :]) / (2 * hw)

        # speed: curvature from the turn between successive chords, then braking distance
        chords = centre[..., 1:, :] - centre[..., :-1, :]
        angle = torch.atan2(chords[..., 1], chords[..., 0])
        turn = torch.remainder(angle[..., 1:] - angle[..., :-1] + math.pi, 2 * math.pi) - math.pi
        span = 0.5 * (chords[..., 1:, :].norm(dim=-1) + chords[..., :-1, :].norm(dim=-1))
        kappa = (turn / span).abs().clamp(min=1e-4)  # at lookahead[1:4]
        v_turn = torch.sqrt(self.a_lat / kappa).clamp(max=self.top_speed)
        room = (d[1:4] - d[1]).clamp(min=0.0)
        speed = torch.sqrt(v_turn.square() + 2 * self.a_brake * room).amin(-1)
        speed = speed.clamp(max=self.top_speed)

        # the centreline near the car as a polyline in the vehicle frame, from 10 m behind
        # to the last TrackPoint: the opponent and the zone in track coordinates on it
        n0 = torch.stack((sin_e, cos_e), -1)  # the track's left normal at the car
        t0 = torch.stack((cos_e, -sin_e), -1)
        c0 = -ey[..., None] * n0
        poly = torch.cat([(c0 - 10.0 * t0)[..., None, :], c0[..., None, :], centre], -2)
        normals = torch.cat([n0[..., None, :], n0[..., None, :], normal], -2)
        dist = torch.cat([d.new_tensor([-10.0, 0.0]), d])

        gap, v_o = obs[..., 29], obs[..., 32] + v_t
        _, ey_o = _on_polyline(obs[..., 30:32], poly, normals, dist)
        near = (gap > -self.clear_ahead) & (gap < self.engage)
        own_side = torch.where(ey >= ey_o, 1.0, -1.0)
        side = torch.where(ey_o > 0.4, -1.0, torch.where(ey_o < -0.4, 1.0, own_side))
        side = torch.where(gap < 0, own_side, side)  # alongside or past: keep to its side
        limit = hw - self.edge
        aim = torch.where(near, (ey_o + side * self.pass_offset).clamp(-limit, limit), 0.0 * ey)
        behind = (gap > 0.0) & (gap < 20.0) & ((ey - ey_o).abs() < 3.2)
        patient = (v_o + self.closing * (gap - self.follow)).clamp(min=0.0)
        speed = torch.where(behind, torch.minimum(speed, patient), speed)
        # reachable within the planner's horizon: eq. (39) is a norm, so a speed error it
        # cannot close would swamp the lateral part of the velocity error
        speed = torch.minimum(speed, v_t.clamp(min=0.0) + self.speed_up)

        # the danger zone
        dx, dy = obs[..., 34] - obs[..., 0], obs[..., 35] - obs[..., 1]
        c, s = obs[..., 4], obs[..., 5]
        zone = torch.stack((dx * c + dy * s, dy * c - dx * s), -1)  # vehicle frame
        along, ey_z = _on_polyline(zone, poly, normals, dist)
        half = 0.5 * obs[..., 36]
        clear = half + self.zone_clearance
        ahead = (along > -half - 2.0) & (along < self.engage)
        blocking = ahead & (((ey_z - aim).abs() < clear) | ((ey_z - ey).abs() < clear))
        # the middle of the wider corridor beside the zone
        right, left = 0.5 * (ey_z - half - hw), 0.5 * (ey_z + half + hw)
        away = torch.where(ey_z > 0, right, left)
        aim = torch.where(blocking, away, aim)
        slow = blocking & ~(near & (gap < 0))  # not with the opponent just behind
        speed = torch.where(slow, speed.clamp(max=self.zone_speed), speed)

        # direction: pure pursuit of the line's point `horizon` s of driving ahead (vehicle
        # frame), interpolated between the TrackPoints
        line = centre + aim[..., None, None] * normal  # [..., 5, 2]
        reach = (self.horizon * v_t).clamp(min=float(d[0]), max=float(d[-1]))
        k = torch.searchsorted(d, reach.unsqueeze(-1)).clamp(1, len(lookahead) - 1)  # [..., 1]
        d0, d1 = d[k - 1], d[k]
        w = ((reach.unsqueeze(-1) - d0) / (d1 - d0)).unsqueeze(-1)
        take = lambda j: torch.take_along_dim(line, j.unsqueeze(-1), dim=-2)
        target = ((1 - w) * take(k - 1) + w * take(k)).squeeze(-2)
        direction = target / target.norm(dim=-1, keepdim=True).clamp(min=1e-6)
        vx, vy = speed * direction[..., 0], speed * direction[..., 1]
        world = torch.stack((vx * c - vy * s, vx * s + vy * c), -1)
        return (world / world_speed).clamp(-1.0, 1.0)


def _on_polyline(p: Tensor, poly: Tensor, normals: Tensor, dist: Tensor) -> tuple[Tensor, Tensor]:
    """(arc-length, lateral offset) ``[...]`` of points ``p [..., 2]`` on the polyline
    ``poly [..., n, 2]`` (vertex normals ``[..., n, 2]``, vertex arc-lengths ``dist [n]``):
    the nearest segment's foot point and the normal interpolated there."""
    a, b = poly[..., :-1, :], poly[..., 1:, :]
    seg = b - a
    q = p[..., None, :] - a
    t = ((q * seg).sum(-1) / seg.square().sum(-1).clamp(min=1e-9)).clamp(0.0, 1.0)
    off = q - t[..., None] * seg
    k = off.square().sum(-1).argmin(-1, keepdim=True)  # [..., 1]
    tk = torch.take_along_dim(t, k, -1)
    pick = lambda v: torch.take_along_dim(v, k[..., None], -2).squeeze(-2)
    n = pick(normals[..., :-1, :]) * (1 - tk) + pick(normals[..., 1:, :]) * tk
    along = dist[:-1][k.squeeze(-1)] + tk.squeeze(-1) * (dist[1:] - dist[:-1])[k.squeeze(-1)]
    return along, (pick(off) * n).sum(-1)


#: the driver `RacingModel.scripted_action` uses
SCRIPTED = ScriptedDriver()
