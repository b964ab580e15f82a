"""Gymnasium environments of the paper (App. B), their planner models, and the env registry.

Each task is one package: its env, its planner model (P̂, r̂, ψ), its Table-5 planner preset
with its own cost terms, and its registry entry (``SPEC``). Importing this package registers:

| name | id | package | paper |
|---|---|---|---|
| ``acrobot`` | ``rlmpc/AcrobotDZ-v0`` | `envs.acrobot` | App. B.1 |
| ``lunarlander`` | ``rlmpc/LunarLanderDZ-v0`` | `envs.lunar_lander` | App. B.2 |
| ``racing`` | ``rlmpc/RacingCircuitDZ-v0`` | `envs.racing` (the circuit, the bicycle simulator) | App. B.3 |
| ``racing-stadium`` | ``rlmpc/RacingDZ-v0`` | `envs.racing` (the stadium of the first Racing results) | App. B.3 |
| ``carla-racing`` | ``rlmpc/CarlaRacing-v0`` | `envs.racing` (a CARLA 0.9.16 server) | App. B.3 |

Each env truncates its own episodes (no TimeLimit wrapper), so an env built directly from
its class behaves exactly as one built with ``gymnasium.make``. The contract with the
planner is `envs.base.PlannerModel`; shape letters are documented there.
"""

from __future__ import annotations

from envs import acrobot, lunar_lander, racing
from envs.registry import (
    ENV_IDS,
    EnvSpec,
    make,
    names,
    planner_config,
    register,
    resolve_task,
    spec,
)

__all__ = [
    "BENCHMARK_ENV",
    "DEFAULT_ENV",
    "ENV_IDS",
    "EnvSpec",
    "make",
    "names",
    "planner_config",
    "register",
    "resolve_task",
    "spec",
]

#: the env a run trains when none is named
DEFAULT_ENV = "acrobot"
#: the env the benchmarks and the planner-alone check default to (the paper's App. E Table 7
#: times Lunar Lander)
BENCHMARK_ENV = "lunarlander"

for _spec in (acrobot.SPEC, lunar_lander.SPEC, racing.SPEC, racing.STADIUM_SPEC,
              racing.CARLA_SPEC):  # fmt: skip
    register(_spec)
