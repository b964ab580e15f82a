"""Rollout-worker throughput: ``python -m rlmpc.tools.bench_worker [--envs ...] [--repeats N]``.

Env steps per second of one in-process `RolloutWorker` (B envs, M candidates, the env's
Table-5 planner, one torch thread): a ``collect`` of T steps after a short warm-up, timed
``--repeats`` times, median reported. Ends with one ``worker_<env>_B<B>_env_steps_per_s: v``
line per env, so that scripts can compare runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import torch

import envs
from learners.policy import NetworkConfig
from planners.costs import planner_config
from rlmpc.system.records import FragmentId
from rlmpc.system.worker import RolloutWorker, WorkerSpec


def worker_steps_per_s(
    env: str, n_envs: int, num_candidates: int, steps: int, repeats: int, seed: int
) -> float:
    """Median env steps/s of ``collect(steps)`` over ``repeats`` timed calls (after a warm-up)."""
    spec = WorkerSpec(env, n_envs, num_candidates, planner_config(env), NetworkConfig(), seed)
    w = RolloutWorker(0, spec)
    w.collect(FragmentId(0, 0), 4, None, 0)  # warm-up
    rates = []
    for i in range(repeats):
        t = time.perf_counter()
        w.collect(FragmentId(i + 1, 0), steps, None, 0)
        rates.append(n_envs * steps / (time.perf_counter() - t))
    return statistics.median(rates)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    local = envs.names(local=True)
    p.add_argument("--envs", nargs="+", default=local, choices=local)
    p.add_argument("--n-envs", type=int, default=64, help="B")
    p.add_argument("--num-candidates", type=int, default=4, help="M")
    p.add_argument("--steps", type=int, default=32, help="T, steps per timed collect")
    p.add_argument("--repeats", type=int, default=5, help="timed collects per env (median)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    figures = {
        f"worker_{env}_B{args.n_envs}_env_steps_per_s": worker_steps_per_s(
            env, args.n_envs, args.num_candidates, args.steps, args.repeats, args.seed
        )
        for env in args.envs
    }
    for key, value in figures.items():
        print(f"{key}: {value:.0f}")
    return figures


if __name__ == "__main__":
    main()
