"""Racing with a danger zone (App. B.3), embedded: a dynamic bicycle on a closed track, no CARLA.

The true system is a **dynamic bicycle with Pacejka lateral tire forces** (`dynamic_bicycle_step`);
the planner's model (`RacingModel`) is a **kinematic bicycle** (Polack et al. 2017), a deliberate
mismatch as in the paper. Task logic (track, reward, episode end, observation) is
`envs.racing_task`, shared with a CARLA-backed env.

| | |
|---|---|
| track | stadium: 80 m straights, 30 m turn radius, 6 m half-width, 348.5 m lap (`TrackParams`) |
| car | 1.2 t, lf/lr 1.0/1.5 m, μ = 1, 80 kW; 10 Euler substeps of 10 ms (`CarParams`) |
| ego | starts at the start line, ``ey ~ U(±1 m)``, along the track at ``U(8, 12)`` m/s |
| opponent | drives the centreline at 10 m/s, starting ``U(15, 35)`` m ahead |
| danger zone | square, side ``U(3, 5)`` m, centre at arc-length ``U(50, 300)`` m, inside the track |
| action | ``[steer, throttle] ∈ [-1, 1]²``: wheel angle ``steer * 0.45`` rad; throttle > 0 drives, < 0 brakes |
| observation | ``[37]`` float32, see `envs.racing_task.observation` |
| reward | `envs.racing_task.step_reward`: passing, 10/m progress, -5·|b|, -150 zone, -100 off-track, -1000 collision, +1000 goal |
| terminated | off-track (``|b| > 1``), collision (centres within 2.9 m), goal (one lap, 348.5 m) |
| truncated | 600 steps (60 s at 10 Hz), never together with terminated |

``info`` carries ``is_success`` (goal reached), ``in_danger``, ``off_track``, ``collision`` and ``s``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from envs import racing_task as rt
from envs.base import PlannerModel, check_action

G = 9.81
#: The planner's kinematic bicycle turns with at most this share of the tyres' grip, μ·g:
#: Polack et al. (2017), whose model the paper uses, find the kinematic model consistent with
#: the dynamic one only below 0.5 μ g of lateral acceleration. Without the bound the model
#: takes any turn at any speed, so the planner, and the virtual data scored on its paths,
#: see nothing wrong in entering the R = 30 m turns at 20+ m/s, where the real car (≤ ~1 g)
#: goes off; with it, a path that is too fast for a turn runs wide in the model too.
KINEMATIC_LATERAL_LIMIT = 0.5


@dataclass(frozen=True)
class CarParams:
    """A small front-engine car (~1.2 t) on dry tarmac."""

    mass: float = 1200.0  # kg
    yaw_inertia: float = 1600.0  # kg m^2
    lf: float = 1.0  # CoG to front axle (m)
    lr: float = 1.5  # CoG to rear axle (m)
    max_steer: float = 0.45  # road-wheel angle at |steer| = 1 (rad)
    drive_force: float = 5000.0  # peak tractive force (N)
    max_power: float = 80e3  # engine power limit (W)
    brake_force: float = 10000.0  # peak braking force (N)
    drag: float = 0.4  # 0.5 ρ C_d A (N s^2 / m^2)
    rolling: float = 0.015  # rolling-resistance coefficient
    mu: float = 1.0  # tire-road friction
    tire_b: float = 10.0  # Pacejka B, C, E (dry tarmac)
    tire_b_rear: float = 12.0  # stiffer rear: a road car's understeer
    tire_c: float = 1.9
    tire_e: float = 0.97
    substeps: int = 10  # Euler substeps per env step
    blend_speed: tuple[float, float] = (1.5, 3.0)  # kinematic below, dynamic above (m/s)

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            values = value if isinstance(value, tuple) else (value,)
            if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values):
                raise ValueError(f"CarParams.{name} must be finite and > 0, got {value!r}")
        if not isinstance(self.substeps, int) or not self.max_steer < math.pi / 2:
            raise ValueError("CarParams.substeps must be an int >= 1 and max_steer in (0, π/2)")
        if not self.blend_speed[0] < self.blend_speed[1]:
            raise ValueError(
                f"CarParams.blend_speed must be (low, high), low < high, got {self.blend_speed}"
            )


def pacejka(alpha: float, peak: float, b: float, p: CarParams) -> float:
    """Lateral tire force (N) of the Magic Formula (stiffness ``b``) at slip angle ``alpha`` (rad)."""
    ba = b * alpha
    return peak * math.sin(p.tire_c * math.atan(ba - p.tire_e * (ba - math.atan(ba))))


def dynamic_bicycle_step(
    car: rt.VehicleState, u: np.ndarray, p: CarParams, dt: float
) -> rt.VehicleState:
    """One env step of the true system: a dynamic bicycle with Pacejka lateral forces.

    Body-frame equations (Rajamani, *Vehicle Dynamics and Control*, §2.3), ``p.substeps`` explicit
    Euler substeps. Drive force ``min(F_drive, P / vx)`` (throttle > 0) or brake force
    (throttle < 0, no reverse), less drag and rolling resistance. Below ``blend_speed`` the
    lateral states relax to the kinematic ones (slip angles are ill-posed at standstill).
    """
    x, y, psi, vx, vy, r = car
    delta, throttle = p.max_steer * float(u[0]), float(u[1])
    wheelbase, h = p.lf + p.lr, dt / p.substeps
    peak_f, peak_r = p.mu * p.mass * G * p.lr / wheelbase, p.mu * p.mass * G * p.lf / wheelbase
    cd, sd, td = math.cos(delta), math.sin(delta), math.tan(delta)
    lo, hi = p.blend_speed
    for _ in range(p.substeps):
        vxe = max(vx, 1.0)
        fyf = pacejka(delta - math.atan2(vy + p.lf * r, vxe), peak_f, p.tire_b, p)
        fyr = pacejka(-math.atan2(vy - p.lr * r, vxe), peak_r, p.tire_b_rear, p)
        if throttle >= 0:
            fx = throttle * min(p.drive_force, p.max_power / max(vx, 0.1))
        else:
            fx = throttle * p.brake_force
        if vx > 0:
            fx -= p.drag * vx * vx + p.rolling * p.mass * G
        w = min(max((vx - lo) / (hi - lo), 0.0), 1.0)
        ax = w * ((fx - fyf * sd) / p.mass + vy * r) + (1 - w) * fx / p.mass
        ay = (fyr + fyf * cd) / p.mass - vx * r
        yaw_acc = (p.lf * fyf * cd - p.lr * fyr) / p.yaw_inertia
        c, s = math.cos(psi), math.sin(psi)
        x, y, psi = x + h * (vx * c - vy * s), y + h * (vx * s + vy * c), psi + h * r
        vx, vy, r = max(vx + h * ax, 0.0), vy + h * ay, r + h * yaw_acc
        if w < 1.0:
            vy = w * vy + (1 - w) * vx * td * p.lr / wheelbase
            r = w * r + (1 - w) * vx * td / wheelbase
    return rt.VehicleState(x, y, psi, vx, vy, r)


class RacingTaskEnv(gym.Env):
    """What every racing env shares on top of `envs.racing_task`, whatever moves the cars:
    the observation, the planner model and the picture of the current state."""

    track: rt.Track
    task: rt.TaskParams
    car: CarParams
    state: rt.VehicleState | None

    def _obs(self) -> np.ndarray:
        ego = (self.state, self.s, self.ey, self.epsi)
        obs = rt.observation(self.track, self.task, *ego, self.opp_s, self.opp_v, self.zone)
        return obs.astype(np.float32)

    def planner_model(self) -> RacingModel:
        a_max = KINEMATIC_LATERAL_LIMIT * self.car.mu * G
        return RacingModel(self.track, self.task, self.car, max_lateral_accel=a_max)

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or self.state is None:
            return None
        return _draw(self)


class RacingDZEnv(RacingTaskEnv):
    """``rlmpc/RacingDZ-v0``; see the module docstring for the task table."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        render_mode: str | None = None,
        track: rt.TrackParams | None = None,
        task: rt.TaskParams | None = None,
        car: CarParams | None = None,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.track_params = track or rt.TrackParams()
        self.task, self.car = task or rt.TaskParams(), car or CarParams()
        self.track = rt.Track.stadium(self.track_params)
        self.task.check_against(self.track)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (rt.NOBS,), np.float32)
        self.goal_length = self.task.goal_laps * self.track.length
        self.state: rt.VehicleState | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        rng, p = self.np_random, self.task
        ey0 = float(rng.uniform(-p.start_lateral, p.start_lateral))
        x0, y0 = self.track.to_xy(0.0, ey0)
        psi0, v0 = float(self.track.heading[0]), float(rng.uniform(*p.start_speed))
        self.state = rt.VehicleState(float(x0), float(y0), psi0, v0, 0.0, 0.0)
        self.opp_s, self.opp_v = float(rng.uniform(*p.opponent_gap)), p.opponent_speed
        self.zone = rt.sample_zone(rng, self.track, p)
        s_mod, ey = self.track.project((x0, y0))
        self.s, self.ey, self.epsi = float(rt.wrap_gap(s_mod, self.track.length)), float(ey), 0.0
        self.steps = 0
        flags = dict.fromkeys(("is_success", "in_danger", "off_track", "collision"), False)
        return self._obs(), {**flags, "s": self.s}

    def step(self, action):
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        u = check_action(
            action, self.action_space.shape, self.action_space.low, self.action_space.high
        )
        self.state = dynamic_bicycle_step(self.state, u, self.car, self.task.dt)
        self.opp_s += self.opp_v * self.task.dt
        out = rt.evaluate_step(
            self.track, self.task, self.s, self.state, self.opp_s, self.opp_v, self.zone
        )
        self.s, self.ey, self.epsi = out.s, out.ey, out.epsi
        self.steps += 1
        terminated, truncated, info = out.episode_flags(self.steps, self.task)
        return self._obs(), out.reward, terminated, truncated, info


