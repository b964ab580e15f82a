"""Rollout-worker throughput: ``python -m rlmpc.bench.worker [--envs ...] [--repeats N]``.

Env steps per second of one in-process `RolloutWorker` (B envs, M candidates, the env's
Table-5 planner, one torch thread): a ``collect`` of T steps after a short warm-up, timed
``--repeats`` times, median reported. The default times fresh episodes (on Lunar Lander the
landers are still in the air); ``--skip-steps 600`` times the steady state of a training
run, where most landers are on the ground and the model's contact solver costs the most. Ends with one ``worker_<env>_B<B>_env_steps_per_s: v``
line per env, so that scripts can compare runs.

``--rho-zero`` also times a twin worker under weights made at ρ = 0 (`Weights.rho`: no virtual
samples are built), the two interleaved call by call so that load on the machine hits both
alike, and prints ``worker_<env>_B<B>_rho0_env_steps_per_s`` and ``..._rho0_speedup``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import torch

import envs
from envs import planner_config
from learners.policy import NetworkConfig
from rlmpc.system.records import FragmentId, Weights
from rlmpc.system.worker import RolloutWorker, WorkerSpec


def worker_steps_per_s(
    env: str,
    n_envs: int,
    num_candidates: int,
    steps: int,
    repeats: int,
    seed: int,
    rhos: Sequence[float | None] = (None,),
    skip: int = 4,
) -> list[float]:
    """Median env steps/s of ``collect(steps)`` over ``repeats`` timed calls (after ``skip``
    untimed steps), one figure per ρ in ``rhos`` (the ρ its weights carry; None: weights as
    built), the workers' calls interleaved."""
    spec = WorkerSpec(env, n_envs, num_candidates, planner_config(env), NetworkConfig(), seed)
    workers, weights = [], []
    for rho in rhos:
        w = RolloutWorker(0, spec)
        values = None if w.values is None else w.values.state_dict()
        weights.append(Weights(w.policy.state_dict(), values, rho))
        w.collect(FragmentId(0, 0), skip, weights[-1], 0)  # warm-up, or into steady state
        workers.append(w)
    rates: list[list[float]] = [[] for _ in rhos]
    for i in range(repeats):
        for j, w in enumerate(workers):
            t = time.perf_counter()
            w.collect(FragmentId(i + 1, 0), steps, weights[j], 0)
            rates[j].append(n_envs * steps / (time.perf_counter() - t))
    return [statistics.median(r) for r in rates]


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
    p.add_argument(
        "--skip-steps", type=int, default=4,
        help="steps collected untimed first (the default warms up fresh episodes, whose "
        "landers are in the air; ~600 times Lunar Lander's steady state, most on the ground)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--rho-zero", action="store_true",
        help="also time a worker under weights made at rho = 0 (no virtual samples)",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.skip_steps < 1:
        p.error(f"--skip-steps must be >= 1, got {args.skip_steps}")
    torch.set_num_threads(args.threads)
    figures = {}
    for env in args.envs:
        key = f"worker_{env}_B{args.n_envs}"
        rates = worker_steps_per_s(
            env, args.n_envs, args.num_candidates, args.steps, args.repeats, args.seed,
            rhos=(None, 0.0) if args.rho_zero else (None,), skip=args.skip_steps,
        )  # fmt: skip
        figures[f"{key}_env_steps_per_s"] = rates[0]
        if args.rho_zero:
            figures[f"{key}_rho0_env_steps_per_s"] = rates[1]
            figures[f"{key}_rho0_speedup"] = rates[1] / rates[0]
    for key, value in figures.items():
        print(f"{key}: {value:.2f}" if key.endswith("speedup") else f"{key}: {value:.0f}")
    return figures


if __name__ == "__main__":
    main()
