"""Time one `PPOLearner.update` on the system's per-iteration workload, on one thread.

The workload of one learner iteration at Table 3's settings: a real fragment of
``T × B = 32 × 64 = 2048`` steps and ``N = (M-1) · 2048 = 6144`` virtual samples with planned
paths of ``H = 10`` steps, ``nobs = 12``, ``na = 2``, ``D = 5`` heads of (64, 64), 10 epochs
× 32 minibatches of 64 real + 192 virtual samples, loss mixing (eq. 10), adaptive ρ.
Batches are random but valid (finite, correctly shaped, a few episode ends).

Both engines of `PPOLearner` are timed, interleaved update by update so that a shared
machine's load falls on both alike: ``fused`` (the default) and ``autograd`` (the loop the
learner ran before the fused engine). ``--rho0 0`` times a ρ = 0 iteration (no virtual data,
as the actors then ship none).

``python -m rlmpc.bench.update [--iters 10] [--threads 1] [--device cuda]`` ends with
``learner_update_s: <median seconds, fused>``, ``learner_update_autograd_s``,
``learner_speedup`` (their ratio) and ``learner_env_steps_per_s: <T·B / median>``; the
thread CPU seconds (`time.thread_time`) are printed as well.

**The arithmetic floor** (on by default, ``--no-floor`` to skip): how fast could *this* maths
go on this core? One update of the first engine runs under the torch profiler, which counts
the floating-point operations of its matrix products (``aten::mm``, ``addmm``, ``bmm``,
``baddbmm``: ``learner_gflop``, the same for both engines, the update's arithmetic) and the
elements its activations pass through: σ forward (``learner_sigmoid_M``) and the
activation's backward (``learner_activation_backward_M``: tanh' in the autograd engine, σ' in
the fused one). Reference kernels are timed in the same sitting, on the same thread: a
batched product of the fused engine's dominant shape ``[2D, 256, 64] × [2D, 64, 64]``
(``gemm_ref_gflops``), an in-place σ, a tanh' and a σ' over ``[2D, 256, 64]``
(``sigmoid_ref_ns``, ``tanh_backward_ref_ns``, ``sigmoid_backward_ref_ns`` per element). Then
``learner_floor_s`` = GFLOP / reference GFLOP/s + each activation's elements × its reference
time: the update at the reference kernels' speed with nothing else (no Adam, no gathers, no
Python, no element-wise work but the activations). ``learner_floor_fraction`` is the fused
update's thread CPU time over it, ``autograd_over_floor`` the autograd loop's. The floor is an
estimate, not a bound: the products of other shapes (the critic's [2D, m, 64] chunks, the
first layer's [m, 12] × [12, 2D·64]) run at their own rates.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Sequence

import torch

from learners.batches import RealBatch, VirtualBatch
from learners.policy import NetworkConfig
from learners.ppo import PPOLearner
from learners.ppo_loss import PPOConfig
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
    learners: dict[str, PPOLearner], real: RealBatch, virtual: VirtualBatch | None, iters: int
) -> dict[str, tuple[list[float], list[float]]]:
    """``{name: (wall, cpu)}`` seconds of ``iters`` updates of each learner, interleaved, after
    one warm-up update each.

    The CPU time is this thread's (`time.thread_time`): on a shared machine it is the less
    noisy of the two, and with one torch thread it is the work the update does.
    """
    times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in learners}
    sync = torch.cuda.synchronize if torch.cuda.is_initialized() else (lambda: None)
    for learner in learners.values():
        learner.update(real, virtual)
    for _ in range(iters):
        for name, learner in learners.items():
            sync()
            start, start_cpu = time.perf_counter(), time.thread_time()
            learner.update(real, virtual)
            sync()
            times[name][0].append(time.perf_counter() - start)
            times[name][1].append(time.thread_time() - start_cpu)
    return times


MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
SIGMOIDS = ("aten::sigmoid_", "aten::sigmoid")
TANH_BACKWARDS = ("aten::tanh_backward",)
SIGMOID_BACKWARDS = ("aten::sigmoid_backward",)


def update_arithmetic(
    learner: PPOLearner, real: RealBatch, virtual: VirtualBatch | None
) -> tuple[float, int, int, int]:
    """(GFLOP of the matrix products, elements through σ, through tanh', through σ') of one
    update, as the torch profiler counts them."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], with_flops=True, record_shapes=True) as prof:
        learner.update(real, virtual)
    flops, sig, tanh_b, sig_b = 0, 0, 0, 0
    for e in prof.events():
        n = math.prod(e.input_shapes[0]) if e.input_shapes and e.input_shapes[0] else 0
        if e.name in MATMULS:
            flops += e.flops or 0
        elif e.name in SIGMOIDS:
            sig += n
        elif e.name in TANH_BACKWARDS:
            tanh_b += n
        elif e.name in SIGMOID_BACKWARDS:
            sig_b += n
    return flops / 1e9, sig, tanh_b, sig_b


