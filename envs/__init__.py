"""Gymnasium environments of the paper (App. B), their planner models, and the env registry.

Importing this package registers (`envs.registry`: what the system reads of an env):

| name | id | module | paper |
|---|---|---|---|
| ``acrobot`` | ``rlmpc/AcrobotDZ-v0`` | `envs.acrobot_dz` | App. B.1 |
| ``lunarlander`` | ``rlmpc/LunarLanderDZ-v0`` | `envs.lunar_lander_dz` | App. B.2 |
| ``racing`` | ``rlmpc/RacingCircuitDZ-v0`` | `envs.racing` (the bicycle simulator, the circuit) | App. B.3 |
| ``racing-stadium`` | ``rlmpc/RacingDZ-v0`` | `envs.racing` (the bicycle simulator, the stadium) | App. B.3 |
| ``carla-racing`` | ``rlmpc/CarlaRacing-v0`` | `envs.racing` (a CARLA 0.9.16 server) | App. B.3 |

Each env truncates its own episodes (no TimeLimit wrapper), so an env built directly from
its class behaves exactly as one built with ``gymnasium.make``. The contract with the
planner is `envs.base.PlannerModel`; shape letters are documented there.
"""

from __future__ import annotations

from typing import Any

from envs.registry import ENV_IDS, EnvSpec, make, names, register, spec
from planners.costs import (
    AcrobotPlannerConfig,
    LunarLanderPlannerConfig,
    RacingPlannerConfig,
    StadiumRacingPlannerConfig,
)

__all__ = [
    "BENCHMARK_ENV",
    "DEFAULT_ENV",
    "ENV_IDS",
    "EnvSpec",
    "make",
    "names",
    "register",
    "spec",
]

#: the env a run trains when none is named
DEFAULT_ENV = "acrobot"
#: the env the benchmarks and the planner-alone check default to (the paper's App. E Table 7
#: times Lunar Lander)
BENCHMARK_ENV = "lunarlander"


def _lander_metrics(info: dict[str, Any]) -> dict[str, float]:
    """Lunar Lander's column: the distance to the pad where the episode ended."""
    return {"distance_to_pad": float(info["distance_to_pad"])} if "distance_to_pad" in info else {}


def _racing_metrics(info: dict[str, Any]) -> dict[str, float]:
    """Racing's column: whether the episode ended in a collision or off the track."""
    if "collision" in info or "off_track" in info:
        return {
            "collision_or_offtrack": float(
                bool(info.get("collision")) or bool(info.get("off_track"))
            )
        }
    return {}


def _server_lost(info: dict[str, Any]) -> bool:
    """Racing's episodes end early when the env loses its simulator's server."""
    return bool(info.get("server_lost", False))


_LANDER_COLUMNS = (
    ("success_rate", "success"),
    ("distance_to_pad", "distance to pad"),
    ("reward", "reward"),
)
_RACING_COLUMNS = (
    ("success_rate", "finish"),
    ("collision_or_offtrack", "collision/off-track"),
    ("reward", "reward"),
)

register(EnvSpec(
    "acrobot", "rlmpc/AcrobotDZ-v0", "envs.acrobot_dz:AcrobotDZEnv", AcrobotPlannerConfig,
    summary="Acrobot with a danger zone (App. B.1)",
    presets={"run": {"total_env_steps": 300_000}},
))  # fmt: skip
register(EnvSpec(
    "lunarlander", "rlmpc/LunarLanderDZ-v0", "envs.lunar_lander_dz:LunarLanderDZEnv",
    LunarLanderPlannerConfig, summary="Lunar Lander with a danger zone (App. B.2)",
    # Lunar Lander acts at 50 Hz and lands after 300-700 steps: γ = 0.99 sees ~2 s ahead, so
    # steering to the pad (and its +100) is worth next to nothing to the critic; rl-zoo's
    # γ = 0.999, λ = 0.98 for LunarLander. README "Lunar Lander" has the measurements.
    presets={"run": {"total_env_steps": 1_000_000}, "ppo": {"gamma": 0.999, "gae_lambda": 0.98}},
    episode_metrics=_lander_metrics, columns=_LANDER_COLUMNS,
))  # fmt: skip
# Racing's r̂ excludes the terminal reward (App. B.3): its virtual data do too
register(EnvSpec(
    "racing", "rlmpc/RacingCircuitDZ-v0", "envs.racing.env:RacingDZEnv", RacingPlannerConfig,
    summary="racing with a danger zone on the embedded bicycle simulator, the circuit (App. B.3)",
    presets={"run": {"total_env_steps": 1_000_000, "virtual_terminal": "exclude"}},
    episode_metrics=_racing_metrics, columns=_RACING_COLUMNS, episode_lost=_server_lost,
))  # fmt: skip
register(EnvSpec(
    "racing-stadium", "rlmpc/RacingDZ-v0", "envs.racing.env:StadiumRacingDZEnv",
    StadiumRacingPlannerConfig,
    summary="racing on the stadium, as before the circuit (the committed Racing results)",
    presets={"run": {"total_env_steps": 1_000_000}},
    episode_metrics=_racing_metrics, columns=_RACING_COLUMNS, episode_lost=_server_lost,
))  # fmt: skip
register(EnvSpec(
    "carla-racing", "rlmpc/CarlaRacing-v0", "envs.racing.carla_env:CarlaRacingEnv",
    RacingPlannerConfig,
    summary="racing with a danger zone on CARLA servers (cluster/README.md)",
    presets={"run": {"total_env_steps": 1_000_000, "envs_per_actor": 1, "num_actors": 4,
                     "virtual_terminal": "exclude"}},  # fmt: skip
    episode_metrics=_racing_metrics, columns=_RACING_COLUMNS, episode_lost=_server_lost,
    probe="racing",  # the same spaces; probing this env would need a server
    resources_per_env={"carla": 1.0},  # one CARLA server per env
    node_env_kwargs="envs.racing.carla_servers:claim_env_kwargs",
    requires=("carla",),
))  # fmt: skip
