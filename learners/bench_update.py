"""Time one `PPOLearner.update` on the system's per-iteration workload, on one thread.

The workload of one learner iteration at Table 3's settings: a real fragment of
``T × B = 32 × 64 = 2048`` steps and ``N = (M-1) · 2048 = 6144`` virtual samples with planned
paths of ``H = 10`` steps, ``nobs = 12``, ``na = 2``, ``D = 5`` heads of (64, 64), 10 epochs
× 32 minibatches of 64 real + 192 virtual samples, loss mixing (eq. 10), adaptive ρ.
Batches are random but valid (finite, correctly shaped, a few episode ends).

``python -m learners.bench_update [--iters 10] [--threads 1]`` ends with
``learner_update_s: <median seconds>`` and ``learner_env_steps_per_s: <T·B / median>``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import torch

from learners.batches import RealBatch, VirtualBatch
from learners.policy import NetworkConfig
from learners.ppo import PPOConfig, PPOLearner
from learners.rho import InfluenceRatioConfig


def random_batches(
    T: int, B: int, N: int, H: int, nobs: int, na: int, seed: int = 0
) -> tuple[RealBatch, VirtualBatch]:
    """A random real fragment ``[T, B, ...]`` and ``N`` virtual samples with ``H``-step paths."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    u = lambda *s: torch.rand(*s, generator=g)
    real = RealBatch(
        r(T, B, nobs), r(T, B, na), r(T, B) - 2.0, r(T, B),
        u(T, B) < 0.01, u(T, B) < 0.01, r(T, B, nobs),
    )  # fmt: skip
    virtual = VirtualBatch(
        r(N, nobs), r(N, na), r(N) - 2.0, r(N, H + 1, nobs), r(N, H), u(N, H) < 0.02
    )
    real.dims(), virtual.dims()
    return real, virtual


def time_updates(
    learner: PPOLearner, real: RealBatch, virtual: VirtualBatch, iters: int
) -> tuple[list[float], list[float]]:
    """``(wall, cpu)`` seconds of each of ``iters`` updates, after one warm-up update.

    The CPU time is this thread's (`time.thread_time`): on a shared machine it is the less
    noisy of the two, and with one torch thread it is the work the update does.
    """
    learner.update(real, virtual)
    wall, cpu = [], []
    for _ in range(iters):
        start, start_cpu = time.perf_counter(), time.thread_time()
        learner.update(real, virtual)
        wall.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)
    return wall, cpu


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=10, help="timed updates (>= 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.iters < 1:
        raise ValueError(f"--iters must be >= 1, got {args.iters}")
    torch.set_num_threads(args.threads)
    T, B, M, H, nobs, na = 32, 64, 4, 10, 12, 2
    real, virtual = random_batches(T, B, (M - 1) * T * B, H, nobs, na, seed=args.seed)
    learner = PPOLearner(
        nobs, na, PPOConfig(n_steps=T * B), NetworkConfig(),
        InfluenceRatioConfig(mode="adaptive", rho0=0.3), seed=args.seed,
    )  # fmt: skip
    times, cpu = time_updates(learner, real, virtual, args.iters)
    median = statistics.median(times)
    print(
        f"threads={args.threads} iters={args.iters} wall min={min(times):.4f}s "
        f"max={max(times):.4f}s; thread cpu median={statistics.median(cpu):.4f}s"
    )
    figures = {"learner_update_s": median, "learner_env_steps_per_s": T * B / median}
    for key, value in figures.items():
        print(f"{key}: {value:.4g}")
    return figures


if __name__ == "__main__":
    main()
