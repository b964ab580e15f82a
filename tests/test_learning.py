"""Learning runs (``scripts/test -m slow``); figures and commands are quoted in docs/results.md."""

from __future__ import annotations

import json

import pytest
import ray

from rlmpc.run.cli import parse
from rlmpc.run.train import train

SEEDS = (0, 1, 2)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_ppo_mppi_solves_acrobot_within_300k_steps(tmp_path):
    """PPO-MPPI (ρ = 0.3, M = 4) on AcrobotDZ: ≥ 90 % success on average over seeds 0, 1, 2,
    50 unseen evaluation episodes each, within 300k env steps (the paper's Table 1 reports
    100 % at 1M).

    Three seeds, not one: at 300k steps the policy is still moving, and a change that moves
    the learner's arithmetic by float32 rounding alone (~1e-7 per update) moved seed 0 from
    0.98 to 0.80, seed 1 from 1.00 to 0.98 and left seed 2 at 0.96 (docs/performance.md).
    ~7 min here: three runs one after another."""
    rates = []
    for seed in SEEDS:
        cfg = parse(
            ["--env", "acrobot", "--total-env-steps", "300000", "--influence-ratio-rho0", "0.3",
             "--num-candidates", "4", "--runs-dir", str(tmp_path), "--run-name", f"s{seed}",
             "--seed", str(seed), "--wandb-mode", "offline", "--eval-every", "0",
             "--final-eval-episodes", "50"]
        ).cfg  # fmt: skip
        try:
            run_dir = train(cfg)
        finally:
            ray.shutdown()
        result = json.loads((run_dir / "eval.json").read_text())
        assert result["episodes"] == 50 and result["env_steps"] <= 300_000
        rates.append(result["success_rate"]["mean"])
    assert sum(rates) / len(rates) >= 0.9, dict(zip(SEEDS, rates, strict=True))
