"""App. E's "pure MPPI" baseline (Fig. 10) as one result cell, for a Ray Tune trial.

MPPI used alone: the env's reward model multiplied by −1 is the planner's cost
(`planners.reward_cost`), with Table 5's K, H, Σ, λ, no high-level policy and no learning,
judged on the project's evaluation protocol (50 episodes seeded ``eval_seed + i``,
``eval_seed = 1_000_000 + 10_000·seed``; `rlmpc.system.records.summarize`'s columns).
"""

from __future__ import annotations

import time
from typing import Any

from rlmpc.baselines.planner_alone import pure_mppi


def run_pure_mppi_cell(
    env: str, seed: int, episodes: int = 50, eval_seed: int | None = None, **planner_options: Any
) -> dict[str, Any]:
    """Evaluate pure MPPI on ``env`` for run seed ``seed``; a result cell's fields as plain data.

    ``planner_options`` override the env's Table-5 planner preset (`planners.costs`); the
    objective is always 'reward'. Returns ``{"eval": columns + env_steps (0: nothing is
    learned), seed, eval_seed; "curve": []; "config": {"planner": the resolved planner options,
    "objective": "reward"}; "wall_time_s"}``. The same arguments give the same "eval".
    """
    start = time.perf_counter()
    summary, _, _ = pure_mppi(env, episodes, seed, record=0, eval_seed=eval_seed, **planner_options)
    wall = time.perf_counter() - start
    planner = summary.pop("planner")
    summary.pop("policy", None)
    summary["env_steps"] = 0
    return {
        "eval": summary,
        "curve": [],
        "config": {"planner": planner, "objective": "reward"},
        "wall_time_s": wall,
    }
