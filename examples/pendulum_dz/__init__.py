"""Pendulum swing-up with a danger zone: a task the paper never had, brought as a user would.

``python launch.py --env examples.pendulum_dz:SPEC`` trains it (docs/custom_env.md). The
package is everything the system needs of a task, outside ``envs/``:

| module | what |
|---|---|
| `examples.pendulum_dz.model` | the physics (gymnasium's ``Pendulum-v1``) once, as batched torch; `PendulumModel`, the exact P̂, r̂, ψ |
| `examples.pendulum_dz.env` | `PendulumDZEnv`: gymnasium's pendulum with a zone, a swing-up start and a success |
| `SPEC` (here) | the registry entry: name, id, entry point, planner preset, presets, success |
"""

from __future__ import annotations

from dataclasses import dataclass

from envs.registry import EnvSpec
from planners.costs import PlannerConfig


@dataclass(frozen=True)
class PendulumPlannerConfig(PlannerConfig):
    """The planner preset: Table 5's MPPI (K = 100, H = 10, λ = 1, Σ = 0.5·I) with Acrobot's
    weights (the other target-angle task): w_RL = 50 on |θ - θ*|, w_D = 50 on the zone."""

    w_rl: float = 50.0
    """w_RL: the weight of eq. (39)'s |θ - θ*| (wrapped)"""
    w_danger: float = 50.0
    """w_D: the weight of the zone's indicator (eq. 42)"""


SPEC = EnvSpec(
    "pendulum-dz", "examples/PendulumDZ-v0", "examples.pendulum_dz.env:PendulumDZEnv",
    PendulumPlannerConfig,
    summary="pendulum swing-up with a danger zone (an example task, docs/custom_env.md)",
    presets={"run": {"total_env_steps": 200_000}},
)  # fmt: skip