class _Tables(NamedTuple):
    """`envs.racing_task.Track`'s tables as tensors, packed for `RacingModel._lookup`.

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

    Planner state ``x [..., 15]``:

    | index | content |
    |---|---|
    | 0-5 | ego X, Y (m), yaw ψ (rad), body velocity vx, vy (m/s), yaw rate r (rad/s) |
    | 6-8 | ego track coordinates: s (unwrapped arc-length from the start line), ey, eψ |
    | 9-10 | opponent arc-length s_o and speed v_o (it drives the centreline at constant speed) |
    | 11-14 | danger zone (cx, cy, w, h), w = h = s_D |

    ``dynamics`` integrates ``ṡ = v cos(eψ+β) / (1 - κ(s) ey)``, ``ėy = v sin(eψ+β)``,
    ``ėψ = v sin β / lr - κ(s) ṡ``, ``v̇ = a`` with slip ``β = atan(lr tan δ / (lf + lr))`` and
    ``a = throttle * F_drive / m`` (or ``* F_brake / m`` braking): no tire slip, no yaw inertia, no
    drag, no power limit. With ``max_lateral_accel`` (the env's model: `KINEMATIC_LATERAL_LIMIT`
    · μ g) the path's curvature ``sin β / lr`` is capped at ``a_max / v²``: beyond it the car
    runs wide instead of turning (``python -m envs.model_error --env racing``: one-step error
    0.76 of the step's motion, planner-driven, against 2.10 without the cap). X, Y, ψ follow from (s, ey, eψ) on the track tables; vx, vy, r are the
    kinematic ones. The opponent advances ``v_o dt``; the zone stays.

    Targets (eq. 39), ``nt = 2``: ``[v_t*, v_n*]``, the velocity *in the track frame* (along the
    tangent, towards the left). On a closed track a world-frame ``[ẋ*, ẏ*]`` held over the horizon
    would mean a different manoeuvre on every part of the lap; in the track frame the same action
    means "this fast along the track, drifting left/right this fast" everywhere, which is what
    speeding up to overtake and sidestepping a zone or the opponent need.
    ``a ∈ [-1, 1]^2`` maps to ``v_t* ∈ target_speed``, ``v_n* ∈ ±target_lateral_speed``.

    ``reward`` is the env's dense reward (App. B.3 "reward model"); the -100 off-track, -1000
    collision and +1000 goal are ``terminal_reward``'s, on the states ``terminated`` flags
    (off-track, collision or goal, as the env), the rule every env follows.
    """

    nx, nu, na, nt, nobs = 15, 2, 2, 2, rt.NOBS
    u_low, u_high = (-1.0, -1.0), (1.0, 1.0)
    zone_slice = slice(11, 15)

    def __init__(
        self,
        track: rt.Track,
        task: rt.TaskParams,
        car: CarParams,
        substeps: int = 2,
        target_speed: tuple[float, float] = (0.0, 30.0),
        target_lateral_speed: float = 4.0,
        max_lateral_accel: float | None = None,
    ) -> None:
        if not isinstance(substeps, int) or substeps < 1:
            raise ValueError(f"substeps must be an int >= 1, got {substeps!r}")
        if not 0 <= target_speed[0] < target_speed[1] or not target_lateral_speed > 0:
            raise ValueError(
                f"target_speed must be (low, high) with 0 <= low < high and target_lateral_speed > 0, "
                f"got {target_speed}, {target_lateral_speed}"
            )
        self.track, self.task, self.car, self.substeps = track, task, car, substeps
        if max_lateral_accel is not None and not max_lateral_accel > 0:
            raise ValueError(f"max_lateral_accel must be None or > 0, got {max_lateral_accel!r}")
        self.target_speed, self.target_lateral_speed = target_speed, target_lateral_speed
        self.max_lateral_accel = max_lateral_accel
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

        The segment holding ``s`` modulo the lap, as `envs.racing_task.Track.frame` finds it:
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
        shape = x.shape[:-1]
        if u.shape[:-1] != shape:
            shape = torch.broadcast_shapes(shape, u.shape[:-1])
            x, u = x.expand(*shape, self.nx), u.expand(*shape, self.nu)
        x, u = x.reshape(-1, self.nx), u.reshape(-1, self.nu).to(x.dtype)
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
        return out.view(*shape, self.nx)

    def _events(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        opponent_x, opponent_y = self._lookup(x[..., 9], "centre")
        distance = torch.hypot(x[..., 0] - opponent_x, x[..., 1] - opponent_y)
        b = x[..., 7] / self.track.half_width
        return rt.episode_end(b, distance, x[..., 6], self.goal_length, self.task)

    def reward(self, x: Tensor, u: Tensor) -> Tensor:
        """App. B.3's dense reward (progress, passing, boundary, zone); the -100 off-track,
        -1000 collision and +1000 goal are `terminal_reward`'s."""
        x1 = self.dynamics(x, u)
        v_rel = self.tracked(x1)[..., 0] - x1[..., 10]
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
        out = x.new_empty(x.shape[0], self.nobs)  # columns: `envs.racing_task.observation`
        px, py, psi, s, ey, epsi, s_o = x[:, 0:1], x[:, 1:2], *x[:, [2, 6, 7, 8, 9]].unbind(1)
        c, sn = torch.cos(psi, out=out[:, 4]), torch.sin(psi, out=out[:, 5])
        out[:, 0:2], out[:, 2:4], out[:, 6] = x[:, 0:2], x[:, 3:5], x[:, 5]
        torch.mul(ey, 1.0 / hw, out=out[:, 7])
        out[:, 8] = rt.wrap_angle(epsi)
        # TrackPoints: centre - car ± hw·normal, in the vehicle frame, per lookahead
        cx, cy, nx, ny, _ = self._lookup(s[:, None] + tb.lookahead, "frame")  # [M, 5] each
        cx, cy, c5, s5 = cx.sub_(px), cy.sub_(py), c[:, None], sn[:, None]
        along = torch.addcmul(cx * c5, cy, s5)  # the centre, vehicle x
        across = torch.addcmul(cy * c5, cx, s5, value=-1.0)  # vehicle y
        n_along = torch.addcmul(nx * c5, ny, s5).mul_(hw)
        n_across = torch.addcmul(ny * c5, nx, s5, value=-1.0).mul_(hw)
        points = out[:, 9:29].view(-1, tb.lookahead.shape[0], 4)  # left x, y, right x, y
        torch.add(along, n_along, out=points[..., 0])
        torch.add(across, n_across, out=points[..., 1])
        torch.sub(along, n_along, out=points[..., 2])
        torch.sub(across, n_across, out=points[..., 3])
        ox, oy = self._lookup(s_o, "centre")
        ox, oy = ox.sub_(px[:, 0]), oy.sub_(py[:, 0])
        out[:, 29] = rt.wrap_gap(s_o - s, self.track.length)
        torch.addcmul(ox * c, oy, sn, out=out[:, 30])
        torch.addcmul(oy * c, ox, sn, value=-1.0, out=out[:, 31])
        torch.sub(x[:, 10], self.tracked(x)[:, 0], out=out[:, 32])
        torch.mul(s, 1.0 / self.goal_length, out=out[:, 33])
        out[:, 34:37] = x[:, 11:14]
        return out.view(*shape, self.nobs)

    def planner_state(self, env: Any) -> np.ndarray:
        e = env.unwrapped
        return np.array(
            [*e.state, e.s, e.ey, e.epsi, e.opp_s, e.opp_v, *e.zone.as_tuple()], dtype=np.float64
        )

    def position(self, x: Tensor) -> Tensor:
        return x[..., 0:2]

    def opponent_position(self, x: Tensor) -> Tensor:
        """The opponent's point ``[..., 2]`` on the centreline (eq. 44's p_opponent)."""
        return self._lookup(x[..., 9], "centre").movedim(0, -1)

    def scripted_action(self, obs: Tensor) -> Tensor:
        """A hand-written high-level policy ``[..., na]`` for checking the planner alone (App. E).

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
        lo, hi = self.target_speed
        return torch.stack(
            (lo + 0.5 * (a[..., 0] + 1) * (hi - lo), self.target_lateral_speed * a[..., 1]), -1
        )

    def tracked(self, x: Tensor) -> Tensor:
        """Track-frame velocity ``[v_t, v_n]`` ``[..., 2]`` (along the tangent, to the left)."""
        vx, vy, epsi = x[..., 3], x[..., 4], x[..., 8]
        c, s = torch.cos(epsi), torch.sin(epsi)
        out = x.new_empty(*x.shape[:-1], 2)
        torch.mul(vx, c, out=out[..., 0]).addcmul_(vy, s, value=-1.0)
        torch.mul(vx, s, out=out[..., 1]).addcmul_(vy, c)
        return out

    def terminated(self, x: Tensor) -> Tensor:
        off, coll, goal = self._events(x)
        return off | coll | goal


def _draw(env: RacingDZEnv, width: int = 800) -> np.ndarray:
    """rgb_array frame ``[H, W, 3]`` uint8: track, start line, danger zone, opponent, ego."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame  # noqa: PLC0415  (only when rendering)

    tr, margin = env.track, 20
    left, right = tr.points + tr.half_width * tr.normal, tr.points - tr.half_width * tr.normal
    lo, hi = np.minimum(left, right).min(0), np.maximum(left, right).max(0)
    scale = (width - 2 * margin) / (hi[0] - lo[0])
    height = int((hi[1] - lo[1]) * scale) + 2 * margin

    def px(p: np.ndarray) -> list[tuple[float, float]]:
        return [(margin + (a - lo[0]) * scale, height - margin - (b - lo[1]) * scale) for a, b in p]

    def box(
        xy: Any, half_length: float, half_width: float, psi: float
    ) -> list[tuple[float, float]]:
        corners = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * (half_length, half_width)
        c, s = math.cos(psi), math.sin(psi)
        return px(np.asarray(xy) + corners @ np.array([[c, s], [-s, c]]))

    half_car = (env.task.car_length / 2, env.task.car_width / 2)
    surf = pygame.Surface((width, height))
    surf.fill((40, 120, 40))
    outer, inner = (right, left) if tr.dheading.sum() > 0 else (left, right)  # CCW: left is inside
    pygame.draw.polygon(surf, (90, 90, 90), px(outer))
    pygame.draw.polygon(surf, (40, 120, 40), px(inner))
    pygame.draw.line(surf, (255, 255, 255), *px(np.stack([left[0], right[0]])), 2)
    z = env.zone
    pygame.draw.polygon(surf, (200, 30, 30), box((z.cx, z.cy), z.w / 2, z.h / 2, 0.0))
    opp_heading = float(tr.frame(env.opp_s)[2])
    pygame.draw.polygon(surf, (30, 60, 220), box(tr.centre(env.opp_s), *half_car, opp_heading))
    pygame.draw.polygon(surf, (250, 200, 0), box(env.state[:2], *half_car, env.state.psi))
    return np.transpose(pygame.surfarray.array3d(surf), (1, 0, 2)).copy()
