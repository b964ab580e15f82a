"""The Racing task of App. B.3 without its vehicle simulator: reward, episode end, observation.

Everything here takes vehicle states as numpy values (or Python floats) and never touches a
simulator, so every racing env (`envs.racing.env.RacingTaskEnv`: on the bicycle simulator or
on CARLA) shares the track (`envs.racing.track`, re-exported here), the projection onto it,
the reward, the episode end and the observation.

Track-frame conventions: arc-length ``s`` (m) along the centreline in the driving direction
(counter-clockwise for the default stadium), 0 at the start line; lateral offset ``ey`` (m, positive to the left);
heading error ``epsi`` (rad, wrapped to [-π, π)); boundary deviation ``b = ey / half_width``
(``|b| = 1`` on the boundary). The env keeps ``s`` unwrapped (it grows past the lap length and
every episode starts at the start line, ``s ≈ 0``), so ``s`` is the distance driven along the track.

The reward and episode-end functions use only arithmetic that numpy arrays, torch tensors and
Python floats share, so the planner's reward model calls the very functions the env uses.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from envs.danger import DangerZone
from envs.racing.track import (
    Track,
    _finite,
    _require,
    _require_pair,
    speed_profile,
    wrap_angle,
    wrap_gap,
)

#: number of lookahead distances for the TrackPoint observation (fixed, so nobs is a constant)
N_LOOKAHEAD = 5
#: observation size: vehicle 7, TrackState 2, TrackPoint 4 per lookahead, opponent 4, progress 1,
#: danger zone 3
NOBS = 7 + 2 + 4 * N_LOOKAHEAD + 4 + 1 + 3


@dataclass(frozen=True)
class TaskParams:
    """Episode layout, reward weights and episode end of the Racing task (App. B.3).

    The defaults are ``racing``'s (the circuit: `envs.racing.env` tables them with the
    measurements behind them); `STADIUM_TASK` is ``racing-stadium``'s. The opponent's top speed
    and line are drawn per episode (`sample_opponent`) and the time limit binds
    (`time_limit_steps`): a car that never gets ahead of the opponent cannot finish.
    """

    dt: float = 0.1  # seconds per env step
    max_steps: int = 600  # time limit (steps) -> truncated; with opponent_time_share > 0 the
    # env sets it from its track (`for_track`)
    goal_laps: float = 1.0  # goal: this many laps of arc-length from the start
    car_length: float = 4.0  # ego and opponent body length (m)
    car_width: float = 1.8  # ego and opponent body width (m), < half_width
    start_lateral: float = 1.0  # ego starts at ey ~ U(-start_lateral, start_lateral) (m)
    start_speed: tuple[float, float] = (8.0, 12.0)  # ego start speed range (m/s)
    opponent_speed: float = 9.0  # opponent's top speed along the track (m/s), the range's middle
    opponent_speed_spread: float = 2.0  # top speed ~ U(opponent_speed ± this) per episode (m/s)
    opponent_lateral_accel: float = 4.0  # opponent's cornering limit (m/s², `speed_profile`)
    opponent_long_accel: float = 3.0  # opponent's braking / speeding-up limit (m/s²)
    opponent_gap: tuple[float, float] = (15.0, 35.0)  # opponent start, arc-length ahead (m)
    opponent_offset: float = 1.5  # its line's mean lateral offset ~ U(± this) per episode (m)
    opponent_weave: float = 1.0  # its line's weave amplitude ~ U(0, this) per episode (m)
    opponent_weave_waves: float = 3.0  # the weave's periods per lap (an integer: the line closes)
    opponent_time_share: float = 1.0  # > 0: the limit is this share of `time_limit_steps`'s
    zone_size: tuple[float, float] = (3.0, 5.0)  # danger-zone side s_D range (m), <= half_width
    zone_s: tuple[float, float] = (50.0, 850.0)  # zone centre arc-length range (m), within a lap
    lookahead: tuple[float, ...] = (5.0, 10.0, 20.0, 30.0, 40.0)  # TrackPoint distances (m)
    world_points: bool = True  # TrackPoints relative to the car in the world frame (the frame of
    # the world-frame target velocities; `envs.racing.env` gives the measurement) or, False, in
    # the vehicle frame (App. B.3's words; the stadium)
    w_progress: float = 10.0  # reward per metre of forward arc-length progress
    w_pass: float = 2.0  # passing reward per m/s of forward speed over the opponent's
    pass_window: tuple[float, float] = (20.0, 10.0)  # passing counts from this far behind/ahead (m)
    w_bound: float = 5.0  # boundary penalty per unit |b| per step
    r_zone: float = -150.0  # per step inside the danger zone
    r_off_track: float = -100.0
    r_collision: float = -1000.0
    r_goal: float = 1000.0

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            _require(_finite(value), f"TaskParams.{name}", "finite number(s)", value)
        _require(self.dt > 0, "TaskParams.dt", "> 0", self.dt)
        steps = self.max_steps
        _require(
            isinstance(steps, int) and steps >= 1, "TaskParams.max_steps", "an int >= 1", steps
        )
        for name in ("goal_laps", "car_length", "car_width", "opponent_lateral_accel",
                     "opponent_long_accel"):  # fmt: skip
            _require(getattr(self, name) > 0, f"TaskParams.{name}", "> 0", getattr(self, name))
        for name in ("start_lateral", "opponent_speed", "w_progress", "w_pass", "w_bound",
                     "opponent_offset", "opponent_weave", "opponent_time_share"):  # fmt: skip
            _require(getattr(self, name) >= 0, f"TaskParams.{name}", ">= 0", getattr(self, name))
        spread = self.opponent_speed_spread
        _require(
            0 <= spread <= self.opponent_speed,
            "TaskParams.opponent_speed_spread",
            f"in [0, opponent_speed={self.opponent_speed}]",
            spread,
        )
        waves = self.opponent_weave_waves
        _require(waves >= 1 and float(waves).is_integer(), "TaskParams.opponent_weave_waves",
                 "an integer >= 1", waves)  # fmt: skip
        _require(self.opponent_time_share <= 1.0, "TaskParams.opponent_time_share", "<= 1",
                 self.opponent_time_share)  # fmt: skip
        _require_pair("TaskParams.start_speed", self.start_speed, 0.0, 100.0)
        w = self.pass_window
        _require(len(w) == 2 and min(w) >= 0, "TaskParams.pass_window", "(behind, ahead) >= 0", w)
        la = self.lookahead
        increasing = all(0 < a < b for a, b in zip(la, la[1:] + (math.inf,), strict=True))
        _require(
            len(la) == N_LOOKAHEAD and increasing,
            "TaskParams.lookahead",
            f"{N_LOOKAHEAD} increasing distances > 0",
            la,
        )

    @property
    def contact_distance(self) -> float:
        """d_contact: centre distance at contact, each car a disc of diameter (length + width) / 2."""
        return 0.5 * (self.car_length + self.car_width)

    def check_against(self, track: Track) -> None:
        """Validate the parameters that depend on the track (ValueError naming the parameter)."""
        hw, lap, d = track.half_width, track.length, self.contact_distance
        _require(self.car_width < hw, "track half_width", f"> car_width={self.car_width}", hw)
        room = hw - self.car_width / 2
        _require(
            0 <= self.start_lateral <= room,
            "TaskParams.start_lateral",
            f"in [0, {room}]",
            self.start_lateral,
        )
        _require_pair("TaskParams.zone_size", self.zone_size, 1e-3, hw)
        _require_pair("TaskParams.zone_s", self.zone_s, 0.0, lap)
        _require_pair("TaskParams.opponent_gap", self.opponent_gap, d, lap / 2)
        line_room = hw - self.car_width / 2 - 0.5
        _require(
            self.opponent_offset + self.opponent_weave <= line_room,
            "TaskParams.opponent_offset + opponent_weave",
            f"<= {line_room} (half_width - car_width/2 - 0.5 m)",
            self.opponent_offset + self.opponent_weave,
        )

    def for_track(self, track: Track) -> TaskParams:
        """These parameters on ``track``: with ``opponent_time_share`` > 0, ``max_steps`` from
        `time_limit_steps`; otherwise unchanged."""
        self.check_against(track)
        if self.opponent_time_share <= 0:
            return self
        return dataclasses.replace(self, max_steps=time_limit_steps(track, self))


def time_limit_steps(track: Track, p: TaskParams) -> int:
    """The binding time limit: ``floor(opponent_time_share · n)`` steps, where at step ``n`` the
    fastest opponent of the task (top speed ``opponent_speed + opponent_speed_spread``) from its
    farthest start (``opponent_gap[1]`` ahead) first reaches the goal line, moving as the
    simulators move it (`OpponentSpeed`, explicit Euler). A car that never gets ahead of the
    opponent is short of the goal at step ``n - 1``, so with a share of 1 it cannot finish
    (the limit is ``n - 1`` then): the ego has to overtake."""
    speed = OpponentSpeed.of(track, p)
    top, s = p.opponent_speed + p.opponent_speed_spread, float(p.opponent_gap[1])
    goal, v, n = p.goal_laps * track.length, speed(s, top), 0
    while s < goal:
        s += v * p.dt
        v, n = speed(s, top), n + 1
    return max(1, math.floor(p.opponent_time_share * (n - 1)))


#: The ``racing-stadium`` task (the Racing task before the circuit): a fixed 10 m/s opponent on
#: the centreline, a fixed 600-step limit, zones on the 348.5 m stadium lap.
STADIUM_TASK = TaskParams(
    opponent_speed=10.0, opponent_speed_spread=0.0, opponent_offset=0.0, opponent_weave=0.0,
    opponent_time_share=0.0, zone_s=(50.0, 300.0), world_points=False,
)  # fmt: skip


class OpponentSpeed:
    """The opponent's speed by arc-length: it drives the centreline at up to its top speed and
    slows for the corners (`envs.racing.track.speed_profile` with the task's opponent limits).
    Both simulators drive the opponent by it. On RacingDZ's stadium (30 m turns) the limits
    never bind at 10 m/s: sqrt(4.0 · 30) ≈ 11 m/s (a test checks it)."""

    CACHED = 16

    def __init__(self, track: Track, lateral_accel: float, long_accel: float) -> None:
        self.track, self.limits = track, (lateral_accel, long_accel)
        self._profiles: dict[float, np.ndarray] = {}

    @classmethod
    def of(cls, track: Track, p: TaskParams) -> OpponentSpeed:
        """The opponent of task ``p`` on ``track``."""
        return cls(track, p.opponent_lateral_accel, p.opponent_long_accel)

    def profile(self, v_max: float) -> np.ndarray:
        """Speeds ``[N]`` at the track's vertices for top speed ``v_max`` (cached: the last
        `CACHED` top speeds, as a task that draws one per episode needs only its own)."""
        if v_max not in self._profiles:
            if len(self._profiles) >= self.CACHED:
                del self._profiles[next(iter(self._profiles))]
            self._profiles[v_max] = speed_profile(self.track, v_max, *self.limits)
        return self._profiles[v_max]

    def __call__(self, s: float, v_max: float) -> float:
        """The speed at arc-length ``s`` (unwrapped) for top speed ``v_max`` (m/s)."""
        if v_max <= 0:
            return 0.0
        tr = self.track
        return float(np.interp(s, tr.s[:-1], self.profile(v_max), period=tr.length))


class VehicleState(NamedTuple):
    """A car's planar state as any simulator reports it: world position and yaw, body-frame velocity."""

    x: float  # m
    y: float  # m
    psi: float  # yaw (rad)
    vx: float  # forward speed (m/s)
    vy: float  # lateral speed, positive to the left (m/s)
    r: float  # yaw rate (rad/s)


