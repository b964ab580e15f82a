"""Learning runs (``scripts/test -m slow``); figures and commands are quoted in the README."""

from __future__ import annotations

import json

import pytest
import ray

from rlmpc.run.cli import parse
from rlmpc.run.train import train


@pytest.mark.slow
def test_ppo_mppi_solves_acrobot_within_300k_steps(tmp_path):
    """PPO-MPPI (ρ = 0.3, M = 4) on AcrobotDZ: ≥ 90 % success over 50 evaluation episodes
    within 300k env steps (the paper's Table 1 reports 100 %)."""
    cfg = parse(
        ["--env", "acrobot", "--total-env-steps", "300000", "--influence-ratio-rho0", "0.3",
         "--num-candidates", "4", "--runs-dir", str(tmp_path), "--run-name", "acrobot",
         "--wandb-mode", "offline", "--eval-every", "0", "--final-eval-episodes", "50"]
    ).cfg  # fmt: skip
    try:
        run_dir = train(cfg)
    finally:
        ray.shutdown()
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["episodes"] == 50 and result["env_steps"] <= 300_000
    assert result["success_rate"]["mean"] >= 0.9, result
