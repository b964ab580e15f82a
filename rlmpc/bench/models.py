"""Time the planner models' batched functions on CPU, one thread, float32.

The planner (`planners.mppi`) rolls every model out on ``[B, K, nx]`` states with
``B = 64`` envs and ``K = 100`` samples, ``H = 10`` times per planning call, reading each
step's states as a strided view of its ``[B, K, H+1, nx]`` buffer; this benchmark calls the
models the same way. States are the envs' own start states (one seed per row of ``B``) with
small noise on the physical part, controls uniform in the action box. Lunar Lander is also
timed on landing states (`LANDING`), where its leg contacts are solved.

Run ``python -m rlmpc.bench.models`` (``--help`` for the sizes). Whatever else it prints, it
ends with one ``key: value`` line per figure (median over repeats, milliseconds):
``model_<env>_dynamics_ms``, ``model_<env>_reward_ms``, ``model_<env>_terminated_ms``,
``model_<env>_rollout_ms`` (``H`` dynamics steps into a buffer, as the planner does) and
``model_lunarlander_landing_dynamics_ms``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

import envs

ENV_NAMES = ("acrobot", "lunarlander", "racing")
#: the state dims that get noise (Lunar Lander's leg flags stay 0/1)
NOISY = {"acrobot": 4, "lunarlander": 6, "racing": 11}
#: Lunar Lander landing states: obs y in [-0.01, 0.04] (within 30 cm of resting on the pad),
#: |x| <= 0.4 (the pad and beside it), each leg down with probability 0.2
LANDING = {"y": (-0.01, 0.04), "x": 0.4, "leg_down": 0.2}


def start_states(
    name: str, B: int, K: int, seed: int = 0, landing: bool = False
) -> tuple[object, Tensor, Tensor]:
    """(model, states ``[B, K, nx]``, controls ``[B, K, nu]``), float32, for env ``name``."""
    env = envs.make(name)
    model = env.unwrapped.planner_model()
    rows = []
    for b in range(B):
        env.reset(seed=seed + b)
        rows.append(model.planner_state(env))
    env.close()
    gen = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(np.array(rows), dtype=torch.float32)[:, None].expand(B, K, model.nx)
    x = x.clone()
    x[..., : NOISY[name]] += 0.05 * torch.randn(B, K, NOISY[name], generator=gen)
    if landing:
        (y0, y1), x_max = LANDING["y"], LANDING["x"]
        x[..., 0] = x_max * (2 * torch.rand(B, K, generator=gen) - 1)
        x[..., 1] = y0 + (y1 - y0) * torch.rand(B, K, generator=gen)
        x[..., 6:8] = (torch.rand(B, K, 2, generator=gen) < LANDING["leg_down"]).float()
    lo, hi = (torch.tensor(v, dtype=torch.float32) for v in (model.u_low, model.u_high))
    u = lo + (hi - lo) * torch.rand(B, K, model.nu, generator=gen)
    return model, x, u


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 5) -> tuple[float, float]:
    """(median, min) wall time of ``fn()`` in milliseconds over ``repeats`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def rollout_buffer(x: Tensor, horizon: int) -> Tensor:
    """A ``[B, K, H+1, nx]`` rollout buffer holding ``x [B, K, nx]`` at step 0, as the planner's."""
    buf = x.new_empty(*x.shape[:2], horizon + 1, x.shape[-1])
    buf[..., 0, :] = x
    return buf


def bench(name: str, B: int, K: int, H: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Times of one env's model functions, keyed by figure name."""
    model, x0, u0 = start_states(name, B, K)
    buf = rollout_buffer(x0, H)
    x = buf[..., 0, :]  # a strided view, as the planner hands it over
    controls = u0[:, :, None].expand(B, K, H, model.nu).contiguous()
    u = controls[..., 0, :]

    def rollout() -> None:
        for t in range(H):
            buf[..., t + 1, :] = model.dynamics(buf[..., t, :], controls[..., t, :])

    figures = {
        f"model_{name}_dynamics_ms": median_ms(lambda: model.dynamics(x, u), repeats),
        f"model_{name}_reward_ms": median_ms(lambda: model.reward(x, u), repeats),
        f"model_{name}_terminated_ms": median_ms(lambda: model.terminated(x), repeats),
        f"model_{name}_rollout_ms": median_ms(rollout, max(3, repeats // H)),
    }
    if name == "lunarlander":
        _, x_land, u_land = start_states(name, B, K, landing=True)
        x_land = rollout_buffer(x_land, H)[..., 0, :]
        landing = lambda: model.dynamics(x_land, u_land)
        figures[f"model_{name}_landing_dynamics_ms"] = median_ms(landing, repeats)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", nargs="+", choices=ENV_NAMES, default=list(ENV_NAMES))
    parser.add_argument("--batch", type=int, default=64, help="B, envs")
    parser.add_argument("--samples", type=int, default=100, help="K, samples per env")
    parser.add_argument("--horizon", type=int, default=10, help="H, steps per rollout")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per figure")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    for key in ("batch", "samples", "horizon", "repeats", "threads"):
        if getattr(args, key) < 1:
            parser.error(f"--{key} must be >= 1, got {getattr(args, key)}")
    torch.set_num_threads(args.threads)
    figures = {}
    for name in args.envs:
        figures.update(bench(name, args.batch, args.samples, args.horizon, args.repeats))
    print(f"B={args.batch} K={args.samples} H={args.horizon} float32 threads={args.threads}")
    for key, (_, fastest) in figures.items():
        print(f"  {key.removesuffix('_ms')} min: {fastest:.3f} ms")
    for key, (median, _) in figures.items():
        print(f"{key}: {median:.3f}")


if __name__ == "__main__":
    main()