class SimStep(NamedTuple):
    """What a vehicle simulator reports after a reset or a step (`envs.racing.env.VehicleSim`)."""

    ego: VehicleState
    opp_s: float  # opponent arc-length along the track, unwrapped (m)
    opp_v: float  # opponent speed along the track (m/s)
    opp: VehicleState | None = None  # the opponent's pose and velocity; None: on the centreline


class OpponentLine(NamedTuple):
    """The opponent's line for one episode: lateral offset
    ``ey_o(s) = offset + amplitude · sin(2π waves s / length + phase)`` (m, to the left)."""

    offset: float
    amplitude: float
    waves: float
    phase: float
    length: float  # the lap (m)

    def ey(self, s: Any) -> Any:
        """``ey_o`` at arc-length ``s`` (numpy or float)."""
        k = 2 * math.pi * self.waves / self.length
        return self.offset + self.amplitude * np.sin(k * s + self.phase)

    def slope(self, s: Any) -> Any:
        """``d ey_o / ds`` at ``s``."""
        k = 2 * math.pi * self.waves / self.length
        return self.amplitude * k * np.cos(k * s + self.phase)


def sample_opponent(
    rng: np.random.Generator, track: Track, p: TaskParams
) -> tuple[float, OpponentLine | None]:
    """The episode's opponent: top speed ``~ U(opponent_speed ± opponent_speed_spread)`` and its
    line (`OpponentLine`: offset ``~ U(± opponent_offset)``, weave amplitude ``~ U(0,
    opponent_weave)``, phase ``~ U(0, 2π)``; None when both are 0: the centreline). Nothing is
    drawn for a parameter that is 0, so a task without them draws as before."""
    top = p.opponent_speed
    if p.opponent_speed_spread > 0:
        top = float(rng.uniform(top - p.opponent_speed_spread, top + p.opponent_speed_spread))
    if p.opponent_offset <= 0 and p.opponent_weave <= 0:
        return top, None
    offset = float(rng.uniform(-p.opponent_offset, p.opponent_offset))
    amplitude = float(rng.uniform(0.0, p.opponent_weave))
    phase = float(rng.uniform(0.0, 2 * math.pi))
    return top, OpponentLine(offset, amplitude, p.opponent_weave_waves, phase, track.length)


