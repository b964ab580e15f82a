"""A valid `TrainConfig` checked against this machine and its env, and resolved into the specs
its components are built from, once, before Ray starts (`resolve`): the run directory,
devices and GPU counts, the env's packages, the planner's cost on the env's model; then
`RunSpecs` (one probe of the env for its sizes), which the run hands down."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NamedTuple

import torch

import envs
from common.checks import ConfigError, writable_dir
from rlmpc.run.config import TrainConfig, probe_model
from rlmpc.system.checkpoint import latest_checkpoint
from rlmpc.system.coordinator import Schedule
from rlmpc.system.learner import resolve_device
from rlmpc.system.shells import LearnerSpec
from rlmpc.system.worker import WorkerSpec


def run_dir_of(cfg: TrainConfig, resume: Path | None = None) -> Path:
    """The directory the run writes: ``resume``, or ``runs_dir/run_name`` (default name
    ``<env>-<time>``)."""
    if resume is not None:
        return resume
    name = cfg.run.run_name or time.strftime(f"{cfg.run.env}-%Y%m%d-%H%M%S")
    return Path(cfg.run.runs_dir) / name


def check_run_dir(cfg: TrainConfig, resume: Path | None = None) -> None:
    """The run directory can be written, before anything starts: for a new run ``runs_dir``
    is created (or found writable) and ``run_name`` holds no run yet; a resumed run's
    directory holds a checkpoint and is writable (`ConfigError`: ``run.runs_dir``,
    ``run.run_name`` or ``resume``)."""
    if resume is not None:
        if latest_checkpoint(resume) is None:
            raise ConfigError("resume", f"no checkpoint in {resume / 'checkpoints'}")
        problem = writable_dir(resume)
        if problem:
            raise ConfigError("resume", f"the run directory: {problem}")
        return
    problem = writable_dir(cfg.run.runs_dir)
    if problem:
        raise ConfigError("run.runs_dir", f"runs_dir: {problem}")
    path = run_dir_of(cfg)
    if path.exists() and latest_checkpoint(path) is not None:
        raise ConfigError(
            "run.run_name",
            f"run directory {path} already holds a run; use --resume {path} or another --run-name",
        )


class RunSpecs(NamedTuple):
    """A run's config resolved into what its components are built from (`run_specs`)."""

    worker: WorkerSpec
    eval_worker: WorkerSpec
    final_eval_worker: WorkerSpec
    learner: LearnerSpec
    schedule: Schedule


def run_specs(cfg: TrainConfig, model: Any | None = None) -> RunSpecs:
    """The specs of ``cfg``'s components; ``model``: the env's planner model if already built
    (`rlmpc.run.config.probe_model`), else it is probed here."""
    model = model if model is not None else probe_model(cfg.run.env)
    run = cfg.run
    return RunSpecs(
        worker=cfg.worker_spec(), eval_worker=cfg.eval_spec(run.eval_episodes),
        final_eval_worker=cfg.eval_spec(run.final_eval_episodes),
        learner=cfg.learner_spec((model.nobs, model.na)), schedule=cfg.schedule,
    )  # fmt: skip


def resolve(cfg: TrainConfig, cluster: bool = False, resume: Path | None = None) -> RunSpecs:
    """Check the config against this machine (`check_runnable`) and resolve it into its
    specs, with one probe of the env for both."""
    model = probe_model(cfg.run.env)
    check_runnable(cfg, cluster, resume, model=model)
    return run_specs(cfg, model)


def check_runnable(
    cfg: TrainConfig, cluster: bool = False, resume: Path | None = None, model: Any | None = None
) -> None:
    """What the config asks of this machine and of the env: the run directory
    (`check_run_dir`), devices, the env's packages, the planner's cost on the env's model
    (`ConfigError` naming the fields).

    On a ``cluster`` (a Ray address given) the actors' GPUs are the cluster's, not this
    machine's: Ray places them. Here, the GPUs the run reserves must fit the ones torch sees
    (else Ray would wait for them forever)."""
    check_run_dir(cfg, resume)
    run = cfg.run
    for name in ("learner_device", "actor_device"):
        device = getattr(run, name)
        if name == "actor_device" and cluster:
            continue
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"run.{name}", f"{device!r} asked for, but torch sees no CUDA device")
    if run.actor_gpus > 0 and not cluster:
        learner_gpu = resolve_device(run.learner_device).startswith("cuda")
        wanted = run.num_actors * run.actor_gpus + learner_gpu
        have = torch.cuda.device_count()
        if wanted > have:
            raise ConfigError(
                ("run.num_actors", "run.actor_gpus"),
                f"num_actors × actor_gpus = {run.num_actors} × {run.actor_gpus:g} GPUs (plus "
                f"one for a cuda learner) = {wanted:g}, but this machine has {have}",
            )
    spec = envs.spec(cfg.run.env)
    missing = spec.missing()
    if missing:
        raise ConfigError(
            "run.env",
            f"{cfg.run.env} needs the Python package(s) {', '.join(missing)}, which this "
            "Python cannot import",
        )
    if cfg.planner.objective == "reward":
        raise ConfigError(
            "planner.objective",
            "objective 'reward' is App. E's pure MPPI (−r̂, no high-level target): the policy "
            "would not reach the planner; run it with `python -m rlmpc.baselines.planner_alone "
            "--objective reward` (or rlmpc.baselines.mppi)",
        )
    model = model if model is not None else probe_model(cfg.run.env)
    try:
        cfg.planner.other_cost(model)  # the cost terms that depend on the env (its track...)
    except ValueError as err:
        fields = tuple(f"planner.{f}" for f in getattr(err, "fields", ()))
        raise ConfigError(fields, str(err)) from err
