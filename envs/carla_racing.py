"""Racing with a danger zone (App. B.3) on a CARLA server: ``rlmpc/CarlaRacing-v0``.

The task is `envs.racing_dz`'s, from the same `envs.racing_task` functions: same action,
observation, reward, episode end and reset distribution; only the vehicle simulator differs.
`RacingSimEnv` holds the task on any `envs.carla_sim.VehicleSim`; `CarlaRacingEnv` is it on a
`envs.carla_sim.CarlaSim`, and `BicycleSim` puts RacingDZ's dynamic bicycle behind the same
interface (the tests run the env's code path on it without a server).

| | |
|---|---|
| server | CARLA 0.9.16 at ``host:port``, synchronous mode, ``fixed_delta_seconds = task.dt`` |
| track | a closed route on ``town`` (`envs.carla_route`; default Town07's outskirts lap), both lanes |
| ego | ``vehicle.tesla.model3`` at the start line, ``ey ~ U(±start_lateral)``, ``U(start_speed)`` |
| opponent | ``vehicle.audi.tt`` on the centreline at ``opponent_speed``, ``U(opponent_gap)`` ahead, driven by pure pursuit (or the traffic manager on ``tm_port``) |
| danger zone | `envs.racing_task.sample_zone`, drawn in the world with ``world.debug`` |
| action | ``[steer, throttle] ∈ [-1, 1]²``: CARLA steer ``-steer`` (its > 0 is right), throttle > 0 drives, < 0 brakes |
| observation | ``[37]`` float32, `envs.racing_task.observation` |
| reward, terminated | `envs.racing_task.evaluate_step`, as RacingDZ |
| truncated | ``task.max_steps`` (default 1200 here: a CARLA lap is longer), or the server was lost |

Server loss (a ``RuntimeError`` from the client mid-episode): the env reconnects with backoff
and ends the episode as truncated with ``info["server_lost"] = True`` (reward 0, the last
observation); the next `reset` respawns the cars. If the server does not come back,
`envs.carla_sim.CarlaUnavailable` is raised. ``info`` otherwise as RacingDZ, plus
``server_lost = False``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import gymnasium as gym
import numpy as np

from envs import racing_task as rt
from envs.base import check_action
from envs.carla_route import ROUTES, RouteSpec
from envs.carla_sim import CarlaSim, CarlaUnavailable, ClientParams, SimStep, VehicleSim
from envs.danger import DangerZone
from envs.racing_dz import CarParams, RacingTaskEnv, dynamic_bicycle_step

log = logging.getLogger(__name__)

#: the CARLA env's default task: RacingDZ's, with zones that fit a lane-wide half-width and a
#: time limit for a longer lap
CARLA_TASK = rt.TaskParams(max_steps=1200, zone_size=(2.0, 2.5))

_FLAGS = ("is_success", "in_danger", "off_track", "collision", "server_lost")


class BicycleSim:
    """`VehicleSim` with RacingDZ's true system: the dynamic bicycle, the opponent on the
    centreline at constant speed (exactly `envs.racing_dz.RacingDZEnv`'s step)."""

    def __init__(self, track: rt.Track, car: CarParams, dt: float) -> None:
        self.track, self.car, self.dt = track, car, dt
        self.state: rt.VehicleState | None = None

    def reset(self, ego: rt.VehicleState, opp_s: float, opp_v: float, zone: DangerZone) -> SimStep:
        self.state, self.opp_s, self.opp_v = ego, opp_s, opp_v
        return SimStep(ego, opp_s, opp_v)

    def step(self, u: np.ndarray) -> SimStep:
        self.state = dynamic_bicycle_step(self.state, u, self.car, self.dt)
        self.opp_s += self.opp_v * self.dt
        return SimStep(self.state, self.opp_s, self.opp_v)

    def reconnect(self) -> None:
        """Nothing to reconnect to."""

    def close(self) -> None:
        """Nothing to release."""


class RacingSimEnv(RacingTaskEnv):
    """The Racing task of App. B.3 on a `VehicleSim` (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        sim: VehicleSim,
        task: rt.TaskParams,
        car: CarParams,
        render_mode: str | None = None,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.sim, self.task, self.car, self.render_mode = sim, task, car, render_mode
        self.track = sim.track
        self.task.check_against(self.track)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (rt.NOBS,), np.float32)
        self.goal_length = self.task.goal_laps * self.track.length
        self.state: rt.VehicleState | None = None
        self._lost = False  # the server was lost: step() needs a reset() first

    def _reset_sim(self, *args: Any) -> SimStep:
        """``sim.reset(*args)``; on a lost server: reconnect (or `CarlaUnavailable`), once more."""
        try:
            return self.sim.reset(*args)
        except RuntimeError as err:
            log.warning("simulator lost during reset (%s); reconnecting", err)
            self.sim.reconnect()
            return self.sim.reset(*args)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        rng, p, tr = self.np_random, self.task, self.track
        # the draws and their order are RacingDZEnv.reset's
        ey0 = float(rng.uniform(-p.start_lateral, p.start_lateral))
        x0, y0 = tr.to_xy(0.0, ey0)
        psi0, v0 = float(tr.heading[0]), float(rng.uniform(*p.start_speed))
        start = rt.VehicleState(float(x0), float(y0), psi0, v0, 0.0, 0.0)
        opp_s = float(rng.uniform(*p.opponent_gap))
        self.zone = rt.sample_zone(rng, tr, p)
        out = self._reset_sim(start, opp_s, p.opponent_speed, self.zone)
        self.state, self.opp_s, self.opp_v = out.ego, out.opp_s, out.opp_v
        s_mod, ey = tr.project((self.state.x, self.state.y))
        self.s, self.ey = float(rt.wrap_gap(s_mod, tr.length)), float(ey)
        # heading error against the start line's heading, as RacingDZEnv (0 for a car set there)
        self.epsi = float(rt.wrap_angle(self.state.psi - psi0))
        self.steps, self._lost = 0, False
        return self._obs(), {**dict.fromkeys(_FLAGS, False), "s": self.s}

    def step(self, action):
        if self.state is None or self._lost:
            raise RuntimeError("call reset() before step()")
        u = check_action(
            action, self.action_space.shape, self.action_space.low, self.action_space.high
        )
        try:
            out = self.sim.step(u)
        except RuntimeError as err:
            return self._server_lost(err)
        self.state, self.opp_s, self.opp_v = out.ego, out.opp_s, out.opp_v
        res = rt.evaluate_step(
            self.track, self.task, self.s, self.state, self.opp_s, self.opp_v, self.zone
        )
        self.s, self.ey, self.epsi = res.s, res.ey, res.epsi
        self.steps += 1
        terminated, truncated, info = res.episode_flags(self.steps, self.task)
        info["server_lost"] = False
        return self._obs(), res.reward, terminated, truncated, info

    def _server_lost(self, err: RuntimeError):
        """End the episode (truncated, reward 0) after reconnecting; `CarlaUnavailable` if that fails."""
        log.warning("simulator lost mid-episode (%s); reconnecting", err)
        self._lost = True
        self.sim.reconnect()
        info = {**dict.fromkeys(_FLAGS, False), "server_lost": True, "s": self.s}
        return self._obs(), 0.0, False, True, info

    def close(self) -> None:
        self.sim.close()


def _check_port(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise ValueError(f"{name} must be an int in [1, 65535], got {value!r}")


class CarlaRacingEnv(RacingSimEnv):
    """``rlmpc/CarlaRacing-v0``: the Racing task on a CARLA 0.9.16 server (module docstring).

    Connects at construction (`envs.carla_sim.CarlaUnavailable` after ``client.attempts``
    tries). ``route`` defaults to the town's built-in route (`envs.carla_route.ROUTES`);
    ``car`` (the planner's kinematic-bicycle constants) defaults to `CarParams` with the ego's
    wheelbase (split 45/55 front/rear) and steering range read from CARLA.
    """

    def __init__(
        self,
        render_mode: str | None = None,
        host: str = "127.0.0.1",
        port: int = 2000,
        tm_port: int = 8000,
        town: str = "Town07",
        route: RouteSpec | None = None,
        task: rt.TaskParams | None = None,
        car: CarParams | None = None,
        client: ClientParams | None = None,
        vehicle: str = "vehicle.tesla.model3",
        opponent_vehicle: str = "vehicle.audi.tt",
        opponent_driver: str = "pursuit",
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty string, got {host!r}")
        _check_port("port", port)
        _check_port("tm_port", tm_port)
        if tm_port in (port, port + 1):
            raise ValueError(f"tm_port must differ from port and port + 1 (CARLA's), got {tm_port}")
        if route is None and town not in ROUTES:
            raise ValueError(
                f"town {town!r} has no built-in route (have {sorted(ROUTES)}); pass route=RouteSpec(...)"
            )
        if opponent_driver not in ("pursuit", "traffic_manager"):
            raise ValueError(
                f"opponent_driver must be 'pursuit' or 'traffic_manager', got {opponent_driver!r}"
            )
        for name, value in (("vehicle", vehicle), ("opponent_vehicle", opponent_vehicle)):
            if not isinstance(value, str) or not value.startswith("vehicle."):
                raise ValueError(f"{name} must be a CARLA blueprint id 'vehicle.*', got {value!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        task = task or CARLA_TASK
        sim = CarlaSim(
            host,
            port,
            town,
            route or ROUTES[town],
            task.dt,
            client or ClientParams(),
            tm_port=tm_port,
            vehicle=vehicle,
            opponent_vehicle=opponent_vehicle,
            opponent_driver=opponent_driver,
            zone_life=task.dt * task.max_steps,
        )
        if car is None:
            lf = 0.45 * sim.wheelbase
            car = dataclasses.replace(
                CarParams(), lf=lf, lr=sim.wheelbase - lf, max_steer=sim.max_steer
            )
        try:
            super().__init__(sim, task, car, render_mode)
        except ValueError:
            sim.close()
            raise


__all__ = [
    "BicycleSim",
    "CARLA_TASK",
    "CarlaRacingEnv",
    "CarlaUnavailable",
    "ClientParams",
    "RacingSimEnv",
    "RouteSpec",
]