def opponent_pose(track: Track, s: float, v: float, line: OpponentLine | None) -> VehicleState:
    """The opponent at arc-length ``s`` moving along the track at ``v`` (m/s of arc-length) on
    ``line`` (None: the centreline): world position, yaw along its path, body velocity
    ``(|ṗ|, 0)`` with ``ṗ = v ((1 - κ ey_o) t + ey_o' n)``, yaw rate ``v κ``."""
    centre, normal, heading, kappa = track.frame(s)
    if line is None:
        return VehicleState(*map(float, track.centre(s)), float(heading), v, 0.0, float(v * kappa))
    ey, slope = float(line.ey(s)), float(line.slope(s))
    along, across = v * (1.0 - float(kappa) * ey), v * slope
    psi = float(heading) + math.atan2(across, along)
    x, y = centre + ey * normal
    return VehicleState(float(x), float(y), psi, math.hypot(along, across), 0.0, float(v * kappa))


def world_velocity(car: VehicleState) -> tuple[float, float]:
    """A car's world-frame velocity ``(ẋ, ẏ)`` from its body-frame ``(vx, vy)``."""
    c, s = math.cos(car.psi), math.sin(car.psi)
    return car.vx * c - car.vy * s, car.vx * s + car.vy * c


class StepOutcome(NamedTuple):
    """What one env step scores: the new track coordinates, the reward and the episode-end flags."""

    s: float  # unwrapped arc-length
    ey: float
    epsi: float
    reward: float
    off_track: bool
    collided: bool
    goal: bool
    in_zone: bool

    def episode_flags(self, steps: int, p: TaskParams) -> tuple[bool, bool, dict[str, Any]]:
        """``(terminated, truncated, info)`` after the ``steps``-th step (App. B.3: off-track,
        collision and goal terminate; the time limit truncates, never terminates)."""
        terminated = self.off_track or self.collided or self.goal
        truncated = steps >= p.max_steps and not terminated
        info = {
            "is_success": self.goal,
            "off_track": self.off_track,
            "collision": self.collided,
            "in_danger": self.in_zone,
            "s": self.s,
        }
        return terminated, truncated, info


