"""Reproduce the paper: ``python -m rlmpc.reproduce EXPERIMENT... [--envs] [--seeds] [--env-steps]``.

Runs the chosen experiments' unfinished cells as Ray Tune trials (`rlmpc.reproduce.sweep`),
then rebuilds their tables and figures from ``results/`` (`rlmpc.reproduce.report`) and, for
the repository's own ``results/``, docs/results.md's tables. Re-running the same command after
a kill continues: finished cells are skipped, a cell killed midway resumes from its work
directory. ``--from-results`` only rebuilds tables and figures. ``--dry-run`` lists the cells.
``--grid FILE.yaml`` adds an experiment of the user's own over ``launch.py`` options
(`rlmpc.reproduce.grid`); ``--scheduler asha`` lets Tune stop the trials that fall behind
(every trial reports each learner iteration).

Examples::

    python -m rlmpc.reproduce table1 table2 --envs acrobot lunarlander --seeds 1 2 3
    python -m rlmpc.reproduce --preset smoke            # every method on Acrobot, tiny budgets
    python -m rlmpc.reproduce table1 --from-results     # tables and curves from the JSON alone
    python -m rlmpc.reproduce --grid my_grid.yaml --scheduler asha
    ray submit cluster/cluster.yaml launch.py -- ...    # see docs/operations.md: the same, on a cluster
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.checks import SEED_MAX, int_in, prog_name, ray_address_problem, seed_arg, writable_dir
from rlmpc.reproduce.catalog import EXPERIMENTS, KINDS, PRESETS
from rlmpc.reproduce.results import RESULTS
from rlmpc.run.runlog import wandb_credentials


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name("python -m rlmpc.reproduce"),
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("experiments", nargs="*", metavar="EXPERIMENT",
                   help=f"any of {', '.join(EXPERIMENTS)} (default: the preset's)")  # fmt: skip
    p.add_argument("--experiments", dest="experiments_opt", nargs="+", default=None,
                   help=argparse.SUPPRESS)  # fmt: skip
    p.add_argument("--preset", default="paper", choices=sorted(PRESETS),
                   help="budgets: 'paper' (1M env steps, 50 evaluation episodes) or 'smoke' "
                        "(every method on Acrobot in a few minutes)")  # fmt: skip
    p.add_argument(
        "--envs", nargs="+", default=None, help="envs to run (default: each experiment's)"
    )
    p.add_argument("--seeds", nargs="+", type=seed_arg, default=None,
                   help=f"seeds, 0..{SEED_MAX} (default: the preset's)")  # fmt: skip
    p.add_argument("--methods", nargs="+", default=None, help="only these methods")
    p.add_argument("--env-steps", nargs="+", default=None, metavar="[KIND=]N",
                   help="env steps per cell: N for every kind, or KIND=N for one method kind "
                        f"({', '.join(KINDS)}; the others keep the preset's), e.g. "
                        "'rllib-sac=100000' (default: the preset's, per method kind)")  # fmt: skip
    p.add_argument("--eval-episodes", type=int_in(1, 10_000), default=None,
                   help="final evaluation episodes, 1..10000")  # fmt: skip
    p.add_argument(
        "--results",
        type=Path,
        default=None,
        help="where cells and tables go (default: ./results in the working directory; smoke: "
        "runs/smoke/results)",
    )
    p.add_argument(
        "--runs",
        type=Path,
        default=None,
        help="work directories of the cells (default: runs/reproduce; smoke: runs/smoke)",
    )
    p.add_argument("--serial", action=argparse.BooleanOptionalAction, default=None,
                   help="run each PPO-MPPI cell's components in its trial's process, without "
                        "Ray actors (default: the preset's; smoke: on)")  # fmt: skip
    p.add_argument(
        "--ray-address", default=None, help="join this Ray cluster ('auto' on a head node)"
    )
    p.add_argument(
        "--max-concurrent",
        type=int_in(1),
        default=None,
        help="at most this many trials at once, >= 1 (default: as many as the resources fit)",
    )
    p.add_argument("--grid", type=Path, default=None, metavar="FILE.yaml",
                   help="an experiment of your own: methods (launch.py options) on envs and "
                        "seeds, run and tabulated as the catalog's (rlmpc/reproduce/grid.py)")  # fmt: skip
    p.add_argument("--scheduler", default="fifo", choices=["fifo", "asha"],
                   help="fifo: every trial to its budget; asha: Tune's ASHA stops the trials "
                        "whose --metric falls behind at each rung (their cells are not written)")  # fmt: skip
    p.add_argument("--metric", default="episode_return",
                   help="the reported row's figure ASHA compares (episode_return, "
                        "success_rate, or any key of metrics.jsonl)")  # fmt: skip
    p.add_argument("--mode", default="max", choices=["max", "min"], help="ASHA: better is max|min")
    p.add_argument("--grace-steps", type=int_in(1), default=None,
                   help="ASHA: env steps before a trial is first judged (default: a tenth of "
                        "the smallest budget)")  # fmt: skip
    p.add_argument("--reduction-factor", type=float, default=3.0,
                   help="ASHA: rungs this many times apart; the best 1/this go on, > 1")  # fmt: skip
    p.add_argument(
        "--wandb-mode", default="auto", choices=["auto", "online", "offline", "disabled"],
        help="auto: online when wandb has credentials (WANDB_API_KEY or `wandb login`), else "
        "offline files",
    )  # fmt: skip
    p.add_argument("--wandb-project", default="rlmpc")
    p.add_argument("--from-results", action="store_true", help="only rebuild tables and figures")
    p.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    grid = None
    if args.grid is not None:
        from rlmpc.reproduce.catalog import register_experiment
        from rlmpc.reproduce.grid import GridError, load_grid

        try:
            grid = load_grid(args.grid)
        except GridError as err:
            parser.error(str(err))
        register_experiment(grid.experiment)
    experiments = (args.experiments or []) + (args.experiments_opt or [])
    if grid is None:
        experiments = experiments or list(preset.experiments) or ["table1", "table2"]
    smoke = args.preset == "smoke"
    # ./results of the working directory (in a checkout: the repository's own)
    results = (args.results or Path("runs/smoke/results" if smoke else "results")).resolve()
    runs = (args.runs or Path("runs/smoke" if smoke else "runs/reproduce")).resolve()
    if args.ray_address is not None and (problem := ray_address_problem(args.ray_address)):
        parser.error(f"argument --ray-address: {problem}")
    from rlmpc.reproduce.cells import parse_env_steps, plan
    from rlmpc.reproduce.report import write_reports

    try:
        env_steps = parse_env_steps(args.env_steps)
        cells = []
        if experiments:
            cells = plan(experiments, args.envs or (list(preset.envs) if preset.envs else None),
                         args.seeds or list(preset.seeds), preset, env_steps,
                         args.eval_episodes, args.methods, args.serial)  # fmt: skip
        if grid is not None:  # its own envs, seeds and budgets, unless the options say others
            steps = env_steps or ({"ppo-mppi": grid.env_steps} if grid.env_steps else None)
            cells += plan([grid.experiment.name], args.envs,
                          args.seeds or list(grid.seeds or preset.seeds), preset, steps,
                          args.eval_episodes or grid.eval_episodes, args.methods, args.serial)  # fmt: skip
            experiments.append(grid.experiment.name)
        scheduler = None
        if args.scheduler == "asha" and not args.from_results:  # checked in a dry run too
            from rlmpc.reproduce.sweep import asha

            scheduler = asha(cells, args.metric, args.mode, args.grace_steps,
                             args.reduction_factor)  # fmt: skip
    except ValueError as err:
        parser.error(str(err))
    if args.dry_run:
        for c in cells:
            print(f"{c.key}: {c.kind}{' (serial)' if c.serial else ''}, {c.env_steps:,} env steps, {c.eval_episodes} evaluation "
                  f"episodes, bundles {list(c.bundles)} {' '.join(c.args)}")  # fmt: skip
        return 0
    if args.wandb_mode == "online" and not wandb_credentials():
        parser.error("argument --wandb-mode: 'online' needs W&B credentials: WANDB_API_KEY or "
                     "`wandb login` (or use offline)")  # fmt: skip
    for option, path in (("--results", results), ("--runs", runs)):
        if option == "--runs" and args.from_results:
            continue
        if problem := writable_dir(path):
            parser.error(f"argument {option}: {problem}")
    failed = []
    if not args.from_results:
        from rlmpc.reproduce.sweep import run_sweep

        try:
            status = run_sweep(cells, results, runs, args.ray_address, args.max_concurrent,
                               args.wandb_mode, args.wandb_project, scheduler=scheduler)  # fmt: skip
        except ValueError as err:  # raised before Ray starts
            parser.error(str(err))
        failed = [f"{k}: {v}" for k, v in status.items() if v.startswith("failed")]
        done = sum(v == "done" for v in status.values())
        stopped = sum(v.startswith("stopped") for v in status.values())
        print(f"{done} cells run, {sum(v == 'skipped' for v in status.values())} already "
              f"finished, {stopped} stopped early by the scheduler, {len(failed)} failed",
              flush=True)  # fmt: skip
    named = [e for e in experiments if grid is None or e != grid.experiment.name]
    if grid is not None:
        named += ["--grid", str(args.grid)]
    command = f"python -m rlmpc.reproduce {' '.join(named)} --from-results"
    for path in write_reports(experiments, results, command):
        print(f"wrote {path}")
    if results == RESULTS.resolve():
        from rlmpc.reproduce.results import refresh_documents

        changed = refresh_documents()
        print(f"regenerated the result tables of {len(changed)} documents from {results}")
    for line in failed:
        print(f"FAILED {line}", file=sys.stderr)
    return 1 if failed else 0


def cli() -> None:
    """The ``rlmpc-reproduce`` console command."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
