"""The racing planner's model P̂: a kinematic bicycle in track (Frenet) coordinates.

A deliberate mismatch with the true system (`envs.racing.bicycle`, a dynamic bicycle with tire
forces), as in the paper. Built by every racing env from its own track, task, car and
`ModelParams` (`envs.racing.env.RacingTaskEnv.planner_model`): ``racing`` plans with the
defaults (world-frame targets, no lateral-acceleration cap, the opponent extrapolated at
constant velocity), ``racing-stadium`` with `STADIUM_MODEL` (the model before them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from envs.base import PlannerModel
from envs.racing import task as rt
from envs.racing.bicycle import CarParams, G
from envs.racing.scripted import SCRIPTED

#: The planner's kinematic bicycle turns with at most this share of the tyres' grip, μ·g:
#: Polack et al. (2017), whose model the paper uses, find the kinematic model consistent with
#: the dynamic one only below 0.5 μ g of lateral acceleration. Without the bound the model
#: takes any turn at any speed, so the planner, and the virtual data scored on its paths,
#: see nothing wrong in entering the R = 30 m turns at 20+ m/s, where the real car (≤ ~1 g)
#: goes off; with it, a path that is too fast for a turn runs wide in the model too.
KINEMATIC_LATERAL_LIMIT = 0.5


@dataclass(frozen=True)
class ModelParams:
    """What the planner's model assumes where the paper leaves it open (the env's table).

    ``target_frame``: the frame of eq. (39)'s target ``x*(a)``: ``"world"`` ``[ẋ*, ẏ*] =
    world_speed · a`` (App. C's reading: a ∈ [-1, 1]² is a box of ±``world_speed`` m/s per
    axis), or ``"track"`` ``[v_t*, v_n*]`` along the tangent / to the left (``v_t* ∈
    track_speed``, ``v_n* ∈ ±track_lateral_speed``). ``lateral_limit``: cap the kinematic
    path's lateral acceleration at this share of μ g (`KINEMATIC_LATERAL_LIMIT`); None: no cap
    (the kinematic bicycle of Polack et al. as it is). ``opponent``: ``"constant_velocity"``
    extrapolates the opponent's world velocity over the horizon (its arc-length at its
    current along-track speed), ``"line"`` advances it exactly along the centreline.
    """

    target_frame: Literal["world", "track"] = "world"
    world_speed: float = 25.0
    track_speed: tuple[float, float] = (0.0, 30.0)
    track_lateral_speed: float = 4.0
    lateral_limit: float | None = None
    opponent: Literal["constant_velocity", "line"] = "constant_velocity"
    substeps: int = 2

    def __post_init__(self) -> None:
        if self.target_frame not in ("world", "track"):
            raise ValueError(f"target_frame must be 'world' or 'track', got {self.target_frame!r}")
        if self.opponent not in ("constant_velocity", "line"):
            raise ValueError(
                f"opponent must be 'constant_velocity' or 'line', got {self.opponent!r}"
            )
        if not isinstance(self.substeps, int) or self.substeps < 1:
            raise ValueError(f"substeps must be an int >= 1, got {self.substeps!r}")
        lo, hi = self.track_speed
        if not (0 <= lo < hi and self.track_lateral_speed > 0 and self.world_speed > 0):
            raise ValueError(
                "track_speed must be (low, high) with 0 <= low < high, track_lateral_speed and "
                f"world_speed > 0, got {self.track_speed}, {self.track_lateral_speed}, "
                f"{self.world_speed}"
            )
        if self.lateral_limit is not None and not self.lateral_limit > 0:
            raise ValueError(f"lateral_limit must be None or > 0, got {self.lateral_limit!r}")


#: the ``racing-stadium`` model: track-frame targets, the 0.5 μ g cap, the opponent on its line
STADIUM_MODEL = ModelParams(
    target_frame="track", lateral_limit=KINEMATIC_LATERAL_LIMIT, opponent="line"
)


class _Tables(NamedTuple):
    """`envs.racing.task.Track`'s tables as tensors, packed for `RacingModel._lookup`.

    Per segment ``i`` (``[k, N]``): ``s_i``, ``1 / length_i``, then each interpolated
    quantity's value at vertex ``i`` and its change along the segment (to vertex ``i + 1``).
    """

    bucket: Tensor  # [nb] int32: the segment holding arc-length (b·width - margin)
    per_metre: float  # buckets per metre: 1 / width
    end: Tensor  # [N]: s_{i+1}
    curvature: Tensor  # [4, N]: s, 1/len, κ, Δκ
    centre: Tensor  # [6, N]: s, 1/len, x, y, Δx, Δy
    frame: Tensor  # [12, N]: s, 1/len, x, y, normal x, y, heading, and their changes
    lookahead: Tensor  # [5]
    one: Tensor  # 0-d


class RacingModel(PlannerModel):
    """Kinematic bicycle in track (Frenet) coordinates (Polack et al. 2017): the planner's P̂.

    Planner state ``x [..., 19]``:

    | index | content |
    |---|---|
    | 0-5 | ego X, Y (m), yaw ψ (rad), body velocity vx, vy (m/s), yaw rate r (rad/s) |
    | 6-8 | ego track coordinates: s (unwrapped arc-length from the start line), ey, eψ |
    | 9-10 | opponent arc-length s_o and its speed along the track v_o |
    | 11-14 | opponent world position X_o, Y_o and world velocity Ẋ_o, Ẏ_o |
    | 15-18 | danger zone (cx, cy, w, h), w = h = s_D |

    ``dynamics`` integrates ``ṡ = v cos(eψ+β) / (1 - κ(s) ey)``, ``ėy = v sin(eψ+β)``,
    ``ėψ = v sin β / lr - κ(s) ṡ``, ``v̇ = a`` with slip ``β = atan(lr tan δ / (lf + lr))`` and
    ``a = throttle * F_drive / m`` (or ``* F_brake / m`` braking): no tire slip, no yaw inertia, no
    drag, no power limit. With ``ModelParams.lateral_limit`` the path's curvature ``sin β / lr``
    is capped at ``a_max / v²`` (``a_max`` = the limit · μ g): beyond it the car runs wide
    instead of turning (``python -m rlmpc.bench.model_error --env racing-stadium``: one-step error 0.76
    of the step's motion, planner-driven, against 2.10 without the cap). X, Y, ψ follow from
    (s, ey, eψ) on the track tables; vx, vy, r are the kinematic ones. The zone stays.

    The opponent (``ModelParams.opponent``): ``"constant_velocity"`` moves ``X_o, Y_o`` by
    ``(Ẋ_o, Ẏ_o) dt`` (eq. 44's ``p_opponent``: a straight line at its current velocity, what a
    planner can know of another car) and ``s_o`` by ``v_o dt`` (the same motion projected on
    the track at its start, to first order); ``"line"`` moves ``s_o`` by ``v_o dt`` and puts it
    on the centreline at ``s_o`` (columns 11-14 unused).

    Targets (eq. 39), ``nt = 2``, ``a ∈ [-1, 1]²`` (`ModelParams.target_frame`): world frame
    ``[ẋ*, ẏ*] = world_speed · a``, compared with the world velocity of the ego; or track
    frame ``[v_t*, v_n*]`` (``v_t* ∈ track_speed``, ``v_n* ∈ ±track_lateral_speed``), compared
    with the velocity along the tangent and to the left.

    ``reward`` is the env's dense reward (App. B.3 "reward model"); the -100 off-track, -1000
    collision and +1000 goal are ``terminal_reward``'s, on the states ``terminated`` flags
    (off-track, collision or goal, as the env), the rule every env follows.
    """

    nx, nu, na, nt, nobs = 19, 2, 2, 2, rt.NOBS
    u_low, u_high = (-1.0, -1.0), (1.0, 1.0)
    zone_slice = slice(15, 19)

    def __init__(
        self,
        track: rt.Track,
        task: rt.TaskParams,
        car: CarParams,
        params: ModelParams | None = None,
    ) -> None:
        self.params = params = params or ModelParams()
        self.track, self.task, self.car, self.substeps = track, task, car, params.substeps
        self.target_speed, self.target_lateral_speed = (
            params.track_speed,
            params.track_lateral_speed,
        )
        limit = params.lateral_limit
        self.max_lateral_accel = None if limit is None else limit * car.mu * G
        self.world_frame = params.target_frame == "world"
        self.constant_velocity = params.opponent == "constant_velocity"
        self.contact_distance = float(task.contact_distance)
        self.goal_length = task.goal_laps * track.length
        self._cache: dict[tuple[torch.device, torch.dtype], _Tables] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": {}}

    def _tables(self, like: Tensor) -> _Tables:
        key = (like.device, like.dtype)
        if key not in self._cache:
            tr = self.track
            # buckets narrower than the shortest segment less a margin: each bucket's arc-lengths
            # lie on its segment or the next, whatever the float round-off in finding the bucket
            margin = 1e-3 * tr.seg_len.min()
            width = tr.seg_len.min() - 2 * margin
            start = np.arange(math.ceil(tr.length / width) + 1) * width - margin
            bucket = np.clip(np.searchsorted(tr.s, start, side="right") - 1, 0, len(tr.seg_len) - 1)
            nxt = lambda a: np.roll(a, -1, axis=0) - a
            seg = np.concatenate([tr.points, tr.normal, tr.heading[:, None]], 1).T
            dseg = np.concatenate([tr.seg, nxt(tr.normal), tr.dheading[:, None]], 1).T
            locate = np.stack([tr.s[:-1], 1.0 / tr.seg_len])
            rows = lambda *a: torch.as_tensor(
                np.concatenate(a), dtype=like.dtype, device=like.device
            )
            self._cache[key] = _Tables(
                torch.as_tensor(bucket, dtype=torch.int32, device=like.device),
                1.0 / width,
                rows(tr.s[1:]),
                rows(locate, tr.curvature[None], nxt(tr.curvature)[None]),
                rows(locate, seg[0:2], dseg[0:2]),
                rows(locate, seg, dseg),
                rows(self.task.lookahead),
                rows([1.0])[0],
            )
        return self._cache[key]

    def _lookup(self, s: Tensor, table: str) -> Tensor:
        """`_Tables` ``table``'s values ``[(k - 2) / 2, ...]`` interpolated at arc-lengths ``s [...]``.

        The segment holding ``s`` modulo the lap, as `envs.racing.task.Track.frame` finds it:
        from `_Tables.bucket`, or the next one.
        """
        tb = self._tables(s)
        sm = torch.remainder(s.reshape(-1), self.track.length)
        i = (sm * tb.per_metre).to(torch.int32).clamp_(0, tb.bucket.shape[0] - 1)
        i = tb.bucket.index_select(0, i)
        i.add_(sm >= tb.end.index_select(0, i)).clamp_(max=tb.end.shape[0] - 1)
        rows = getattr(tb, table).index_select(1, i)
        f = (sm - rows[0]).mul_(rows[1])
        half = (rows.shape[0] - 2) // 2
        return torch.addcmul(rows[2 : 2 + half], f, rows[2 + half :]).view(half, *s.shape)

    def dynamics(self, x: Tensor, u: Tensor) -> Tensor:
        tb, c, dt, h = self._tables(x), self.car, self.task.dt, self.task.dt / self.substeps
        x, u, shape = self.step_rows(x, u)
        u = u.to(x.dtype)
        steer, throttle = torch.clamp(u.t(), -1.0, 1.0, out=u.new_empty(2, u.shape[0]))
        beta = torch.atan(torch.tan(steer * c.max_steer).mul_(c.lr / (c.lf + c.lr)))
        state = x.new_empty(8, x.shape[0]).copy_(x[:, 3:11].t())  # vx vy r s ey eψ s_o v_o
        v = torch.hypot(state[0], state[1])
        if self.max_lateral_accel is not None:
            # the path's curvature sin β / lr at most a_max / v² (Polack et al. 2017's
            # validity bound for the kinematic model): steering beyond it does not turn more
            limit = (self.max_lateral_accel * c.lr / v.square().clamp(min=1e-6)).clamp_(max=1.0)
            beta = torch.asin(torch.sin(beta).clamp(-limit, limit))
        sin_beta, cos_beta = torch.sin(beta), torch.cos(beta)
        brake, drive = c.brake_force / c.mass, c.drive_force / c.mass
        accel = torch.add(throttle * brake, throttle.clamp(min=0.0), alpha=drive - brake)
        yaw_rate = sin_beta * (1.0 / c.lr)
        s, ey, epsi = state[3], state[4], state[5]
        for _ in range(self.substeps):
            kappa = self._lookup(s, "curvature")[0]
            heading = epsi + beta
            progress = torch.addcmul(tb.one, kappa, ey, value=-1.0).clamp_(min=0.1)
            s_dot = torch.cos(heading).mul_(v).div_(progress)
            s, ey, epsi, v = (
                torch.add(s, s_dot, alpha=h),
                torch.addcmul(ey, torch.sin(heading), v, value=h),
                torch.addcmul(epsi, yaw_rate, v, value=h).sub_(kappa * s_dot, alpha=h),
                torch.add(v, accel, alpha=h).clamp_(min=0.0),
            )
        centre_x, centre_y, normal_x, normal_y, heading = self._lookup(s, "frame")
        ego = x.new_empty(10, x.shape[0])  # X Y ψ vx vy r s ey eψ s_o
        torch.addcmul(centre_x, ey, normal_x, out=ego[0])
        torch.addcmul(centre_y, ey, normal_y, out=ego[1])
        torch.add(heading, epsi, out=ego[2])
        torch.mul(v, cos_beta, out=ego[3])
        torch.mul(v, sin_beta, out=ego[4])
        torch.mul(v, yaw_rate, out=ego[5])
        torch.stack([s, ey, epsi], out=ego[6:9])
        torch.add(state[6], state[7], alpha=dt, out=ego[9])
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
        out[:, :10] = ego.t()
        out[:, 10:] = x[:, 10:]
        if self.constant_velocity:  # X_o, Y_o at the opponent's current world velocity
            torch.add(x[:, 11:13], x[:, 13:15], alpha=dt, out=out[:, 11:13])
        return out.view(*shape, self.nx)

    def _events(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        opponent = self.opponent_position(x)
        distance = torch.hypot(x[..., 0] - opponent[..., 0], x[..., 1] - opponent[..., 1])
        b = x[..., 7] / self.track.half_width
        return rt.episode_end(b, distance, x[..., 6], self.goal_length, self.task)

    def reward(self, x: Tensor, u: Tensor) -> Tensor:
        """App. B.3's dense reward (progress, passing, boundary, zone); the -100 off-track,
        -1000 collision and +1000 goal are `terminal_reward`'s."""
        x1 = self.dynamics(x, u)
        v_rel = self.track_velocity(x1)[..., 0] - x1[..., 10]
        gap = rt.wrap_gap(x1[..., 6] - x1[..., 9], self.track.length)
        b = x1[..., 7] / self.track.half_width
        progress = x1[..., 6] - x[..., 6]
        return rt.step_reward(
            progress, v_rel, gap, b, self.in_danger(x1), False, False, False, self.task
        )

    def terminal_reward(self, x: Tensor) -> Tensor:
        """App. B.3's -100 off-track, -1000 collision, +1000 goal for the events at ``x``."""
        off, coll, goal = self._events(x)
        p = self.task
        f = lambda flag, r: flag.to(x.dtype) * r
        return f(off, p.r_off_track) + f(coll, p.r_collision) + f(goal, p.r_goal)

    def observe(self, x: Tensor) -> Tensor:
        tb, hw, shape = self._tables(x), self.track.half_width, x.shape[:-1]
        x = x.reshape(-1, self.nx)
        out = x.new_empty(x.shape[0], self.nobs)  # columns: `envs.racing.task.observation`
        px, py, psi, s, ey, epsi, s_o = x[:, 0:1], x[:, 1:2], *x[:, [2, 6, 7, 8, 9]].unbind(1)
        c, sn = torch.cos(psi, out=out[:, 4]), torch.sin(psi, out=out[:, 5])
        out[:, 0:2], out[:, 2:4], out[:, 6] = x[:, 0:2], x[:, 3:5], x[:, 5]
        torch.mul(ey, 1.0 / hw, out=out[:, 7])
        out[:, 8] = rt.wrap_angle(epsi)
        # TrackPoints: centre - car ± hw·normal, per lookahead, in the world frame or the
        # vehicle frame (`TaskParams.world_points`)
        cx, cy, nx, ny, _ = self._lookup(s[:, None] + tb.lookahead, "frame")  # [M, 5] each
        cx, cy, c5, s5 = cx.sub_(px), cy.sub_(py), c[:, None], sn[:, None]
        if self.task.world_points:
            along, across, n_along, n_across = cx, cy, nx * hw, ny * hw
        else:
            along = torch.addcmul(cx * c5, cy, s5)  # the centre, vehicle x
            across = torch.addcmul(cy * c5, cx, s5, value=-1.0)  # vehicle y
            n_along = torch.addcmul(nx * c5, ny, s5).mul_(hw)
            n_across = torch.addcmul(ny * c5, nx, s5, value=-1.0).mul_(hw)
        points = out[:, 9:29].view(-1, tb.lookahead.shape[0], 4)  # left x, y, right x, y
        torch.add(along, n_along, out=points[..., 0])
        torch.add(across, n_across, out=points[..., 1])
        torch.sub(along, n_along, out=points[..., 2])
        torch.sub(across, n_across, out=points[..., 3])
        if self.constant_velocity:
            ox, oy = x[:, 11] - px[:, 0], x[:, 12] - py[:, 0]
        else:
            ox, oy = self._lookup(s_o, "centre")
            ox, oy = ox.sub_(px[:, 0]), oy.sub_(py[:, 0])
        out[:, 29] = rt.wrap_gap(s_o - s, self.track.length)
        torch.addcmul(ox * c, oy, sn, out=out[:, 30])
        torch.addcmul(oy * c, ox, sn, value=-1.0, out=out[:, 31])
        torch.sub(x[:, 10], self.track_velocity(x)[:, 0], out=out[:, 32])
        torch.mul(s, 1.0 / self.goal_length, out=out[:, 33])
        out[:, 34:37] = x[:, 15:18]
        return out.view(*shape, self.nobs)

    def planner_state(self, env: Any) -> np.ndarray:
        e = env.unwrapped
        opp = e.opp
        return np.array(
            [*e.state, e.s, e.ey, e.epsi, e.opp_s, e.opp_v, opp.x, opp.y,
             *rt.world_velocity(opp), *e.zone.as_tuple()],
            dtype=np.float64,
        )  # fmt: skip

    def position(self, x: Tensor) -> Tensor:
        return x[..., 0:2]

    def opponent_position(self, x: Tensor) -> Tensor:
        """The opponent's point ``[..., 2]`` (eq. 44's p_opponent): ``X_o, Y_o``, or its
        centreline point at ``s_o`` (``ModelParams.opponent`` ``"line"``)."""
        if self.constant_velocity:
            return x[..., 11:13]
        return self._lookup(x[..., 9], "centre").movedim(0, -1)

    def scripted_action(self, obs: Tensor) -> Tensor:
        """A hand-written high-level policy ``[..., na]`` for checking the planner alone (App. E).

        World-frame targets (`ScriptedDriver`): the velocity towards a point on the chosen line
        ahead at a curvature-limited speed, the line moved out to pass the opponent and clear
        of the danger zone. Track-frame targets: `_scripted_track`.
        """
        if self.world_frame:
            return SCRIPTED(obs, self.track.half_width, self.task.lookahead,
                            self.params.world_speed, self.task.world_points)  # fmt: skip
        return self._scripted_track(obs)

    def _scripted_track(self, obs: Tensor) -> Tensor:
        """`scripted_action` for track-frame targets (``racing-stadium``).

        Speed: at most 18 m/s, and at most ``sqrt(4 m/s² / κ)`` for the sharpest curvature κ
        read off the TrackPoints 10-30 m ahead. Line: the centreline, or 3 m to the left of
        it while the opponent is 0-25 m ahead, or 2 m clear of the danger zone while it lies
        0-25 m ahead across the car's path; ``v_n* = clip(ey* - ey, ±3)`` m/s.
        """
        hw, lo, hi = self.track.half_width, *self.target_speed
        ey = obs[..., 7] * hw
        lookahead = torch.as_tensor(self.task.lookahead, dtype=obs.dtype, device=obs.device)
        points = obs[..., 9:29].unflatten(-1, (len(self.task.lookahead), 4))
        centre_y = 0.5 * (points[..., 1] + points[..., 3])  # the centre's lateral offset [..., 5]
        kappa = (2.0 * centre_y / lookahead.square())[..., 1:4].abs().amax(-1)
        speed = torch.sqrt(4.0 / kappa.clamp(min=1e-4)).clamp(max=18.0)
        aim = torch.zeros_like(ey)
        gap = obs[..., 29]
        aim = torch.where((gap > 0) & (gap < 25.0), torch.full_like(aim, 3.0), aim)
        dx, dy = obs[..., 34] - obs[..., 0], obs[..., 35] - obs[..., 1]
        c, s, half = obs[..., 4], obs[..., 5], 0.5 * obs[..., 36]
        along, across = dx * c + dy * s, dy * c - dx * s
        blocking = (along > 0) & (along < 25.0) & (across.abs() < half + 1.5)
        side = torch.where(across >= 0, -1.0, 1.0)  # pass on the side away from the zone
        aim = torch.where(blocking, (ey + across + side * (half + 2.0)).clamp(-4.0, 4.0), aim)
        lateral = (aim - ey).clamp(-3.0, 3.0)
        a0 = 2.0 * (speed - lo) / (hi - lo) - 1.0
        return torch.stack((a0, lateral / self.target_lateral_speed), -1).clamp(-1.0, 1.0)

    def others(self, x: Tensor) -> Tensor:
        return self.opponent_position(x).unsqueeze(-2)

    def marks(self, positions: np.ndarray, others: np.ndarray) -> tuple[str, np.ndarray]:
        """The overtakes: the steps at which the ego's arc-length passes the opponent's (the
        gap between them changes sign, within a car length of each other)."""
        if others.shape[1] == 0 or len(positions) < 2:
            return "overtake", np.zeros(0, np.int64)
        tr = self.track
        gap = rt.wrap_gap(tr.project(positions)[0] - tr.project(others[:, 0])[0], tr.length)
        near = np.abs(gap[1:]) < self.task.car_length
        return "overtake", np.flatnonzero((gap[:-1] < 0) & (gap[1:] >= 0) & near) + 1

    def draw(self, ax: Any) -> None:
        """The centreline (dashed) and both boundaries of the closed track."""
        tr = self.track
        loop = lambda p: np.concatenate([p, p[:1]])
        ax.plot(*loop(tr.points).T, color="0.6", lw=0.8, ls="--")
        for side in (1.0, -1.0):
            ax.plot(*loop(tr.points + side * tr.half_width * tr.normal).T, color="0.2", lw=1.0)

    def boundary_proportion(self, x: Tensor, margin: float = 0.0) -> Tensor:
        """BP of eq. (45): ``|ey| / (half_width - margin)`` ``[...]``, 1 on the boundary
        (``margin`` m inside it)."""
        return x[..., 7].abs() / (self.track.half_width - margin)

    def target(self, a: Tensor) -> Tensor:
        a = a.clamp(-1.0, 1.0)
        if self.world_frame:
            return a * self.params.world_speed
        lo, hi = self.target_speed
        return torch.stack(
            (lo + 0.5 * (a[..., 0] + 1) * (hi - lo), self.target_lateral_speed * a[..., 1]), -1
        )

    def tracked(self, x: Tensor) -> Tensor:
        """The velocity eq. (39) compares with the target ``[..., 2]``: world ``[ẋ, ẏ]`` or
        track-frame ``[v_t, v_n]`` (`track_velocity`), as ``ModelParams.target_frame``."""
        return self.world_velocity(x) if self.world_frame else self.track_velocity(x)

    def world_velocity(self, x: Tensor) -> Tensor:
        """World-frame velocity ``[ẋ, ẏ]`` ``[..., 2]`` of the ego."""
        return _rotate(x[..., 3], x[..., 4], x[..., 2], x.new_empty(*x.shape[:-1], 2))

    def track_velocity(self, x: Tensor) -> Tensor:
        """Track-frame velocity ``[v_t, v_n]`` ``[..., 2]`` (along the tangent, to the left)."""
        return _rotate(x[..., 3], x[..., 4], x[..., 8], x.new_empty(*x.shape[:-1], 2))

    def tracking_error_parts(self, x: Tensor, target: Tensor) -> tuple[Tensor, ...]:
        """The tracked velocity less the target, component by component ``[...]`` each
        (track frame: `tracking_error`'s components, as the stadium's planner always had)."""
        if not self.world_frame:
            return super().tracking_error_parts(x, target)
        vx, vy = x[..., 3], x[..., 4]
        c, s = torch.cos(x[..., 2]), torch.sin(x[..., 2])
        first = torch.mul(vx, c).addcmul_(vy, s, value=-1.0)
        second = torch.mul(vx, s).addcmul_(vy, c)
        return first - target[..., 0], second - target[..., 1]  # broadcast over candidates

    def terminated(self, x: Tensor) -> Tensor:
        off, coll, goal = self._events(x)
        return off | coll | goal


def _rotate(vx: Tensor, vy: Tensor, angle: Tensor, out: Tensor) -> Tensor:
    """``R(angle) [vx, vy]`` into ``out [..., 2]``."""
    c, s = torch.cos(angle), torch.sin(angle)
    torch.mul(vx, c, out=out[..., 0]).addcmul_(vy, s, value=-1.0)
    torch.mul(vx, s, out=out[..., 1]).addcmul_(vy, c)
    return out
