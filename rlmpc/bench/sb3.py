"""``python -m rlmpc.bench sb3``: the training cost of a Stable-Baselines3 baseline per env step.

One SB3 model with Table 3 (PPO) or Table 4 (SAC), built as `rlmpc.baselines.sb3` builds it
for a Table 1 cell, trains for ``--steps`` env steps on one torch thread (a trial's one CPU);
the figure is the wall time of that ``learn()`` over the steps: acting, the env, the updates
(SAC: one per env step; PPO: 10 epochs over each 2,048-step rollout). SAC's warm-up
(``learning_starts`` steps of random actions, no update) runs before the clock starts.
"""

from __future__ import annotations

import argparse
import time

import envs


def add_sb3_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sb3",
        help="ms per env step of an SB3 baseline (Table 3 / 4), updates included",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--algo", choices=["ppo", "sac"], default="sac")
    p.add_argument("--env", type=envs.registry.env_arg, default="lunarlander")
    p.add_argument("--steps", type=int, default=None,
                   help="timed env steps (default: 3,000 for SAC, 8,192 = 4 rollouts for PPO)")  # fmt: skip
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run_sb3)


def run_sb3(args: argparse.Namespace) -> dict[str, float]:
    import torch

    from rlmpc.baselines.sb3 import build_model

    torch.set_num_threads(args.threads)
    steps = args.steps or (3000 if args.algo == "sac" else 8192)
    model = build_model(args.algo, args.env, args.seed)
    warm = getattr(model, "learning_starts", 0)
    if warm:
        model.learn(warm)
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    elapsed = time.perf_counter() - start
    taken = model.num_timesteps - warm
    return {f"sb3_{args.algo}_{args.env}_ms_per_env_step": elapsed / taken * 1e3}
