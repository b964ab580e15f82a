"""A sweep on Ray Tune: each unfinished cell is a trial with its own placement group.

A PPO-MPPI trial reserves, together, a bundle for itself (the coordinator), one for its
learner and one per rollout actor (with the actors' custom resources, e.g. a CARLA server):
the components it starts land in its group (`rlmpc.system.ray_backend` schedules into the
current placement group), so trials pack onto a cluster without starving one another. A
baseline trial (RLlib, SB3, MPPI alone) is one bundle. As many trials run at once as their
groups fit: on an embedded Ray (as many CPUs as the machine has, at least one trial's
worth) a 2-core machine runs a PPO-MPPI trial at a time, or two one-bundle trials; on a
cluster (``--ray-address auto``, as ``ray submit`` runs it) as many as the cluster holds.

Finished cells (their JSON exists) are skipped before Tune starts, so a killed sweep,
re-run with the same command, only runs what is left; a trial that fails is retried once
(it continues from its work directory), and a cell that fails twice is reported, not
fatal to the others.

A trial reports to Tune as it learns: each row of its learning curve (a PPO-MPPI run's
``metrics.jsonl`` row, numbers only; a baseline's curve row) once the next one is made, and
the last row with the final evaluation (``final/*``) and the cell's record. So a Tune
scheduler (``scheduler``: ASHA, `asha`) can stop a trial early, yet never between its last
training row and its final evaluation; a stopped trial writes no cell. The cell's JSON is
the same either way.

W&B: PPO-MPPI trials log their own runs (group = the experiment; method, env and seed in
the config, with the evaluation media); the other trials go through Tune's
``WandbLoggerCallback`` with the same project and group. Online when wandb has credentials
(`rlmpc.run.runlog.wandb_credentials`), else offline files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import envs
from rlmpc.reproduce.cells import Cell, finished, run_cell, write_record
from rlmpc.run.runlog import resolved_wandb_mode

#: what Tune writes into every result itself: never reported from a row
_TUNE_KEYS = frozenset({"done", "config", "training_iteration", "time_total_s", "timestamp",
                        "time_this_iter_s", "pid", "hostname", "node_ip", "date", "trial_id",
                        "experiment_id", "timesteps_total", "episodes_total"})  # fmt: skip


def reportable(row: dict[str, Any]) -> dict[str, float]:
    """A curve row's numbers (None, flags and text left out) under names Tune leaves alone."""
    return {k: v for k, v in row.items() if isinstance(v, int | float)
            and not isinstance(v, bool) and k not in _TUNE_KEYS}  # fmt: skip


def _trial(config: dict[str, Any], specs: tuple[envs.EnvSpec, ...] = ()) -> None:
    """Tune's trainable: run one cell, reporting its rows as they come (module docstring)
    and its final evaluation. ``specs``: the envs of the sweep, registered in this process
    (an env a test or a user module registers is not known to a fresh worker process)."""
    from ray import tune

    for spec in specs:
        envs.registry.ensure(spec)
    cell = Cell.from_dict(config["cell"])
    paths = config["paths"]
    trial = tune.get_context().get_trial_name()
    held: dict[str, float] = {}  # the newest row, reported when the next one comes

    def report(row: dict[str, Any]) -> None:
        nonlocal held
        if held:
            tune.report(held)
        held = reportable(row)

    out = run_cell(cell, Path(paths["results"]), Path(paths["runs"]), paths["wandb_mode"], trial,
                   on_row=report)  # fmt: skip
    record = out.read_text()
    ev = json.loads(record)["eval"]
    # the record travels back too: on a cluster the driver writes it where the tables are built
    tune.report(held | {f"final/{k}": v["mean"] for k, v in ev.items() if isinstance(v, dict)} |
                {"result": str(out), "record_json": record})  # fmt: skip