def forward_speed(vx: Any, vy: Any, epsi: Any) -> Any:
    """Speed along the track tangent of a body-frame velocity (numpy or float)."""
    return vx * np.cos(epsi) - vy * np.sin(epsi)


def step_reward(
    progress: Any,
    v_rel: Any,
    gap: Any,
    b: Any,
    in_zone: Any,
    off_track: Any,
    collided: Any,
    goal: Any,
    p: TaskParams,
) -> Any:
    """The Racing reward of App. B.3, for numpy, torch or floats.

    ``progress``: forward arc-length driven this step (m); ``v_rel``: ego forward speed minus the
    opponent's (m/s); ``gap``: ego arc-length minus the opponent's, wrapped (m); ``b``: boundary
    deviation after the step; the flags are booleans after the step. Terms: passing
    ``w_pass * max(v_rel, 0)`` while ``-pass_window[0] <= gap <= pass_window[1]`` (overtaking: closing
    in on, alongside or just past the opponent); progress ``w_progress * progress``; boundary
    ``-w_bound * |b|``; -150 in the zone; -100 off-track; -1000 collision; +1000 goal.
    """
    overtaking = (gap >= -p.pass_window[0]) & (gap <= p.pass_window[1])
    passing = p.w_pass * 0.5 * (v_rel + abs(v_rel)) * overtaking
    return (
        p.w_progress * progress
        + passing
        - p.w_bound * abs(b)
        + p.r_zone * in_zone
        + p.r_off_track * off_track
        + p.r_collision * collided
        + p.r_goal * goal
    )


def episode_end(
    b: Any, distance: Any, driven: Any, goal_length: float, p: TaskParams
) -> tuple[Any, Any, Any]:
    """App. B.3 termination flags (off-track, collision, goal) for numpy, torch or floats.

    Off-track: ``|b| > 1`` (the car's centre beyond a boundary); collision: ego-opponent centre
    ``distance <= d_contact``; goal: arc-length ``driven`` from the start ``>= goal_length``.
    """
    return abs(b) > 1.0, distance <= p.contact_distance, driven >= goal_length


