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

W&B: PPO-MPPI trials log their own runs (group = the experiment; method, env and seed in
the config, with the evaluation media); the other trials go through Tune's
``WandbLoggerCallback`` with the same project and group. Offline files without a key.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from rlmpc.reproduce.cells import Cell, finished, run_cell, write_record


def _trial(config: dict[str, Any]) -> None:
    """Tune's trainable: run one cell, report its final evaluation."""
    from ray import tune

    cell = Cell.from_dict(config["cell"])
    paths = config["paths"]
    trial = tune.get_context().get_trial_name()
    out = run_cell(cell, Path(paths["results"]), Path(paths["runs"]), paths["wandb_mode"], trial)
    record = out.read_text()
    ev = json.loads(record)["eval"]
    # the record travels back too: on a cluster the driver writes it where the tables are built
    tune.report({f"final/{k}": v["mean"] for k, v in ev.items() if isinstance(v, dict)} |
                {"result": str(out), "record_json": record})  # fmt: skip


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


def resolved_wandb_mode(mode: str) -> str:
    if mode != "auto":
        return mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def run_sweep(cells: list[Cell], results: Path, runs: Path, ray_address: str | None = None,
              max_concurrent: int | None = None, wandb_mode: str = "auto",
              wandb_project: str = "rlmpc", name: str = "reproduce") -> dict[str, str]:  # fmt: skip
    """Run the unfinished ``cells`` as Tune trials; ``{cell key: 'done' | 'skipped' |
    'failed: why'}``."""
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
    trainable = tune.with_resources(_trial, _resources)
    callbacks = []
    if mode != "disabled" and any(c.kind != "ppo-mppi" for c in todo):
        callbacks.append(_wandb_callback(wandb_project, mode, runs / "wandb"))
    space = {
        "cell": tune.grid_search([c.to_dict() for c in todo]),
        "paths": {"results": str(results), "runs": str(runs), "wandb_mode": mode},
    }
    tuner = tune.Tuner(
        trainable, param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent or 0),
        run_config=tune.RunConfig(
            name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str(runs / "tune"),
            failure_config=tune.FailureConfig(max_failures=1), callbacks=callbacks, verbose=1,
        ),
    )  # fmt: skip
    grid = tuner.fit()
    for r in grid:
        cell = Cell.from_dict(r.config["cell"])
        status[cell.key] = (
            "done" if r.error is None else f"failed: {type(r.error).__name__}: {r.error}"
        )
        record = (r.metrics or {}).get("record_json")
        if r.error is None and record and not cell.result_path(results).is_file():
            write_record(cell.result_path(results), json.loads(record))  # run on another node
    return status