def asha(
    cells: list[Cell],
    metric: str = "episode_return",
    mode: str = "max",
    grace_steps: int | None = None,
    reduction_factor: float = 3.0,
) -> Any:
    """Tune's ASHA over the cells' trials, on their reported rows' ``env_steps``: a trial is
    first judged at ``grace_steps`` env steps (default a tenth of the smallest budget), then at
    ``reduction_factor`` times as many..., and stopped when its ``metric`` is below the best
    1/``reduction_factor`` of those judged there before it (``mode`` max; min: above). A
    trial that passed every rung trains to its budget (no rung at or past the largest)."""
    from ray.tune.schedulers import ASHAScheduler

    budgets = [c.env_steps for c in cells if c.env_steps > 0]
    if not budgets:
        raise ValueError("--scheduler asha: no cell trains (MPPI alone reports no rows)")
    grace = grace_steps if grace_steps is not None else max(1, min(budgets) // 10)
    if not 1 <= grace < max(budgets):
        raise ValueError(f"--grace-steps must be in [1, {max(budgets)}) (the largest budget), "
                         f"got {grace}")  # fmt: skip
    if not 1 < reduction_factor < math.inf:
        raise ValueError(f"--reduction-factor must be a finite number > 1, got {reduction_factor}")
    return ASHAScheduler(time_attr="env_steps", metric=metric, mode=mode, grace_period=grace,
                         max_t=max(budgets), reduction_factor=reduction_factor,
                         stop_last_trials=False)  # fmt: skip


def _resources(config: dict[str, Any]) -> Any:
    from ray.tune import PlacementGroupFactory

    return PlacementGroupFactory([dict(b) for b in config["cell"]["bundles"]], strategy="PACK")


def _wandb_callback(project: str, mode: str, directory: Path) -> Any:
    """Tune's W&B logger for the trials that do not log themselves."""
    from ray.air.integrations.wandb import WandbLoggerCallback

    class BaselineWandb(WandbLoggerCallback):
        @staticmethod
        def _own(trial: Any) -> bool:  # a PPO-MPPI run logs itself (RunLogger)
            return trial.config["cell"]["kind"] == "ppo-mppi"

        def log_trial_start(self, trial: Any) -> None:
            if not self._own(trial):
                self.group = trial.config["cell"]["experiment"]
                super().log_trial_start(trial)

        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            if not self._own(trial):
                super().log_trial_result(iteration, trial, result)

        def log_trial_end(self, trial: Any, failed: bool = False) -> None:
            if not self._own(trial):
                super().log_trial_end(trial, failed)

    directory.mkdir(parents=True, exist_ok=True)
    return BaselineWandb(project=project, dir=str(directory), mode=mode)


def run_sweep(cells: list[Cell], results: Path, runs: Path, ray_address: str | None = None,
              max_concurrent: int | None = None, wandb_mode: str = "auto",
              wandb_project: str = "rlmpc", name: str = "reproduce",
              scheduler: Any = None) -> dict[str, str]:  # fmt: skip
    """Run the unfinished ``cells`` as Tune trials under ``scheduler`` (a Tune scheduler,
    e.g. `asha`; None: every trial to its end); ``{cell key: 'done' | 'skipped' | 'stopped:
    where' | 'failed: why'}``."""
    import ray
    from ray import tune

    results, runs = results.resolve(), runs.resolve()
    status = {c.key: "skipped" for c in finished(cells, results)}
    todo = [c for c in cells if c.key not in status]
    for key in status:
        print(f"skip {key}: finished ({results / key}.json)", flush=True)
    if not todo:
        return status
    mode = resolved_wandb_mode(wandb_mode)
    if mode in ("offline", "disabled"):  # before Ray starts: its workers inherit it
        os.environ["WANDB_MODE"] = mode
    if not ray.is_initialized():
        address = ray_address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address)
        else:
            need = max(sum(b.get("CPU", 0) for b in c.bundles) for c in todo)
            # address="local": a fresh embedded Ray even when another one (a training run, a
            # second sweep) lives on this machine; without it ray.init joins that one and
            # refuses num_cpus
            ray.init(address="local", num_cpus=max(os.cpu_count() or 1, math.ceil(need)),
                     include_dashboard=False, logging_level=logging.WARNING,
                     object_store_memory=512 * 1024**2)  # fmt: skip
    specs = tuple(envs.spec(e) for e in sorted({c.env for c in todo}))
    trainable = tune.with_resources(tune.with_parameters(_trial, specs=specs), _resources)
    callbacks = []
    if mode != "disabled" and any(c.kind != "ppo-mppi" for c in todo):
        callbacks.append(_wandb_callback(wandb_project, mode, runs / "wandb"))
    space = {
        "cell": tune.grid_search([c.to_dict() for c in todo]),
        "paths": {"results": str(results), "runs": str(runs), "wandb_mode": mode},
    }
    tuner = tune.Tuner(
        trainable, param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent or 0,
                                    scheduler=scheduler),
        run_config=tune.RunConfig(
            name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str(runs / "tune"),
            failure_config=tune.FailureConfig(max_failures=1), callbacks=callbacks, verbose=1,
        ),
    )  # fmt: skip
    grid = tuner.fit()
    for r in grid:
        cell = Cell.from_dict(r.config["cell"])
        record = (r.metrics or {}).get("record_json")
        if r.error is not None:
            status[cell.key] = f"failed: {type(r.error).__name__}: {r.error}"
        elif record is None:  # the scheduler stopped it
            steps = (r.metrics or {}).get("env_steps")
            status[cell.key] = f"stopped: by the scheduler at {steps} env steps"
        else:
            status[cell.key] = "done"
        if r.error is None and record and not cell.result_path(results).is_file():
            write_record(cell.result_path(results), json.loads(record))  # run on another node
    return status