def reference_kernels(
    G: int, rows: int = 256, width: int = 64, reps: int = 200
) -> tuple[float, float, float, float]:
    """(GFLOP/s of ``bmm [G, rows, width] × [G, width, width]``, ns per element of an in-place
    σ, of tanh' and of σ' over ``[G, rows, width]``), medians of 5 timings of ``reps`` calls
    each, thread CPU time."""
    a, b = torch.randn(G, rows, width), torch.randn(G, width, width)
    c, x = torch.empty(G, rows, width), torch.randn(G, rows, width)
    y, g = torch.rand(G, rows, width), torch.randn(G, rows, width)
    tanh_backward = torch.ops.aten.tanh_backward.grad_input
    sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input
    gemm, sig, tb, sb = [], [], [], []
    per_elt = lambda t0: (time.thread_time() - t0) / reps / x.numel() * 1e9
    for _ in range(5):
        t = time.thread_time()
        for _ in range(reps):
            torch.bmm(a, b, out=c)
        gemm.append(2 * G * rows * width * width * reps / (time.thread_time() - t) / 1e9)
        t = time.thread_time()
        for _ in range(reps):
            torch.sigmoid_(x)  # in place, pass after pass: stays in (0, 1)
        sig.append(per_elt(t))
        t = time.thread_time()
        for _ in range(reps):
            tanh_backward(g, y, grad_input=c)
        tb.append(per_elt(t))
        t = time.thread_time()
        for _ in range(reps):
            sigmoid_backward(g, y, grad_input=c)
        sb.append(per_elt(t))
    return tuple(statistics.median(v) for v in (gemm, sig, tb, sb))  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=10, help="timed updates per engine (>= 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--rho0", type=float, default=0.3, help="ρ0 (0: no virtual data)")
    parser.add_argument(
        "--engines", nargs="+", default=["fused", "autograd"], choices=["fused", "autograd"]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="the learners' device (cuda: no floor, a CPU figure)")  # fmt: skip
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="skip the arithmetic floor (profiler counts, reference kernels)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.iters < 1:
        raise ValueError(f"--iters must be >= 1, got {args.iters}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "rlmpc.bench.update: --device cuda asked for, but torch sees no CUDA device"
        )
    torch.set_num_threads(args.threads)
    T, B, M, H, nobs, na = 32, 64, 4, 10, 12, 2
    real, virtual = random_batches(T, B, (M - 1) * T * B, H, nobs, na, seed=args.seed)
    if args.rho0 == 0:
        virtual = None
    learners = {
        engine: PPOLearner(
            nobs,
            na,
            PPOConfig(n_steps=T * B),
            NetworkConfig(),
            InfluenceRatioConfig(mode="adaptive", rho0=args.rho0),
            device=args.device,
            seed=args.seed,
            engine=engine,
        )  # fmt: skip
        for engine in args.engines
    }
    times = time_updates(learners, real, virtual, args.iters)
    figures: dict[str, float] = {}
    for name, (wall, cpu) in times.items():
        print(
            f"{name}: threads={args.threads} iters={args.iters} wall median="
            f"{statistics.median(wall):.4f}s min={min(wall):.4f}s max={max(wall):.4f}s; "
            f"thread cpu median={statistics.median(cpu):.4f}s"
        )
        suffix = "" if name == "fused" else f"_{name}"
        figures[f"learner_update{suffix}_s"] = statistics.median(wall)
        figures[f"learner_update{suffix}_cpu_s"] = statistics.median(cpu)
    first = args.engines[0]
    suffix = "" if first == "fused" else f"_{first}"
    figures["learner_env_steps_per_s"] = T * B / figures[f"learner_update{suffix}_s"]
    if "fused" in times and "autograd" in times:
        figures["learner_speedup"] = (
            figures["learner_update_autograd_s"] / figures["learner_update_s"]
        )
        figures["learner_speedup_cpu"] = (
            figures["learner_update_autograd_cpu_s"] / figures["learner_update_cpu_s"]
        )
    print(f"device: {args.device}")
    if args.floor and args.device == "cpu":
        gflop, sig, tanh_b, sig_b = update_arithmetic(next(iter(learners.values())), real, virtual)
        gemm, sig_ns, tb_ns, sb_ns = reference_kernels(2 * NetworkConfig().ensemble_size)
        floor = gflop / gemm + (sig * sig_ns + tanh_b * tb_ns + sig_b * sb_ns) * 1e-9
        figures |= {"learner_gflop": gflop, "learner_sigmoid_M": sig / 1e6,
                    "learner_activation_backward_M": (tanh_b + sig_b) / 1e6, "gemm_ref_gflops": gemm,
                    "sigmoid_ref_ns": sig_ns, "tanh_backward_ref_ns": tb_ns,
                    "sigmoid_backward_ref_ns": sb_ns,
                    "learner_floor_s": floor}  # fmt: skip
        for name in args.engines:
            key = "learner_update_cpu_s" if name == "fused" else f"learner_update_{name}_cpu_s"
            tag = "learner" if name == "fused" else name
            figures[f"{tag}_gflops"] = gflop / figures[key]
            figures[f"{tag}_floor_fraction" if name == "fused" else f"{name}_over_floor"] = (
                figures[key] / floor
            )
    for key, value in figures.items():
        print(f"{key}: {value:.4g}")
    return figures


if __name__ == "__main__":
    main()
