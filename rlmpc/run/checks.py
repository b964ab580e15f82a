"""What a valid `TrainConfig` asks of this machine and of its env, checked before Ray starts:
devices and GPU counts, the env's packages, the planner's cost on the env's model."""

from __future__ import annotations

import torch

import envs
from learners.errors import ConfigError
from rlmpc.run.config import TrainConfig
from rlmpc.system.learner import resolve_device


def check_runnable(cfg: TrainConfig, cluster: bool = False) -> None:
    """What the config asks of this machine and of the env: devices, the env's packages, the
    planner's cost on the env's model (`ConfigError` naming the fields).

    On a ``cluster`` (a Ray address given) the actors' GPUs are the cluster's, not this
    machine's: Ray places them. Here, the GPUs the run reserves must fit the ones torch sees
    (else Ray would wait for them forever)."""
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
            "would not reach the planner; run it with `python -m rlmpc.tools.planner_alone "
            "--objective reward` (or rlmpc.baselines.mppi)",
        )
    model = envs.make(spec.probe or spec.name).unwrapped.planner_model()
    try:
        cfg.planner.other_cost(model)  # the cost terms that depend on the env (its track...)
    except ValueError as err:
        fields = tuple(f"planner.{f}" for f in getattr(err, "fields", ()))
        raise ConfigError(fields, str(err)) from err
