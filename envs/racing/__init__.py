"""Racing with a danger zone (App. B.3): three registered envs from one package.

`SPEC` is ``racing``, the circuit (task version 3) on the embedded bicycle simulator;
`STADIUM_SPEC` is ``racing-stadium``, the stadium task that was ``racing`` (version 1) before
the circuit, kept for its committed results; `CARLA_SPEC` is ``carla-racing``, the circuit's
rules on CARLA servers.

| module | what |
|---|---|
| `envs.racing.track` | the closed track and the frame along it |
| `envs.racing.task` | the task without a simulator: reset draws, reward, episode end, observation |
| `envs.racing.env` | `VehicleSim` (the simulator interface), `RacingTaskEnv` (the task on one), `RacingDZEnv` |
| `envs.racing.bicycle` | the embedded simulator: a dynamic bicycle with tire forces (`BicycleSim`) |
| `envs.racing.model` | the planner's model: a kinematic bicycle in track coordinates (`RacingModel`) |
| `envs.racing.carla_sim`, `carla_route`, `carla_env` | CARLA: client and vehicles, the route from a map, `CarlaRacingEnv` |
| `envs.racing.carla_client`, `carla_servers` | the CARLA client's connection; the servers an env claims on its node |
| `envs.racing.draw` | rgb frames of an env's state |
| `envs.racing.planner` | `RacingPlannerConfig` (Table 5) and J_other (eqs. 44-46) |
| `envs.racing.scripted` | the scripted targets of the planner-alone check |

``import envs.racing`` does not import the ``carla`` package (CARLA modules import it when a
server is used). `SPEC`, `STADIUM_SPEC` and `CARLA_SPEC` are what the registry knows of them;
each reads its run presets from a YAML file beside this one.
"""

from pathlib import Path
from typing import Any

from envs.racing.planner import RacingPlannerConfig, StadiumRacingPlannerConfig
from envs.registry import EnvSpec, read_presets


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


_COLUMNS = (
    ("success_rate", "finish"),
    ("collision_or_offtrack", "collision/off-track"),
    ("reward", "reward"),
)

SPEC = EnvSpec(
    "racing", "rlmpc/RacingCircuitDZ-v0", "envs.racing.env:RacingDZEnv", RacingPlannerConfig,
    summary="racing with a danger zone on the embedded bicycle simulator, the circuit (App. B.3)",
    presets=read_presets(Path(__file__).with_name("presets.yaml")),
    episode_metrics=_racing_metrics, columns=_COLUMNS, episode_lost=_server_lost,
    version=3,  # 2 was the first circuit (569.5 m, a hairpin); 3 the circuit scaled (919.9 m)
)  # fmt: skip
STADIUM_SPEC = EnvSpec(
    "racing-stadium", "rlmpc/RacingDZ-v0", "envs.racing.env:StadiumRacingDZEnv",
    StadiumRacingPlannerConfig,
    summary="racing on the stadium, as before the circuit (the committed Racing results)",
    presets=read_presets(Path(__file__).with_name("stadium_presets.yaml")),
    episode_metrics=_racing_metrics, columns=_COLUMNS, episode_lost=_server_lost,
    formerly=(("racing", 1),),  # `racing` was this task until the circuit (version 2)
)  # fmt: skip
CARLA_SPEC = EnvSpec(
    "carla-racing", "rlmpc/CarlaRacing-v0", "envs.racing.carla_env:CarlaRacingEnv",
    RacingPlannerConfig,
    summary="racing with a danger zone on CARLA servers (cluster/README.md)",
    presets=read_presets(Path(__file__).with_name("carla_presets.yaml")),
    episode_metrics=_racing_metrics, columns=_COLUMNS, episode_lost=_server_lost,
    probe="racing",  # the same spaces; probing this env would need a server
    resources_per_env={"carla": 1.0},  # one CARLA server per env
    node_env_kwargs="envs.racing.carla_servers:claim_env_kwargs",
    requires=("carla",),
    version=3,  # the circuit's rules (action frame, reward, opponent, time limit, zone range)
    formerly=(),
)  # fmt: skip

__all__ = [
    "CARLA_SPEC",
    "SPEC",
    "STADIUM_SPEC",
    "RacingPlannerConfig",
    "StadiumRacingPlannerConfig",
]
