"""Lunar Lander with a danger zone (App. B.2): the env, its planner model, its preset.

| module | what |
|---|---|
| `envs.lunar_lander.env` | `LunarLanderDZEnv`, ``rlmpc/LunarLanderDZ-v0`` (gymnasium's Box2D lander) |
| `envs.lunar_lander.model` | `LunarLanderModel`, App. B.2's simplified P̂ and r̂ |
| `envs.lunar_lander.body` | the model's rigid body: engines, legs, Euler steps on rows |
| `envs.lunar_lander.solver` | the legs' contact solver (TorchScript) |
| `envs.lunar_lander.airframe` | the lander's constants, derived from gymnasium's |
| `envs.lunar_lander.planner` | `LunarLanderPlannerConfig` (Table 5) and J_other (eq. 43) |

`SPEC` is what the registry knows of it (`envs/__init__.py` registers it).
"""

from pathlib import Path
from typing import Any

from envs.lunar_lander.planner import LunarLanderPlannerConfig
from envs.registry import EnvSpec, read_presets


def _lander_metrics(info: dict[str, Any]) -> dict[str, float]:
    """Lunar Lander's column: the distance to the pad where the episode ended."""
    return {"distance_to_pad": float(info["distance_to_pad"])} if "distance_to_pad" in info else {}


SPEC = EnvSpec(
    "lunarlander", "rlmpc/LunarLanderDZ-v0", "envs.lunar_lander.env:LunarLanderDZEnv",
    LunarLanderPlannerConfig, summary="Lunar Lander with a danger zone (App. B.2)",
    presets=read_presets(Path(__file__).with_name("presets.yaml")),  # γ = 0.999: see the file
    episode_metrics=_lander_metrics,
    columns=(
        ("success_rate", "success"),
        ("distance_to_pad", "distance to pad"),
        ("reward", "reward"),
    ),
)  # fmt: skip

__all__ = ["SPEC", "LunarLanderPlannerConfig"]
