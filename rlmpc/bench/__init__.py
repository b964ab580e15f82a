"""Benchmarks and measurements, each ending with one ``key: value`` line per figure.

| command | module | what it measures |
|---|---|---|
| ``python -m rlmpc.bench planner`` | `rlmpc.bench.planner` | one planner call: batched vs pytorch-mppi backend, B ∈ {1, 8, 64} |
| ``python -m rlmpc.bench system`` | `rlmpc.bench.system` | end-to-end training throughput against the paper-faithful loop, peak memory |
| ``python -m rlmpc.bench sb3`` | `rlmpc.bench.sb3` | ms per env step of a Stable-Baselines3 baseline, updates included |
| ``python -m rlmpc.bench tracking`` | `rlmpc.bench.tracking` | ms a metrics row costs the run log with and without TensorBoard |
| ``python -m rlmpc.bench.worker`` | `rlmpc.bench.worker` | one rollout actor's env steps/s |
| ``python -m rlmpc.bench.update`` | `rlmpc.bench.update` | one learner update: fused vs autograd engine, and the arithmetic floor |
| ``python -m rlmpc.bench.models`` | `rlmpc.bench.models` | the planner models' batched steps |
| ``python -m rlmpc.bench.model_error`` | `rlmpc.bench.model_error` | a planner model's one-step prediction error against its env |
| ``python -m rlmpc.bench.gpu_check`` | `rlmpc.bench.gpu_check` | on a CUDA machine: the planner and the update on CPU and CUDA, the `gpu` tests, a short GPU run |

Benchmarks print a ratio against a reference measured in the same run; the tests never
assert a wall-clock time.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from common.checks import prog_name


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """``python -m rlmpc.bench {planner,system,sb3,tracking} [options]``: one subcommand per
    benchmark, each a ``run_<name>(args) -> dict[str, float]`` registered by an
    ``add_<name>_parser``; prints whatever it prints, then one ``key: value`` line per figure."""
    from rlmpc.bench.planner import add_planner_parser
    from rlmpc.bench.sb3 import add_sb3_parser
    from rlmpc.bench.system import add_system_parser
    from rlmpc.bench.tracking import add_tracking_parser

    parser = argparse.ArgumentParser(
        prog=prog_name("python -m rlmpc.bench"), description=__doc__.split("\n\n")[0]
    )
    subparsers = parser.add_subparsers(dest="benchmark", required=True)
    add_planner_parser(subparsers)
    add_system_parser(subparsers)
    add_sb3_parser(subparsers)
    add_tracking_parser(subparsers)
    args = parser.parse_args(argv)
    figures = args.run(args)
    for key, value in figures.items():
        print(f"{key}: {value:.4g}")
    sys.stdout.flush()
    return figures


def cli() -> None:
    """The ``rlmpc-bench`` console command (`main`'s figures printed, not returned)."""
    main()
