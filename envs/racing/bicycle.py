"""The racing env's true system without CARLA: a dynamic bicycle with Pacejka lateral tire forces.

`dynamic_bicycle_step` is one env step of the car (`CarParams`: a small front-engine car on
dry tarmac); `BicycleSim` is the `envs.racing.env.VehicleSim` that moves the ego with it and
the opponent along its line at its speed profile (`envs.racing.task.OpponentSpeed`: up to its
top speed, slower in corners that need it), the simulator of the embedded racing envs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.danger import DangerZone
from envs.racing import task as rt
from envs.racing.task import SimStep

G = 9.81


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


class BicycleSim:
    """`envs.racing.env.VehicleSim` with RacingDZ's true system: the dynamic bicycle, the
    opponent on its line (`envs.racing.task.OpponentLine`; the centreline by default) at
    ``opponent`` (default: the default task's limits).

    The opponent moves by its speed at the start of each step (explicit Euler in arc-length)
    and reports its speed where it ends up; at a constant speed that is the old constant-speed
    opponent, to the bit. Its line sets where it is across the track, not how fast it moves
    along it."""

    def __init__(self, track: rt.Track, car: CarParams, dt: float,
                 opponent: rt.OpponentSpeed | None = None) -> None:  # fmt: skip
        self.track, self.car, self.dt = track, car, dt
        self.opponent = opponent or rt.OpponentSpeed.of(track, rt.TaskParams())
        self.state: rt.VehicleState | None = None
        self.opp_s = self.opp_v = self.opp_top = 0.0
        self.line: rt.OpponentLine | None = None

    def reset(self, ego: rt.VehicleState, opp_s: float, opp_v: float, zone: DangerZone,
              line: rt.OpponentLine | None = None) -> SimStep:  # fmt: skip
        """``opp_v``: the opponent's top speed; it starts at its profile's speed at ``opp_s``,
        on ``line`` (None: the centreline)."""
        self.state, self.opp_s, self.opp_top, self.line = ego, opp_s, opp_v, line
        self.opp_v = self.opponent(opp_s, opp_v)
        return self._report()

    def step(self, u: np.ndarray) -> SimStep:
        self.state = dynamic_bicycle_step(self.state, u, self.car, self.dt)
        self.opp_s += self.opp_v * self.dt
        self.opp_v = self.opponent(self.opp_s, self.opp_top)
        return self._report()

    def _report(self) -> SimStep:
        opp = rt.opponent_pose(self.track, self.opp_s, self.opp_v, self.line)
        return SimStep(self.state, self.opp_s, self.opp_v, opp)

    def get_state(self) -> dict[str, Any]:
        """The cars as plain data: the ego's `VehicleState`, the opponent's arc-length, speed,
        top speed and line."""
        ego = None if self.state is None else list(self.state)
        line = None if self.line is None else list(self.line)
        return {"ego": ego, "opp_s": self.opp_s, "opp_v": self.opp_v, "opp_top": self.opp_top,
                "line": line}  # fmt: skip

    def set_state(self, state: dict[str, Any]) -> None:
        """Put the cars back where `get_state` found them (a state without ``opp_top``, from
        before the speed profile, drove at ``opp_v`` throughout; one without ``line`` on the
        centreline)."""
        ego = state["ego"]
        self.state = None if ego is None else rt.VehicleState(*ego)
        self.opp_s, self.opp_v = float(state["opp_s"]), float(state["opp_v"])
        self.opp_top = float(state.get("opp_top", state["opp_v"]))
        line = state.get("line")
        self.line = None if line is None else rt.OpponentLine(*line)

    def reconnect(self) -> None:
        """Nothing to reconnect to."""

    def close(self) -> None:
        """Nothing to release."""
