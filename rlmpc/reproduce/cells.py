"""One cell of a sweep: (experiment, env, method, seed) run to its result JSON.

`plan` expands experiments × envs × methods × seeds into `Cell`s, checking every PPO-MPPI
cell's options with ``launch.py``'s own parser first (bad input is refused before Ray
starts). `run_cell` runs one — inside a Ray Tune trial or not — and writes
``results/<experiment>/<env>/<method>/seed<k>.json``: the resolved config, the git commit and
machine, the final evaluation (the project's evaluator, mean and std per column), the
learning curve, the wall time and the machine's load meanwhile (`rlmpc.reproduce.load`: the
other processes' cores, over all the cell's parts). A cell whose JSON exists is finished; a cell killed
midway continues from its work directory (``runs/reproduce/...``: the run's checkpoints, the
RLlib algorithm's, or the SB3 model's with its replay buffer).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import envs
from rlmpc.reproduce.catalog import EXPERIMENTS, KINDS, Preset
from rlmpc.reproduce.load import MachineLoad
from rlmpc.run.runlog import run_meta


@dataclass(frozen=True)
class Cell:
    experiment: str
    env: str
    method: str
    seed: int
    kind: str
    env_steps: int
    eval_episodes: int
    args: tuple[str, ...] = ()
    """``launch.py`` options (PPO-MPPI cells)"""
    overrides: dict[str, Any] = field(default_factory=dict)
    """baseline cells: RLlib config overrides, or SB3 hyperparameter overrides"""
    bundles: tuple[dict[str, float], ...] = ({"CPU": 1.0},)
    """the trial's placement group: the trial itself first, then its learner and actors"""
    serial: bool = False
    """a PPO-MPPI cell's components in the trial's process (``launch.py --serial``)"""
    planner: dict[str, Any] = field(default_factory=dict)
    """planner options of an MPPI-alone cell"""
    checkpoint_steps: int | None = None
    """env steps between an SB3 cell's checkpoints (None: `rlmpc.baselines.sb3`'s default)"""

    @property
    def budget(self) -> dict[str, int]:
        return {"env_steps": self.env_steps, "eval_episodes": self.eval_episodes}

    @property
    def key(self) -> str:
        return f"{self.experiment}/{self.env}/{self.method}/seed{self.seed}"

    def result_path(self, results: Path) -> Path:
        return results / self.experiment / self.env / self.method / f"seed{self.seed}.json"

    def workdir(self, runs: Path) -> Path:
        return runs / self.experiment / self.env / self.method / f"seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Cell:
        return Cell(**{**d, "args": tuple(d["args"]), "bundles": tuple(d["bundles"])})


def _launch_argv(cell_args: list[str], env: str, seed: int, steps: int, episodes: int,
                 run_dir: Path, group: str, method: str, wandb_mode: str) -> list[str]:  # fmt: skip
    return [
        "--env", env, "--seed", str(seed), "--total-env-steps", str(steps),
        "--final-eval-episodes", str(episodes), "--eval-every", "0", "--no-progress",
        "--runs-dir", str(run_dir.parent), "--run-name", run_dir.name,
        "--wandb-group", group, "--wandb-method", method, "--wandb-mode", wandb_mode, *cell_args,
    ]  # fmt: skip


def parse_env_steps(values: list[str] | None) -> dict[str, int] | None:
    """``--env-steps`` as ``{kind or "*": steps}``: ``N`` sets every method kind, ``KIND=N``
    one kind (it wins over a plain ``N``). Raises ValueError naming the option."""
    if not values:
        return None
    out: dict[str, int] = {}
    for v in values:
        kind, _, n = v.rpartition("=")
        kind = kind or "*"
        if kind != "*" and kind not in KINDS:
            raise ValueError(f"--env-steps: unknown method kind {kind!r} in {v!r}; choose from "
                             f"{list(KINDS)}")  # fmt: skip
        try:
            steps = int(n)
        except ValueError:
            raise ValueError(f"--env-steps: {v!r} is not N or KIND=N") from None
        if steps < 1:
            raise ValueError(f"--env-steps: must be >= 1, got {v!r}")
        if kind in out:
            raise ValueError(f"--env-steps: {kind if kind != '*' else 'N'} given twice")
        out[kind] = steps
    return out


