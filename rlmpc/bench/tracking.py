"""``python -m rlmpc.bench tracking``: what the run log's TensorBoard writer costs a row.

`rlmpc.run.runlog.RunLogger` writes each learner iteration's row to ``metrics.jsonl`` and,
with ``--tensorboard`` (the default), every number of it as a scalar. The benchmark logs
``--rows`` rows of ``--figures`` numbers (a training row has ~60) through two loggers, one
without the writer (the reference) and one with it, alternately row by row so that the
machine's drift touches both alike, W&B disabled; the figures are the milliseconds a row
costs each (the loggers' closing included: the writer's thread flushes its queue there), their
ratio, and the one-off import of the writer. The writer's own thread also runs beside the
rows it is handed, so on a loaded machine the reference pays a little of its cost too. A
learner iteration takes seconds (Acrobot) to a minute (Lunar Lander), against which a row's
cost is read.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

import numpy as np


def add_tracking_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tracking",
        help="ms a metrics row costs the run log with and without TensorBoard",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--rows", type=int, default=300, help="rows logged by each logger (1..100000)")
    p.add_argument("--figures", type=int, default=63, help="numbers in a row (1..10000)")
    p.set_defaults(run=run_tracking)


def import_seconds() -> float:
    """Seconds a fresh interpreter takes to import torch's SummaryWriter once torch is loaded."""
    code = ("import time, torch; t = time.perf_counter(); "
            "from torch.utils.tensorboard import SummaryWriter; print(time.perf_counter() - t)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run_tracking(args: argparse.Namespace) -> dict[str, float]:
    from rlmpc.run.runlog import RunLogger, WandbConfig

    if not 1 <= args.rows <= 100_000 or not 1 <= args.figures <= 10_000:
        raise SystemExit(
            "rlmpc.bench tracking: --rows must be in 1..100000 and --figures in 1..10000"
        )
    rng = np.random.default_rng(0)
    names = [f"group{i % 7}/figure{i}" for i in range(args.figures)]
    seconds = {False: 0.0, True: 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        loggers = {
            tb: RunLogger(
                f"{tmp}/{'tb' if tb else 'plain'}",
                {},
                WandbConfig("disabled"),
                total_steps=2048 * args.rows,
                run_name="bench",
                progress=False,
                tensorboard=tb,
            )
            for tb in (False, True)
        }
        for i in range(1, args.rows + 1):
            row = {
                "env_steps": 2048 * i,
                "iteration": i,
                **dict(zip(names, rng.random(args.figures), strict=True)),
            }
            for tb, logger in loggers.items():
                start = time.perf_counter()
                logger.log(row)
                seconds[tb] += time.perf_counter() - start
        for tb, logger in loggers.items():  # the writer's thread flushes what is left here
            start = time.perf_counter()
            logger.close()
            seconds[tb] += time.perf_counter() - start
    plain_ms, tb_ms = (1e3 * seconds[tb] / args.rows for tb in (False, True))
    return {
        "plain_row_ms": plain_ms,
        "tensorboard_row_ms": tb_ms,
        "tensorboard_ratio": tb_ms / plain_ms,
        "tensorboard_import_s": import_seconds(),
    }
