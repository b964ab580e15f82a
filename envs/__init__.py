"""Gymnasium environments of the paper (App. B) and their planner models.

Importing this package registers:

| id | module | paper |
|---|---|---|
| ``rlmpc/AcrobotDZ-v0`` | `envs.acrobot_dz` | App. B.1 |
| ``rlmpc/LunarLanderDZ-v0`` | `envs.lunar_lander_dz` | App. B.2 |
| ``rlmpc/RacingDZ-v0`` | `envs.racing_dz` | App. B.3 (embedded simulator) |
| ``rlmpc/CarlaRacing-v0`` | `envs.carla_racing` | App. B.3 on a CARLA 0.9.16 server |

Each env truncates its own episodes (no TimeLimit wrapper), so an env built directly from
its class behaves exactly as one built with ``gymnasium.make``. The contract with the
planner is `envs.base.PlannerModel`; shape letters are documented there.
"""

from __future__ import annotations

import gymnasium as gym

#: short names used on the command line -> gymnasium ids
ENV_IDS: dict[str, str] = {
    "acrobot": "rlmpc/AcrobotDZ-v0",
    "lunarlander": "rlmpc/LunarLanderDZ-v0",
    "racing": "rlmpc/RacingDZ-v0",
    "carla-racing": "rlmpc/CarlaRacing-v0",
}

_ENTRY_POINTS = {
    "rlmpc/AcrobotDZ-v0": "envs.acrobot_dz:AcrobotDZEnv",
    "rlmpc/LunarLanderDZ-v0": "envs.lunar_lander_dz:LunarLanderDZEnv",
    "rlmpc/RacingDZ-v0": "envs.racing_dz:RacingDZEnv",
    "rlmpc/CarlaRacing-v0": "envs.carla_racing:CarlaRacingEnv",
}

for _id, _entry in _ENTRY_POINTS.items():
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_entry, disable_env_checker=True)


def make(name: str, **kwargs) -> gym.Env:
    """Build an env by short name (a key of `ENV_IDS`) or gymnasium id."""
    env_id = ENV_IDS.get(name, name)
    if env_id not in _ENTRY_POINTS:
        raise ValueError(f"unknown env {name!r}; choose one of {sorted(ENV_IDS)}")
    return gym.make(env_id, **kwargs)