def plan(experiments: list[str], envs_: list[str] | None, seeds: list[int], preset: Preset,
         env_steps: int | dict[str, int] | None = None, eval_episodes: int | None = None,
         methods: list[str] | None = None, serial: bool | None = None) -> list[Cell]:  # fmt: skip
    """The cells of ``experiments`` (each on its envs ∩ ``envs_``), validated. ``methods``
    keeps only the methods named; ``env_steps`` (N, or ``{kind or "*": N}`` as
    `parse_env_steps` gives) replaces the preset's budgets; ``serial`` (default: the
    preset's) runs PPO-MPPI cells without Ray actors. Raises ValueError naming the bad option."""
    serial = preset.serial if serial is None else serial
    from rlmpc.run.cli import parse

    unknown = [e for e in experiments if e not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"EXPERIMENT: unknown {unknown}; choose from {sorted(EXPERIMENTS)}")
    if envs_ is not None:
        bad = [e for e in envs_ if e not in envs.names()]
        if bad:
            raise ValueError(f"--envs: unknown {bad}; choose from {envs.names()}")
    if not seeds or any(s < 0 for s in seeds):
        raise ValueError(f"--seeds: non-negative integers, got {seeds}")
    if isinstance(env_steps, int):
        env_steps = {"*": env_steps}
    if env_steps is not None and min(env_steps.values()) < 1:
        raise ValueError(f"--env-steps: must be >= 1, got {env_steps}")
    if eval_episodes is not None and not 1 <= eval_episodes <= 1000:
        raise ValueError(f"--eval-episodes: must be in [1, 1000], got {eval_episodes}")
    known = {m.name for e in experiments for m in EXPERIMENTS[e].methods}
    if methods is not None and set(methods) - known:
        raise ValueError(f"--methods: {sorted(set(methods) - known)} not in the experiments' "
                         f"methods {sorted(known)}")  # fmt: skip
    episodes = eval_episodes or preset.eval_episodes
    cells = []
    for name in experiments:
        exp = EXPERIMENTS[name]
        for env in [e for e in exp.envs if envs_ is None or e in envs_]:
            for m in exp.methods:
                if methods is not None and m.name not in methods:
                    continue
                owner = exp.owner(m.name)  # Table 2's ρ = 0.3 is Table 1's cell
                steps = (env_steps or {}).get(
                    m.kind, (env_steps or {}).get("*", preset.env_steps[m.kind])
                )
                for seed in seeds:
                    cell = Cell(owner, env, m.name, seed, m.kind, steps if m.kind != "mppi" else 0,
                                episodes,
                                (*preset.ppo_mppi_args, *m.argv(env)) if m.kind == "ppo-mppi" else (),
                                preset.overrides(m.kind),
                                serial=serial and m.kind == "ppo-mppi",
                                planner=dict(preset.mppi_options) if m.kind == "mppi" else {},
                                checkpoint_steps=preset.sb3_checkpoint_steps
                                if m.kind.startswith("sb3-") else None)  # fmt: skip
                    if m.kind == "ppo-mppi" and not serial:
                        argv = _launch_argv(list(cell.args), env, seed, max(steps, 1), episodes,
                                            Path("runs/x/y"), owner, m.name, "disabled")  # fmt: skip
                        try:
                            cfg = parse(argv).cfg
                        except SystemExit as err:
                            raise ValueError(f"{cell.key}: launch.py refused {argv}") from err
                        run = cfg.run
                        actor = {"CPU": float(run.actor_cpus), **(run.actor_resource_dict or {})}
                        bundles = ({"CPU": 1.0}, {"CPU": 1.0}) + (actor,) * run.num_actors
                        evaluator = envs.spec(env).resources(1)  # a CARLA server, say
                        if evaluator:
                            bundles += ({"CPU": 0.0, **evaluator},)
                        cell = Cell(**{**cell.to_dict(), "bundles": bundles})
                    elif m.kind.startswith("sb3-"):  # the hyperparameters, before Ray
                        from rlmpc.baselines.sb3 import params

                        try:
                            params(m.kind.removeprefix("sb3-"), cell.overrides)
                        except ValueError as err:
                            raise ValueError(f"{cell.key}: {err}") from err
                    elif m.kind == "ppo-mppi":  # validated all the same
                        argv = _launch_argv(list(cell.args), env, seed, max(steps, 1), episodes,
                                            Path("runs/x/y"), owner, m.name, "disabled")  # fmt: skip
                        try:
                            parse(argv)
                        except SystemExit as err:
                            raise ValueError(f"{cell.key}: launch.py refused {argv}") from err
                    if cell.key not in {c.key for c in cells}:
                        cells.append(cell)
    if not cells:
        raise ValueError(f"no cells: {experiments} on --envs {envs_} with --methods {methods} "
                         f"select nothing (each experiment's envs: "
                         f"{ {e: EXPERIMENTS[e].envs for e in experiments} })")  # fmt: skip
    return cells


