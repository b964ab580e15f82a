"""``python -m rlmpc.bench planner``: env steps per second of one planner call for B states (one call = B env steps),
M candidates, K samples, H steps, on an env's planner model with its Table-5 cost, for the
batched backend and the pytorch-mppi backend in one run, and their ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import envs
from envs import planner_config
from planners.costs import build_planner
from planners.mppi import MPPI

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def add_planner_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "planner",
        help="planner throughput, batched vs pytorch-mppi backend",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--env", default=envs.BENCHMARK_ENV, type=envs.registry.env_arg)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64], help="B values")
    p.add_argument("--num-candidates", type=int, default=4, help="M")
    p.add_argument("--num-samples", type=int, default=100, help="K")
    p.add_argument("--horizon", type=int, default=10, help="H")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument(
        "--repeats", type=int, default=5,
        help="least number of timed calls per (backend, B); more are made until --min-seconds",
    )  # fmt: skip
    p.add_argument(
        "--min-seconds", type=float, default=1.0, help="least timed seconds per (backend, B)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (0: torch's default); more than one on a busy machine "
        "can stall in OpenMP spin-waits and distort both figures",
    )
    p.add_argument(
        "--backends", nargs="+", default=["batched", "pytorch_mppi"],
        choices=["batched", "pytorch_mppi"],
        help="which backends (the ratio needs both; pytorch-mppi takes seconds a call at B=64)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run_planner)


def planner_inputs(
    env_name: str, batch: int, num_candidates: int, horizon: int, dtype: torch.dtype,
    device: str, seed: int,
) -> tuple[object, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """The env's model and ``(x [B, nx], a [B, M, na], warm [B, H, nu])`` from real env resets."""
    try:
        env = envs.make(env_name)
        model = env.unwrapped.planner_model()
    except (ImportError, AttributeError) as exc:  # an env module missing from the checkout
        raise SystemExit(
            f"rlmpc.bench planner: the {env_name!r} env or its planner model is not available: {exc!r}"
        ) from exc
    states = []
    for i in range(min(batch, 8)):
        env.reset(seed=seed + i)
        states.append(model.planner_state(env))
    env.close()
    x = torch.as_tensor(
        np.stack([states[i % len(states)] for i in range(batch)]), dtype=dtype, device=device
    )
    g = torch.Generator().manual_seed(seed)
    a = (torch.rand(batch, num_candidates, model.na, generator=g, dtype=dtype) * 2 - 1).to(device)
    warm = torch.zeros(batch, horizon, model.nu, dtype=dtype, device=device)
    return model, x, a, warm


def time_plan(
    planner: MPPI,
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    repeats: int,
    min_seconds: float,
    generator: torch.Generator,
) -> float:
    """Median seconds per `plan` call over at least ``repeats`` calls and ``min_seconds``.

    One untimed warm-up call first. The median, not the mean, so that a stall of a shared
    machine during one call does not decide the figure.
    """
    sync = torch.cuda.synchronize if inputs[0].is_cuda else (lambda: None)
    planner.plan(*inputs, generator=generator)
    sync()
    seconds: list[float] = []
    while len(seconds) < repeats or sum(seconds) < min_seconds:
        start = time.perf_counter()
        planner.plan(*inputs, generator=generator)
        sync()
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def run_planner(args: argparse.Namespace) -> dict[str, float]:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "rlmpc.bench planner: --device cuda asked for, but torch sees no CUDA device"
        )
    for name in ("num_candidates", "num_samples", "horizon", "repeats"):
        if getattr(args, name) < 1:
            raise SystemExit(f"rlmpc.bench planner: --{name.replace('_', '-')} must be >= 1")
    if any(b < 1 for b in args.batch_sizes):
        raise SystemExit("rlmpc.bench planner: --batch-sizes must all be >= 1")
    if args.threads < 0:
        raise SystemExit("rlmpc.bench planner: --threads must be >= 0")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    config = planner_config(args.env, num_samples=args.num_samples, horizon=args.horizon)
    print(
        f"planner bench: env={args.env} device={args.device} dtype={args.dtype} "
        f"threads={torch.get_num_threads()} M={args.num_candidates} K={args.num_samples} H={args.horizon}"
    )
    figures: dict[str, float] = {}
    for batch in args.batch_sizes:
        model, x, a, warm = planner_inputs(
            args.env,
            batch,
            args.num_candidates,
            args.horizon,
            DTYPES[args.dtype],
            args.device,
            args.seed,
        )
        rates = {}
        for backend in args.backends:
            planner: MPPI = build_planner(model, config, backend=backend)
            g = torch.Generator(device=args.device).manual_seed(args.seed)
            # the pytorch-mppi backend takes seconds per call at B=64: three timed calls do
            repeats = args.repeats if backend == "batched" else min(args.repeats, 3)
            seconds = time_plan(planner, (x, a, warm), repeats, args.min_seconds, g)
            rates[backend] = batch / seconds
            print(
                f"  B={batch:<4d} {backend:<13s} {seconds * 1e3:10.2f} ms/call {rates[backend]:10.1f} env-steps/s"
            )
        for backend, rate in rates.items():
            figures[f"planner_B{batch}_{backend}_env_steps_per_s"] = rate
        if len(rates) == 2:
            figures[f"planner_B{batch}_ratio"] = rates["batched"] / rates["pytorch_mppi"]
    return figures
