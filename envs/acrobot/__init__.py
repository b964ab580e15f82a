"""Acrobot with a danger zone (App. B.1): the env, its exact planner model, its preset.

| module | what |
|---|---|
| `envs.acrobot.model` | the physics (gymnasium's book equations, RK4) and `AcrobotModel`, the exact P̂ |
| `envs.acrobot.env` | `AcrobotDZEnv`, ``rlmpc/AcrobotDZ-v0`` |
| `envs.acrobot.planner` | `AcrobotPlannerConfig` (Table 5) |

`SPEC` is what the registry knows of it (`envs/__init__.py` registers it).
"""

from pathlib import Path

from envs.acrobot.planner import AcrobotPlannerConfig
from envs.registry import EnvSpec, read_presets

SPEC = EnvSpec(
    "acrobot", "rlmpc/AcrobotDZ-v0", "envs.acrobot.env:AcrobotDZEnv", AcrobotPlannerConfig,
    summary="Acrobot with a danger zone (App. B.1)",
    presets=read_presets(Path(__file__).with_name("presets.yaml")),
)  # fmt: skip

__all__ = ["SPEC", "AcrobotPlannerConfig"]