def recorded_budget(record: dict[str, Any]) -> dict[str, int]:
    """The env steps and evaluation episodes a finished cell was run with (cells recorded
    before budgets were: from the run's config)."""
    if "budget" in record:
        return record["budget"]
    steps = record.get("config", {}).get("run", {}).get("total_env_steps")
    if steps is None:
        steps = record["eval"].get("env_steps", 0)
    return {"env_steps": int(steps), "eval_episodes": int(record["eval"]["episodes"])}


def finished(cells: list[Cell], results: Path) -> list[Cell]:
    """The cells whose JSON exists. Raises ValueError (before anything starts) when one was
    run with another budget than the sweep asks for: a table must not mix budgets."""
    done, clash = [], []
    for c in cells:
        path = c.result_path(results)
        if not path.is_file():
            continue
        had = recorded_budget(json.loads(path.read_text()))
        if had != c.budget:
            clash.append(f"{path} was run with {had['env_steps']:,} env steps and "
                         f"{had['eval_episodes']} evaluation episodes")  # fmt: skip
        done.append(c)
    if clash:
        asked = f"{cells[0].eval_episodes} evaluation episodes"
        raise ValueError(
            "finished cells with another budget than this sweep's (--env-steps, "
            f"--eval-episodes: {asked}; env steps per cell as --dry-run lists): "
            + "; ".join(clash)
            + ". Give the same budget, or move those cells away"
        )
    return done


