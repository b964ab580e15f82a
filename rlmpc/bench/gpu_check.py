"""The CUDA checks, as one short script for a lent GPU machine: ``python -m rlmpc.bench.gpu_check``.

What it runs, in this order, each printing its own figures (about 5 minutes on one GPU):

1. the planner (`rlmpc.bench planner`, batched backend, Lunar Lander's model and Table 5
   cost, M = 4, K = 100, H = 10) at B ∈ {64, 1024, 4096} on the CPU (one thread) and on CUDA;
2. the learner's update (`rlmpc.bench.update`, Table 3's workload) on the CPU (one thread)
   and on CUDA, both engines;
3. the ``gpu``-marked tests (``pytest -m gpu``: the learner and policy on CUDA against the CPU);
4. a short end-to-end run with GPU actors: two rollout actors sharing the GPU
   (``--actor-device cuda --actor-gpus 0.25``) and the learner on it, 8 iterations.

It ends with a summary, one ``key: value`` line per figure, among them
``planner_B<B>_cuda_over_cpu`` and ``learner_cuda_over_cpu`` (speed ratios: > 1 means CUDA is
faster) and ``cuda_not_slower_at_B64`` (1 or 0: the issue's requirement that the CUDA path be
no slower than the CPU one at B = 64). The exit status is 0 only when every part ran.
Refuses at once, before anything runs, when torch sees no CUDA device.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch


def _planner(device: str, batches: Sequence[int]) -> dict[str, float]:
    from rlmpc.bench import main as bench

    argv = ["planner", "--device", device, "--backends", "batched", "--min-seconds", "0.5",
            "--batch-sizes", *map(str, batches)]  # fmt: skip
    return bench(argv)


def _learner(device: str) -> dict[str, float]:
    from rlmpc.bench.update import main as bench_update

    return bench_update(["--iters", "5", "--device", device, "--no-floor"])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 1024, 4096])
    p.add_argument("--run-dir", type=Path, default=None, help="where the short run goes (tmp)")
    p.add_argument("--skip-run", action="store_true", help="leave out part 4 (Ray, GPU actors)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit(
            "rlmpc.bench.gpu_check: torch sees no CUDA device; run it on a GPU machine"
        )
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)
    summary: dict[str, float] = {}
    cpu, cuda = _planner("cpu", args.batch_sizes), _planner("cuda", args.batch_sizes)
    for b in args.batch_sizes:
        key = f"planner_B{b}_batched_env_steps_per_s"
        summary[f"planner_B{b}_cpu_env_steps_per_s"] = cpu[key]
        summary[f"planner_B{b}_cuda_env_steps_per_s"] = cuda[key]
        summary[f"planner_B{b}_cuda_over_cpu"] = cuda[key] / cpu[key]
    if 64 in args.batch_sizes:
        summary["cuda_not_slower_at_B64"] = float(summary["planner_B64_cuda_over_cpu"] >= 1.0)
    lc, lg = _learner("cpu"), _learner("cuda")
    summary |= {"learner_cpu_s": lc["learner_update_s"], "learner_cuda_s": lg["learner_update_s"],
                "learner_cuda_over_cpu": lc["learner_update_s"] / lg["learner_update_s"]}  # fmt: skip
    ok = True
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"]
    )
    summary["gpu_tests_passed"] = float(tests.returncode == 0)
    ok &= tests.returncode == 0
    if not args.skip_run:
        with tempfile.TemporaryDirectory() as tmp:
            runs = args.run_dir or Path(tmp)
            cmd = [sys.executable, "launch.py", "--env", "lunarlander", "--total-env-steps", "16384",
                   "--num-actors", "2", "--actor-device", "cuda", "--actor-gpus", "0.25",
                   "--learner-device", "cuda", "--eval-every", "0", "--final-eval-episodes", "2",
                   "--wandb-mode", "disabled", "--no-progress", "--runs-dir", str(runs)]  # fmt: skip
            run = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[2])
            summary["gpu_actor_run_passed"] = float(run.returncode == 0)
            ok &= run.returncode == 0
    print("gpu check summary:")
    for key, value in summary.items():
        print(f"{key}: {value:.4g}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