def evaluate_step(
    track: Track,
    p: TaskParams,
    s_prev: float,
    car: VehicleState,
    opp_s: float,
    opp_v: float,
    zone: DangerZone,
    opp_xy: Any = None,
) -> StepOutcome:
    """Score a transition that ended in ``car`` (opponent at ``opp_s``, at the point ``opp_xy``:
    default its centreline point), from arc-length ``s_prev``."""
    s_mod, ey = track.project((car.x, car.y))
    s = s_prev + float(wrap_gap(s_mod - s_prev, track.length))
    _, _, heading, _ = track.frame(s)
    epsi = float(wrap_angle(car.psi - heading))
    opp_xy = track.centre(opp_s) if opp_xy is None else opp_xy
    b = float(ey) / track.half_width
    off, coll, goal = episode_end(
        b, math.hypot(car.x - opp_xy[0], car.y - opp_xy[1]), s, p.goal_laps * track.length, p
    )
    inside = bool(zone.contains(car.x, car.y))
    v_rel = float(forward_speed(car.vx, car.vy, epsi)) - opp_v
    gap = float(wrap_gap(s - opp_s, track.length))
    reward = step_reward(s - s_prev, v_rel, gap, b, inside, off, coll, goal, p)
    return StepOutcome(s, float(ey), epsi, float(reward), bool(off), bool(coll), bool(goal), inside)


def observation(
    track: Track,
    p: TaskParams,
    car: VehicleState,
    s: float,
    ey: float,
    epsi: float,
    opp_s: float,
    opp_v: float,
    zone: DangerZone,
    opp_xy: Any = None,
) -> np.ndarray:
    """The Racing observation ``[NOBS]`` (float64) of App. B.3 (``opp_xy``: the opponent's
    point, default its centreline point at ``opp_s``):

    | index | content |
    |---|---|
    | 0-6 | vehicle: x, y (m), vx, vy (m/s, body frame), cos ψ, sin ψ, yaw rate r (rad/s) |
    | 7-8 | TrackState: b = ey / half_width, heading error Δψ (rad) |
    | 9-28 | TrackPoint: per lookahead distance, left then right boundary (x, y) relative to the |
    |      | car, in the world frame (``world_points``) or the vehicle frame |
    | 29-32 | opponent: arc-length gap (its s - ego s, wrapped), position (x, y) in the vehicle |
    |       | frame, its speed minus the ego's forward speed |
    | 33 | progress: arc-length driven / goal length |
    | 34-36 | DangerZone: x_D, y_D, s_D |
    """
    c, s_, hw = math.cos(car.psi), math.sin(car.psi), track.half_width
    to_vehicle = np.array([[c, -s_], [s_, c]])  # row vectors @ this = world -> vehicle frame
    centre, normal, _, _ = track.frame(s + np.asarray(p.lookahead))  # [5, 2]
    bounds = np.stack([centre + hw * normal, centre - hw * normal], axis=1) - (car.x, car.y)
    opp_xy = track.centre(opp_s) if opp_xy is None else np.asarray(opp_xy, dtype=np.float64)
    opp = (opp_xy - (car.x, car.y)) @ to_vehicle
    v_t = float(forward_speed(car.vx, car.vy, epsi))
    return np.concatenate(
        [
            [car.x, car.y, car.vx, car.vy, c, s_, car.r, ey / hw, wrap_angle(epsi)],
            (bounds if p.world_points else bounds @ to_vehicle).reshape(-1),  # [5, 2, 2] -> [20]
            [wrap_gap(opp_s - s, track.length), opp[0], opp[1], opp_v - v_t],
            [s / (p.goal_laps * track.length), zone.cx, zone.cy, zone.w],
        ]
    )


def sample_zone(rng: np.random.Generator, track: Track, p: TaskParams) -> DangerZone:
    """A square danger zone: side ~ U(zone_size), centre at arc-length ~ U(zone_s) and a lateral
    offset ~ U(±(half_width - side/2)), so that it never covers the whole track width."""
    side = float(rng.uniform(*p.zone_size))
    s = float(rng.uniform(*p.zone_s))
    ey = float(rng.uniform(-1.0, 1.0)) * (track.half_width - side / 2)
    cx, cy = track.to_xy(s, ey)
    return DangerZone(float(cx), float(cy), side, side)
