"""Acrobot's planner preset (Table 5): target angles tracked, no J_other."""

from __future__ import annotations

from dataclasses import dataclass

from planners.costs import PlannerConfig


@dataclass(frozen=True)
class AcrobotPlannerConfig(PlannerConfig):
    """Table 5, Acrobot: target angles tracked; no J_other."""

    w_rl: float = 50.0
    """w_RL (Table 5)."""
    w_danger: float = 50.0
    """w_D (Table 5)."""