def write_record(path: Path, record: dict[str, Any]) -> Path:
    """Atomically: a half-written cell must never look finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    return path


def run_cell(cell: Cell, results: Path, runs: Path, wandb_mode: str = "auto",
             trial: str | None = None,
             on_row: Callable[[dict[str, Any]], None] | None = None) -> Path:  # fmt: skip
    """Run ``cell`` (continuing its work directory if a previous attempt was killed) and write
    its result JSON, naming the Tune ``trial`` that ran it; returns the JSON's path.
    ``on_row`` gets each row of its learning curve as it is made (a PPO-MPPI run's
    ``metrics.jsonl`` rows, a baseline's curve rows; MPPI alone has none)."""
    out = cell.result_path(results)
    if out.is_file():
        return out
    work = cell.workdir(runs)
    argv = [cell.experiment, "--envs", cell.env, "--methods", cell.method,
            "--seeds", str(cell.seed)]  # fmt: skip
    with MachineLoad(work) as load:  # what the wall time was measured beside (Table 7)
        return _run_cell(cell, results, work, argv, wandb_mode, trial, on_row, load)


def _run_cell(cell: Cell, results: Path, work: Path, argv: list[str], wandb_mode: str,
              trial: str | None, on_row: Callable[[dict[str, Any]], None] | None,
              load: MachineLoad) -> Path:  # fmt: skip
    if cell.kind == "ppo-mppi":
        return _run_ppo_mppi(cell, results, work, wandb_mode, trial, on_row, load)
    out = cell.result_path(results)
    started = time.perf_counter()
    import torch

    torch.set_num_threads(1)  # the trial's one CPU (as the actors and the learner have)
    if cell.kind == "mppi":
        from rlmpc.baselines.mppi import run_pure_mppi_cell

        record = run_pure_mppi_cell(cell.env, cell.seed, episodes=cell.eval_episodes,
                                    **cell.planner)  # fmt: skip
    elif cell.kind.startswith("sb3-"):
        from rlmpc.baselines.sb3 import CHECKPOINT_STEPS, train_sb3

        algo = cell.kind.removeprefix("sb3-")
        record = train_sb3(algo, cell.env, cell.seed, cell.env_steps, work,
                           eval_episodes=cell.eval_episodes, overrides=cell.overrides,
                           checkpoint_steps=cell.checkpoint_steps or CHECKPOINT_STEPS,
                           log=on_row)  # fmt: skip
    else:
        from rlmpc.baselines.rllib import train_rllib

        algo = cell.kind.removeprefix("rllib-")
        record = train_rllib(algo, cell.env, cell.seed, cell.env_steps, work,
                             eval_episodes=cell.eval_episodes, overrides=cell.overrides,
                             log=on_row)  # fmt: skip
    record.setdefault("wall_time_s", time.perf_counter() - started)
    meta = run_meta(argv, "-m rlmpc.reproduce")
    return write_record(out, {"experiment": cell.experiment, "env": cell.env, "method": cell.method,
                        "task_version": envs.spec(cell.env).version,
                        "seed": cell.seed, "kind": cell.kind, "tune_trial": trial,
                        "budget": cell.budget, **meta, **record,
                        "machine_load": load.summary()})  # fmt: skip


def _run_ppo_mppi(cell: Cell, results: Path, work: Path, wandb_mode: str, trial: str | None,
                  on_row: Callable[[dict[str, Any]], None] | None,
                  load: MachineLoad) -> Path:  # fmt: skip
    from rlmpc.reproduce.results import add
    from rlmpc.run.cli import parse
    from rlmpc.run.train import train
    from rlmpc.system.checkpoint import latest_checkpoint

    if (work / "eval.json").is_file():  # trained and evaluated; only the record is missing
        run_dir = work
    else:
        if latest_checkpoint(work) is not None:
            argv = ["--resume", str(work), "--no-progress"]
        else:
            argv = _launch_argv(list(cell.args), cell.env, cell.seed, cell.env_steps,
                                cell.eval_episodes, work, cell.experiment, cell.method,
                                wandb_mode)  # fmt: skip
        inv = parse(argv)
        run_dir = train(inv.cfg, resume=inv.resume, argv=argv, serial=cell.serial,
                        on_row=on_row)  # fmt: skip
    path = add(run_dir, cell.experiment, cell.method, results)
    record = portable(json.loads(path.read_text()), work.parents[3])
    record["kind"], record["tune_trial"], record["budget"] = cell.kind, trial, cell.budget
    record["machine_load"] = load.summary()
    return write_record(path, record)


def portable(record: Any, runs: Path) -> Any:
    """``record`` with the sweep's ``--runs`` folder spelled ``RUNS`` in every string (the
    commands, the resolved config's ``runs_dir``) when it was given as an absolute path: a
    committed cell names no folder of the machine it ran on."""
    if not runs.is_absolute():
        return record
    if isinstance(record, str):
        return record.replace(str(runs), "RUNS")
    if isinstance(record, dict):
        return {k: portable(v, runs) for k, v in record.items()}
    if isinstance(record, list):
        return [portable(v, runs) for v in record]
    return record
