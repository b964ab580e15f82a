"""Racing with a danger zone (App. B.3) on a CARLA server: ``rlmpc/CarlaRacing-v0``.

`CarlaRacingEnv` is `envs.racing.env.RacingTaskEnv` (the task: action, observation, reward,
episode end, reset distribution, opponent rule, time-limit rule, server-loss handling, the
planner model's `envs.racing.model.ModelParams`) on a `envs.racing.carla_sim.CarlaSim`;
``racing`` (``rlmpc/RacingCircuitDZ-v0``) is the same task env on the bicycle simulator, with
the same defaults but for the lane-sized ones below.

| | |
|---|---|
| server | CARLA 0.9.16 at ``host:port``, synchronous mode, ``fixed_delta_seconds = task.dt``, rendering off (the town must be installed there: `envs.racing.carla_client.CarlaMapMissing` otherwise) |
| track | a closed route on ``town`` (`envs.racing.carla_route`; default Town07's outskirts lap), both lanes |
| ego | ``vehicle.tesla.model3`` at the start line, ``ey ~ U(±start_lateral)``, ``U(start_speed)`` |
| opponent | ``vehicle.audi.tt`` on its line (`envs.racing.task.sample_opponent`: offset ``U(±0.5)`` m, weave ``U(0, 0.5)`` m, for a lane-wide half-width) at up to ``U(10 ± 2)`` m/s, slowing for corners (`envs.racing.task.OpponentSpeed`: 4 m/s² lateral, 3 m/s² braking), ``U(opponent_gap)`` ahead, driven by pure pursuit (or the traffic manager on ``tm_port``) |
| danger zone | `envs.racing.task.sample_zone`, drawn in the world with ``world.debug`` |
| action | ``[steer, throttle] ∈ [-1, 1]²``: CARLA steer ``-steer`` (its > 0 is right), throttle > 0 drives, < 0 brakes; the high-level action is ``racing``'s world-frame target velocity |
| observation | ``[37]`` float32, `envs.racing.task.observation` |
| reward, terminated | `envs.racing.task.evaluate_step`, as RacingDZ |
| truncated | the binding time limit of ``racing`` (`envs.racing.task.time_limit_steps`: the fastest opponent's time to the goal, on this route), or the server was lost (``server_lost``) |

A lost server ends the episode; the next `reset` waits for it (``client.reconnect_wait``) or
claims another free server of ``servers`` (its node's registry), and raises
`envs.racing.carla_client.CarlaUnavailable` if none comes back (`envs.racing.carla_sim`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from envs.racing import task as rt
from envs.racing.bicycle import CarParams
from envs.racing.carla_client import ClientParams
from envs.racing.carla_route import ROUTES, RouteSpec
from envs.racing.carla_sim import CarlaSim
from envs.racing.env import RacingTaskEnv

#: the CARLA env's default task: ``racing``'s, with zones and an opponent's line that fit a
#: lane-wide half-width (the time limit follows from the route: `rt.time_limit_steps`)
CARLA_TASK = rt.TaskParams(
    zone_size=(2.0, 2.5), zone_s=(50.0, 300.0), opponent_offset=0.5, opponent_weave=0.5
)


def _check_port(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise ValueError(f"{name} must be an int in [1, 65535], got {value!r}")


class CarlaRacingEnv(RacingTaskEnv):
    """``rlmpc/CarlaRacing-v0``: the Racing task on a CARLA 0.9.16 server (module docstring).

    Connects at construction (`envs.racing.carla_client.CarlaUnavailable` after
    ``client.attempts`` tries; `envs.racing.carla_client.CarlaMapMissing` if the server lacks
    ``town``). ``route`` defaults to the town's built-in route
    (`envs.racing.carla_route.ROUTES`);
    ``car`` (the planner's kinematic-bicycle constants) defaults to `CarParams` with the ego's
    wheelbase (split 45/55 front/rear) and steering range read from CARLA. ``servers``: the
    server registry of this node the server was claimed from (what
    `envs.racing.carla_servers.claim_env_kwargs` passes), where a replacement is claimed when
    the server does not come back; ``rendering``: let the server render (to watch it).
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
        servers: str | None = None,
        rendering: bool = False,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty string, got {host!r}")
        _check_port("port", port)
        _check_port("tm_port", tm_port)
        if tm_port in (port, port + 1, port + 2):
            raise ValueError(
                f"tm_port must differ from port, port + 1 and port + 2 (CARLA's RPC, streaming "
                f"and secondary ports), got {tm_port} with port {port}"
            )
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
        if servers is not None and (not isinstance(servers, str) or not servers):
            raise ValueError(f"servers must be None or a registry directory, got {servers!r}")
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
            opponent=(task.opponent_lateral_accel, task.opponent_long_accel),
            rendering=bool(rendering),
            servers=servers,
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
        sim.zone_life = self.task.dt * self.task.max_steps  # the route's time limit
