"""The Table 1 baselines PPO and SAC, trained with RLlib (new API stack), evaluated our way.

`train_rllib` trains one baseline on the env's low-level actions (no planner) until
``env_steps`` env steps are sampled, checkpointing to ``workdir``, and evaluates the final
mean policy with `rlmpc.baselines.evaluate_policy` (the project's 50 seeded episodes and
columns). Everything runs in the calling process: ``num_env_runners=0`` and no remote
learner, so it fits a 1-CPU Ray Tune trial; without a running Ray it starts a local one and
shuts it down after.

Hyperparameters: the paper's Tables 3 (PPO) and 4 (SAC) are Stable-Baselines3 defaults
(App. C), so they are mapped in SB3's meaning, as written, for every env (no per-env preset:
the ``"ppo"`` presets of `envs.registry` belong to PPO-MPPI, not to these baselines):

| Table | SB3 | RLlib here |
|---|---|---|
| 3 | learning_rate 3e-4 | ``lr=3e-4`` |
| 3 | n_steps 2048 (1 env) | ``train_batch_size_per_learner=2048`` |
| 3 | batch_size 64, n_epochs 10 | ``minibatch_size=64``, ``num_epochs=10`` |
| 3 | gamma 0.99, gae_lambda 0.95 | ``gamma=0.99``, ``lambda_=0.95`` |
| 3 | clip_range 0.2 | ``clip_param=0.2`` |
| 3 | clip_range_vf None (no value clipping) | ``vf_clip_param=inf`` (RLlib clips the value *loss* at 10 by default) |
| 3 | ent_coef 0, vf_coef 0.5 | ``entropy_coeff=0``, ``vf_loss_coeff=0.5`` |
| 3 | target_kl None, max_grad_norm 0.5 | ``use_kl_loss=False``, ``grad_clip=0.5`` (norm) |
| 3 | MlpPolicy: separate 64-64 tanh nets, state-independent log std | ``fcnet_hiddens=[64, 64]``, ``tanh``, ``vf_share_layers=False``, ``free_log_std=True`` |
| 4 | learning_rate 3e-4 (actor, critic, entropy) | ``actor_lr=critic_lr=alpha_lr=3e-4`` (RLlib's actor default is 3e-5) |
| 4 | buffer_size 1e6, uniform replay | ``EpisodeReplayBuffer`` of capacity 1e6 (RLlib's default is prioritized) |
| 4 | batch_size 256, tau 0.005, gamma 0.99 | ``train_batch_size_per_learner=256``, ``tau=0.005``, ``gamma=0.99`` |
| 4 | train_freq 1, gradient_steps 1 | ``rollout_fragment_length=1`` on one env, ``training_intensity=None``: one env step, then one update, per training step |
| 4 | target_update_interval 1 | ``target_network_update_freq=0``: a Polyak update after every update |
| 4 | ent_coef "auto" (alpha from 1.0, target entropy -nu) | ``initial_alpha=1.0``, ``target_entropy="auto"`` |
| 4 | learning_starts 100 (SB3 default) | ``num_steps_sampled_before_learning_starts=100`` (RLlib: 1500) |
| 4 | MlpPolicy: 256-256 relu | ``fcnet_hiddens=[256, 256]``, ``relu`` |

Differences that remain: RLlib PPO standardises advantages over the whole train batch (SB3
per minibatch); RLlib SAC's critic loss is a Huber loss (``delta=1.0``,
``ray/rllib/algorithms/sac/torch/sac_torch_learner.py``, ray 2.60) where SB3's, the paper's
library, is the mean squared error (`rlmpc.baselines.sb3`); actions are learnt in ``[-1, 1]``
and unsquashed to the env's bounds (every env here has ``[-1, 1]`` actions, so this is the
identity plus clipping). ``overrides``
(``{"training": {...}, "env_runners": {...}, ...}``: config method -> keyword arguments)
change any of these, e.g. smaller batches in tests.

Resume: ``workdir/checkpoint`` (written as ``checkpoint.tmp`` then renamed) holds the
algorithm's state (for SAC its replay buffer too) and the curve so far; a call that finds it
restores it and trains on to ``env_steps``; ``workdir/curve.jsonl`` is the curve, one row per
iteration (cut back to the checkpoint's rows on resume).

By hand::

    python -m rlmpc.baselines.rllib --algo ppo --env acrobot --env-steps 300000 --seed 1 \\
        --out runs/baseline-ppo-acrobot-s1

writes ``OUT/eval.json`` (the evaluation, the resolved config, the wall time),
``OUT/curve.jsonl`` and ``OUT/checkpoint``; run it again to resume.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import envs
from rlmpc.baselines.evaluate import (
    baseline_parser,
    evaluate_policy,
    first_eval_seed,
    parse_baseline_args,
    write_baseline_record,
)

ALGOS = ("ppo", "sac")
#: iterations between checkpoints (and one after the last)
CHECKPOINT_STEPS = 50_000
CHECKPOINT_SECONDS = 600.0
# a checkpoint every 50k env steps or 10 minutes, whichever comes first, and at the end: SAC's
# holds its replay buffer (up to 1M transitions), too big to write every few iterations
#: custom env-runner metric: the success of each ended episode (`envs.registry.EnvSpec.success`)
SUCCESS = "success"


def _make_env(config: dict[str, Any], env: str) -> Any:
    import envs as registered  # registers the gymnasium ids in this process

    return registered.spec(env).make()


def _registered(env: str) -> str:
    """The RLlib env id of ``env`` (``rlmpc-baseline/<name>``), registered with Ray's tune
    registry (which env runners in other processes read too)."""
    from ray.tune.registry import register_env

    name = f"rlmpc-baseline/{env}"
    register_env(name, functools.partial(_make_env, env=env))
    return name


def _on_episode_end(*, episode: Any, metrics_logger: Any, task: str, **_: Any) -> None:
    """Log the ended episode's success (RLlib passes its own ``env``: ours is ``task``)."""
    info = episode.get_infos(-1)
    metrics_logger.log_value(SUCCESS, float(envs.spec(task).success(info)), window=100)


def build_config(algo: str, env: str, seed: int, overrides: dict | None = None) -> Any:
    """The RLlib config of baseline ``algo`` on ``env`` (Table 3 / 4, see the module docstring)."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.algorithms.sac import SACConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    _check(algo, env)
    if algo == "ppo":
        config = (
            PPOConfig()
            .training(
                lr=3e-4, train_batch_size_per_learner=2048, minibatch_size=64, num_epochs=10,
                gamma=0.99, lambda_=0.95, clip_param=0.2, vf_clip_param=math.inf,
                entropy_coeff=0.0, vf_loss_coeff=0.5, use_kl_loss=False, kl_coeff=0.0,
                grad_clip=0.5, grad_clip_by="global_norm",
            )
            .rl_module(model_config=DefaultModelConfig(
                fcnet_hiddens=[64, 64], fcnet_activation="tanh", vf_share_layers=False,
                free_log_std=True,
            ))
        )  # fmt: skip
    else:
        config = (
            SACConfig()
            .training(
                actor_lr=3e-4, critic_lr=3e-4, alpha_lr=3e-4, train_batch_size_per_learner=256,
                replay_buffer_config={"type": "EpisodeReplayBuffer", "capacity": 1_000_000},
                store_buffer_in_checkpoints=True, tau=0.005, gamma=0.99, training_intensity=None,
                target_network_update_freq=0, initial_alpha=1.0, target_entropy="auto",
                num_steps_sampled_before_learning_starts=100,
            )
            .env_runners(rollout_fragment_length=1)
            .rl_module(model_config=DefaultModelConfig(
                fcnet_hiddens=[256, 256], fcnet_activation="relu",
            ))
        )  # fmt: skip
    config = (
        config.environment(_registered(env))
        .framework("torch")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1)
        .learners(num_learners=0, num_gpus_per_learner=0)
        .callbacks(on_episode_end=functools.partial(_on_episode_end, task=env))
        .debugging(seed=seed)
    )
    for method, kwargs in (overrides or {}).items():
        if not callable(getattr(config, method, None)):
            raise ValueError(f"overrides: unknown config section {method!r}")
        config = getattr(config, method)(**kwargs)
    return config


def _check(algo: str, env: str) -> None:
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {list(ALGOS)}, got {algo!r}")
    if env not in envs.names():
        raise ValueError(f"env must be one of {sorted(envs.names())}, got {env!r}")


def mean_policy(module: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``act(obs)``: the RLModule's deterministic action in env units (the Gaussian's mean;
    SAC's squashed mean), unsquashed from ``[-1, 1]`` to the action space as RLlib's
    env runner does."""
    import torch
    from ray.rllib.core.columns import Columns
    from ray.rllib.utils.spaces.space_utils import unsquash_action

    dist_cls = module.get_inference_action_dist_cls()
    space = module.action_space

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            batch = {Columns.OBS: torch.as_tensor(obs, dtype=torch.float32)[None]}
            dist = dist_cls.from_logits(module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS])
            # SquashedGaussian.to_deterministic() keeps the pre-tanh loc: squash it ourselves
            mean = (
                dist._squash(dist.loc)
                if hasattr(dist, "_squash")
                else dist.to_deterministic().sample()
            )
        return unsquash_action(mean[0].numpy(), space)

    return act


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    """The JSON-serialisable entries of a config dict (non-finite floats as strings)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = str(v)
        elif isinstance(v, dict):
            v = _jsonable(v)
        try:
            json.dumps(v, allow_nan=False)
        except (TypeError, ValueError):
            continue
        out[str(k)] = v
    return out


def _row(result: dict[str, Any], iteration: int) -> dict[str, Any]:
    from ray.rllib.utils.metrics import (
        ENV_RUNNER_RESULTS,
        EPISODE_RETURN_MEAN,
        NUM_ENV_STEPS_SAMPLED_LIFETIME,
    )  # fmt: skip

    runners = result.get(ENV_RUNNER_RESULTS, {})
    ret, success = runners.get(EPISODE_RETURN_MEAN), runners.get(SUCCESS)
    return {
        "iteration": iteration,
        "env_steps": int(runners.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0)),
        "episode_return": None if ret is None or math.isnan(ret) else float(ret),
        "success_rate": None if success is None or math.isnan(success) else float(success),
    }


def _save(algo: Any, workdir: Path, curve: list[dict[str, Any]]) -> None:
    """Checkpoint and curve into ``checkpoint.tmp``, then swap it for ``checkpoint``."""
    ckpt, tmp, old = workdir / "checkpoint", workdir / "checkpoint.tmp", workdir / "checkpoint.old"
    shutil.rmtree(tmp, ignore_errors=True)
    algo.save_to_path(str(tmp.resolve()))
    (tmp / "curve.json").write_text(json.dumps(curve))
    shutil.rmtree(old, ignore_errors=True)
    if ckpt.exists():
        ckpt.rename(old)
    tmp.rename(ckpt)
    shutil.rmtree(old, ignore_errors=True)


def _write_curve(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def train_rllib(algo: str, env: str, seed: int, env_steps: int, workdir: Path,
                eval_episodes: int = 50, eval_seed: int | None = None,
                overrides: dict | None = None,
                log: Callable[[dict], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Train baseline ``algo`` (``"ppo"`` / ``"sac"``) on ``env`` for ``env_steps`` sampled env
    steps (resuming ``workdir/checkpoint`` when there), then evaluate its mean policy on
    ``eval_episodes`` episodes from ``eval_seed`` (default ``1_000_000 + 10_000 * seed``).

    ``log(row)`` is called after each iteration with ``{"iteration", "env_steps",
    "episode_return", "success_rate"}`` (the mean return and success of the env runner's
    last 100 episodes; None before one ended). Returns ``{"eval": summary + {"env_steps",
    "seed", "eval_seed"}, "curve": rows, "config": the resolved config (its JSON-able
    entries), "wall_time_s"}``. Each row also has ``wall_time_s``, the seconds spent so far
    over all attempts (a continued run adds its own to those of the checkpoint it restored),
    so the record's ``wall_time_s`` is the whole training's, not the last attempt's.
    """
    import ray
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

    _check(algo, env)
    if env_steps < 1:
        raise ValueError(f"env_steps must be >= 1, got {env_steps}")
    if eval_episodes < 1:
        raise ValueError(f"eval_episodes must be >= 1, got {eval_episodes}")
    eval_seed = first_eval_seed(seed) if eval_seed is None else eval_seed
    start = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    own_ray = not ray.is_initialized()
    if own_ray:
        # address="local": a fresh Ray even when another lives on this machine (ray.init
        # would join that one and refuse num_cpus)
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)  # fmt: skip
    try:
        trainer = build_config(algo, env, seed, overrides).build_algo()
        try:
            curve: list[dict[str, Any]] = []
            ckpt = workdir / "checkpoint"
            if ckpt.exists():
                trainer.restore_from_path(str(ckpt.resolve()))
                curve = json.loads((ckpt / "curve.json").read_text())
            _write_curve(workdir / "curve.jsonl", curve)
            steps = curve[-1]["env_steps"] if curve else 0
            # seconds spent by the attempts before this one, up to the checkpoint it continues
            before = curve[-1].get("wall_time_s", 0.0) if curve else 0.0
            saved_steps, saved_at = steps, time.perf_counter()
            while steps < env_steps:
                result = trainer.train()
                row = _row(result, len(curve) + 1)
                row["wall_time_s"] = before + time.perf_counter() - start
                steps = row["env_steps"]
                curve.append(row)
                with (workdir / "curve.jsonl").open("a") as f:
                    f.write(json.dumps(row) + "\n")
                if log is not None:
                    log(row)
                due = steps - saved_steps >= CHECKPOINT_STEPS or (
                    time.perf_counter() - saved_at >= CHECKPOINT_SECONDS
                )
                if due or steps >= env_steps:
                    _save(trainer, workdir, curve)
                    saved_steps, saved_at = steps, time.perf_counter()
            sampled = int(trainer.metrics.peek(
                (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=steps
            ))  # fmt: skip
            summary = evaluate_policy(env, mean_policy(trainer.get_module()), eval_episodes,
                                      eval_seed)  # fmt: skip
            config = _jsonable(trainer.config.to_dict())
        finally:
            trainer.stop()
    finally:
        if own_ray:
            ray.shutdown()
    return {
        "eval": {**summary, "env_steps": sampled, "seed": seed, "eval_seed": eval_seed},
        "curve": curve,
        "config": config,
        "wall_time_s": before + time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> None:
    a = parse_baseline_args(baseline_parser("RLlib", ALGOS), argv)
    out = train_rllib(a.algo, a.env, a.seed, a.env_steps, a.out, a.eval_episodes, a.eval_seed,
                      log=lambda row: print(json.dumps(row), flush=True))  # fmt: skip
    write_baseline_record(a.out, out)


if __name__ == "__main__":
    main()
