"""The run's configuration: one frozen dataclass per component, per-env presets, validation.

Components and their sections on the command line (``python launch.py --help``):

| section | class | paper |
|---|---|---|
| run | `RunConfig` (this module) | Alg. 1's loop: M, scale, budget, output |
| ppo | `learners.ppo.PPOConfig` | Table 3 |
| influence ratio | `learners.rho.InfluenceRatioConfig` | §4.2, Alg. 2 |
| networks | `learners.policy.NetworkConfig` | §4.4 ensemble |
| planner | `planners.costs.PlannerConfig` (per env) | App. C, Table 5 |
| kl | `learners.pompc.KLPriorConfig` | PO-MPC's KL prior (Serra-Gomez et al.) |
| wandb | `rlmpc.run.runlog.WandbConfig` | |

Per-env presets (`envs.registry.EnvSpec.presets`) set the defaults that differ between
envs; everything else is the papers' tables. Every class validates itself at construction and
`TrainConfig` checks the rules between sections; a bad value raises a `ConfigError` whose
``fields`` name the offending fields, so the command line refuses it, naming its options,
before Ray starts. `rlmpc.run.checks.check_runnable` adds what depends on this machine
(devices, packages).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import envs
from common.checks import ConfigError, check_finite_fields, check_seed, episode_seeds_problem
from learners.policy import NetworkConfig
from learners.pompc import KLPriorConfig
from learners.ppo import check_sections
from learners.ppo_loss import PPOConfig
from learners.rho import InfluenceRatioConfig
from planners.costs import PlannerConfig
from rlmpc.run.runlog import WandbConfig
from rlmpc.system.coordinator import Schedule
from rlmpc.system.faults import parse_rates
from rlmpc.system.learner import resolve_device
from rlmpc.system.records import Filming
from rlmpc.system.shells import LearnerSpec
from rlmpc.system.worker import WorkerSpec

__all__ = ["ConfigError", "RunConfig", "TrainConfig"]


def probe_model(env: str) -> Any:
    """The planner model of a registered env (its sizes, its geometry), from the env the
    registry names as its probe (one that builds without cluster resources);
    `ConfigError` naming ``run.env`` with what the env lacks of the contract
    (`envs.registry.probe`)."""
    model, problems = envs.registry.probe(envs.spec(env))
    if problems:
        raise ConfigError("run.env", f"env {env!r} cannot be trained: " + "; ".join(problems))
    return model


@dataclass(frozen=True)
class RunConfig:
    """The run: environment, scale, budget, evaluation, checkpoints, output."""

    env: str = envs.DEFAULT_ENV
    """task environment: a name in the env registry (`envs`), or a user's env as
    MODULE:ATTRIBUTE naming its envs.EnvSpec (docs/custom_env.md):"""
    num_candidates: int = 4
    """M, high-level candidates per step (eq. 4), 1..64; one is executed, M-1 become virtual data"""
    num_actors: int = 1
    """rollout actors (Ray actors), 1..1024"""
    envs_per_actor: int = 64
    """envs stepped together by each actor (one batched planner call per step), 1..4096"""
    total_env_steps: int = 300_000
    """real env steps to train for, >= 1 (whole iterations of n_steps, rounded down)"""
    max_policy_lag: int = 1
    """policy versions a fragment may lag behind the learner, 0..4: 0 acts with the newest
    weights only (actors idle while the learner updates); 1 lets actors collect the next
    fragment during the update (PPO's ratio stays valid: it divides by the logged
    probability of the policy that acted, and the clip bounds the step)"""
    virtual_terminal: Literal["reward", "exclude"] = "reward"
    """terminal events on virtual paths, the same rule for every env: 'reward' pays the env's
    terminal reward (crash -100, off-track -100, collision -1000, goal +1000) on the planned
    transition into a state the model deems terminal; 'exclude' leaves it out (App. B's r̂).
    Either way the path's λ-return stops at that state"""
    seed: int = 0
    """base seed of the run (actors, learner, evaluation), 0..2³²−1"""
    eval_seed: int | None = None
    """seed of the first evaluation episode (episode i uses eval_seed + i, within 0..2³²−1);
    default 1_000_000 + 10_000·seed, so runs of different seeds are judged on different
    episodes, none of them a training episode"""
    learner_device: str = "auto"
    """learner device: auto (cuda when visible) | cpu | cuda[:N]"""
    actor_device: str = "cpu"
    """device of each actor's policy and planner: cpu | cuda[:N]"""
    threads: int = 1
    """torch threads per actor and for the learner, 1..64"""
    actor_cpus: float = 1.0
    """CPUs each rollout actor reserves in Ray's scheduler, > 0"""
    actor_gpus: float = 0.0
    """GPUs each rollout actor reserves in Ray's scheduler: 0, a share in (0, 1] (0.25: four
    actors share one GPU) or a whole number; > 0 exactly when actor_device is cuda"""
    eval_every: int = 25
    """run a periodic evaluation every this many iterations (0: only the final one); its
    figures are logged eval_every iterations later. An env whose envs need cluster resources
    (CARLA servers) needs one env's worth spare for the evaluator"""
    eval_episodes: int = 10
    """episodes of each periodic evaluation, 1..10000"""
    final_eval_episodes: int = 50
    """episodes of the final evaluation (the paper's tables use 50), 0..10000; 0 skips it"""
    eval_video_frames: int = 100
    """frames of the final evaluation's videos of its first episode, 0 (none) or 2..150:
    eval_episode.mp4, the env's own frames with the candidates' planned paths and the danger
    zone drawn over them (W&B's eval/episode_video; an env that renders no rgb_array frames
    has none), and eval_episode.gif, its trace (eval/episode_trace). A frame every s steps,
    s doubling until the episode fits; the evaluation's figures are the same either way"""
    eval_video_every: int = 0
    """film the first episode of every this-many-th periodic evaluation (videos/, W&B's
    eval/episode_video at the row of its figures), with eval_video_frames frames; 0: none.
    Its figures are the same either way"""
    eval_video_width: int = 400
    """evaluation videos' frames are scaled down to at most this many pixels across, 64..1920"""
    checkpoint_every: int = 10
    """write a checkpoint every this many iterations (and at the end), >= 1"""
    keep_checkpoints: int = 3
    """keep the newest this many checkpoints (older ones are deleted), >= 1"""
    stop_after: int = 0
    """stop (with a checkpoint) after this many iterations of this invocation; 0: run to the end"""
    max_actor_failures: int = 10
    """restarts allowed per actor before it is dropped, and fragments it may lose in a row to
    an env whose simulator did not come back (the run goes on with the others), >= 0"""
    actor_restart_timeout: float = 120.0
    """seconds to wait for Ray to bring a dead actor back (e.g. its node is gone and no
    other node has room) before dropping it, > 0"""
    actor_timeout: float = 600.0
    """seconds the coordinator waits for a fragment before it declares the actors it waits
    for stalled, kills them and has them replaced (their fragments are collected again), > 0"""
    max_restores: int = 3
    """in-place restores allowed when the learner, a replay shard or the evaluator dies: the
    run reloads its newest checkpoint without restarting the driver (as --resume does), >= 0"""
    actor_resources: tuple[str, ...] = ()
    """extra Ray resources each rollout actor needs, as NAME=AMOUNT, besides what its envs
    need (the env registry's per-env resources: a `carla` unit, one CARLA server, per env)"""
    run_name: str | None = None
    """run directory name under runs_dir (default: <env>-<time>)"""
    runs_dir: str = "runs"
    """where run directories are written"""
    progress: bool = True
    """show the progress bar"""
    tensorboard: bool = True
    """write TensorBoard event files beside metrics.jsonl (<run dir>/tensorboard: every
    figure of every row at its env steps; `tensorboard --logdir runs`). Measured: ~2.5 ms a
    row of ~60 figures (a learner iteration takes seconds), ~0.5 s to import the writer"""
    inject_faults: tuple[str, ...] = ()
    """faults injected on purpose into the training actors' envs (the evaluators' stay clean),
    as KIND=PROB entries, PROB the chance per env step, 0 < PROB <= 1: raise (the step
    raises), nan_obs (a NaN/inf observation), nan_reward (a NaN/inf reward), stall (the step
    sleeps 1.5 × env_step_timeout). Each costs its episode (dropped from the returns, counted
    in episodes_faulted and faults/*), never the learner's state or the run"""
    env_step_timeout: float = 60.0
    """seconds an env step of a training actor may take; a slower one costs its episode, > 0"""
    diagnostics: bool = True
    """estimate the terms of the paper's bound (eqs. 11, 12, 35) during training and log them
    as bound/* (docs/rho.md): the actors ship the model's one-step prediction at the executed
    control; the run's data and updates are the same either way"""

    def __post_init__(self) -> None:
        def check(name: str, lo: float, hi: float | None = None) -> None:
            v = getattr(self, name)
            if not (v >= lo and (hi is None or v <= hi)):
                rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
                raise ConfigError(
                    name, f"{name} must be {rng if hi is None else 'in ' + rng}, got {v!r}"
                )

        check_finite_fields(self)
        try:
            envs.spec(self.env)  # a registered name, or a user's MODULE:ATTRIBUTE (`envs.load`)
        except ValueError as err:
            raise ConfigError("env", str(err)) from None
        check_seed("seed", self.seed)
        if self.eval_seed is not None:
            check_seed("eval_seed", self.eval_seed)
        if self.virtual_terminal not in ("reward", "exclude"):
            raise ConfigError(
                "virtual_terminal",
                f"virtual_terminal must be 'reward' or 'exclude', got {self.virtual_terminal!r}",
            )
        check("num_candidates", 1, 64)
        check("num_actors", 1, 1024)
        check("envs_per_actor", 1, 4096)
        check("total_env_steps", 1)
        check("max_policy_lag", 0, 4)
        check("threads", 1, 64)
        check("eval_every", 0)
        check("eval_episodes", 1, 10_000)
        check("final_eval_episodes", 0, 10_000)
        episodes = max(self.eval_episodes, self.final_eval_episodes)
        if problem := episode_seeds_problem(self.first_eval_seed, episodes):
            raise ConfigError(
                ("eval_seed", "seed") if self.eval_seed is None else "eval_seed",
                f"the evaluation {problem.removeprefix('the ')}",
            )
        if self.eval_video_frames != 0:
            check("eval_video_frames", 2, 150)
        check("eval_video_every", 0)
        check("eval_video_width", 64, 1920)
        check("checkpoint_every", 1)
        check("keep_checkpoints", 1)
        check("stop_after", 0)
        check("max_actor_failures", 0)
        if not self.actor_restart_timeout > 0:
            raise ConfigError(
                "actor_restart_timeout",
                f"actor_restart_timeout must be > 0, got {self.actor_restart_timeout!r}",
            )
        check("max_restores", 0)
        if not self.actor_timeout > 0:
            raise ConfigError(
                "actor_timeout", f"actor_timeout must be > 0, got {self.actor_timeout!r}"
            )
        _ = self.actor_resource_dict  # validates the NAME=AMOUNT entries
        _ = self.fault_rates  # validates the KIND=PROB entries
        if not self.env_step_timeout > 0:
            raise ConfigError(
                "env_step_timeout", f"env_step_timeout must be > 0, got {self.env_step_timeout!r}"
            )
        if not self.actor_cpus > 0:
            raise ConfigError("actor_cpus", f"actor_cpus must be > 0, got {self.actor_cpus!r}")
        gpus = self.actor_gpus
        if not (math.isfinite(gpus) and gpus >= 0 and (gpus <= 1 or float(gpus).is_integer())):
            raise ConfigError(
                "actor_gpus",
                f"actor_gpus must be 0, a share in (0, 1] or a whole number of GPUs, got {gpus!r}",
            )
        if self.actor_device.startswith("cuda") != (gpus > 0):
            raise ConfigError(
                ("actor_device", "actor_gpus"),
                "actor_device cuda needs actor_gpus > 0 (the GPU share each actor reserves, "
                "e.g. 0.25), and actor_gpus > 0 needs actor_device cuda; got actor_device="
                f"{self.actor_device!r}, actor_gpus={gpus!r}",
            )
        for name in ("learner_device", "actor_device"):
            dev = getattr(self, name)
            ok = dev in ("cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())
            if not ok and not (name == "learner_device" and dev == "auto"):
                allowed = "auto | cpu | cuda[:N]" if name == "learner_device" else "cpu | cuda[:N]"
                raise ConfigError(name, f"{name} must be {allowed}, got {dev!r}")
        if self.run_name is not None and (not self.run_name or "/" in self.run_name):
            raise ConfigError(
                "run_name", f"run_name must be a non-empty name without '/', got {self.run_name!r}"
            )

    @property
    def actor_resource_dict(self) -> dict[str, float]:
        """``actor_resources`` parsed, plus what the actor's envs need (`EnvSpec.resources`)."""
        out: dict[str, float] = {}
        for item in self.actor_resources:
            name, sep, amount = item.partition("=")
            try:
                value = float(amount)
            except ValueError:
                value = float("nan")
            if not sep or not name or not 0 < value < math.inf:
                raise ConfigError(
                    "actor_resources",
                    f"actor_resources must be NAME=AMOUNT entries with a finite AMOUNT > 0, "
                    f"got {item!r}",
                )
            out[name] = value
        for name, amount in envs.spec(self.env).resources(self.envs_per_actor).items():
            out.setdefault(name, amount)
        return out

    @property
    def fault_rates(self) -> dict[str, float]:
        """``inject_faults`` parsed: kind → probability per step (`rlmpc.system.faults`)."""
        try:
            return parse_rates(self.inject_faults)
        except ValueError as err:
            raise ConfigError("inject_faults", f"inject_faults: {err}") from None

    @property
    def first_eval_seed(self) -> int:
        """`eval_seed`, or the one derived from `seed`."""
        return 1_000_000 + 10_000 * self.seed if self.eval_seed is None else self.eval_seed

    @property
    def envs_total(self) -> int:
        return self.num_actors * self.envs_per_actor


@dataclass(frozen=True)
class TrainConfig:
    """The resolved configuration of a run (what ``config.yaml`` holds)."""

    run: RunConfig
    ppo: PPOConfig
    influence_ratio: InfluenceRatioConfig
    networks: NetworkConfig
    planner: PlannerConfig
    wandb: WandbConfig
    kl: KLPriorConfig = KLPriorConfig()

    @classmethod
    def section_classes(cls, env: str) -> dict[str, type]:
        """Each section's dataclass for ``env`` (the planner's is the env's preset class)."""
        out = {f.name: f.type for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        out = {name: hints[name] for name in out}
        out["planner"] = envs.spec(env).planner
        return out

    @classmethod
    def for_env(cls, env: str, **sections: Mapping[str, Any]) -> TrainConfig:
        """A run's config for ``env`` built as ``launch.py --env ENV`` builds it: each section's
        defaults, the env's presets over them (its registry entry: `envs.registry.EnvSpec.
        presets`), then ``sections`` (section -> field -> value) over those, e.g.
        ``TrainConfig.for_env("lunarlander", run={"total_env_steps": 50_000})``. An unknown
        section or field raises `ConfigError` naming it; bad values as the classes do."""
        classes = cls.section_classes(env)
        unknown = set(sections) - set(classes)
        if unknown:
            raise ConfigError(
                tuple(sorted(unknown)), f"unknown config section(s) {sorted(unknown)}; "
                f"the sections are {sorted(classes)}",
            )  # fmt: skip
        presets = envs.spec(env).presets
        parts = {}
        for name, klass in classes.items():
            known = {f.name for f in dataclasses.fields(klass)}
            given = dict(sections.get(name, {}))
            bad = set(given) - known
            if bad:
                raise ConfigError(
                    tuple(f"{name}.{b}" for b in sorted(bad)),
                    f"unknown field(s) {sorted(bad)} in section {name!r}",
                )
            values = {**presets.get(name, {}), **given}
            if name == "run":
                values["env"] = env
            tup = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
            parts[name] = klass(**tup)
        return cls(**parts)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """The config a ``config.yaml`` (or any file of that layout) holds: its ``run.env``,
        that env's presets, then the file's values (`for_env`); ``task_version`` maps a
        file of an older task to the env that keeps it (`envs.resolve_task`)."""
        data = dict(data)
        version = data.pop("task_version", None)
        run = dict(data.get("run", {}))
        env = envs.resolve_task(run.get("env", envs.DEFAULT_ENV), version)
        run.pop("env", None)
        return cls.for_env(env, **{**data, "run": run})

    def __post_init__(self) -> None:
        n, total = self.ppo.n_steps, self.run.envs_total
        if n % total:
            raise ConfigError(
                ("ppo.n_steps", "run.num_actors", "run.envs_per_actor"),
                f"n_steps ({n}) must be a multiple of num_actors × envs_per_actor ({total}): "
                "each iteration takes n_steps real steps, fragment_len from every env",
            )
        if self.influence_ratio.rho0 > 0 and self.run.num_candidates < 2:
            raise ConfigError(
                ("influence_ratio.rho0", "run.num_candidates"),
                f"rho0 > 0 needs virtual data, i.e. num_candidates >= 2 (got "
                f"M={self.run.num_candidates}); set rho0 = 0 for M = 1",
            )
        check_sections(self.ppo, self.networks, self.influence_ratio, self.kl)
        if self.influence_ratio.rho0_rule != "off" and not self.run.diagnostics:
            raise ConfigError(
                ("influence_ratio.rho0_rule", "run.diagnostics"),
                "the ρ0 rule reads the bound's estimates: it needs diagnostics on",
            )
        if self.kl.enabled:
            if self.run.num_candidates < 2:
                raise ConfigError(
                    ("kl.kl_prior", "run.num_candidates"),
                    "the planner prior is fitted to each step's candidates: it needs "
                    f"num_candidates >= 2, got {self.run.num_candidates}",
                )
            if self.kl.kl_epsilon >= math.log(self.run.num_candidates):
                raise ConfigError(
                    ("kl.kl_epsilon", "run.num_candidates"),
                    "the candidates' weights are at most log(num_candidates) = "
                    f"{math.log(self.run.num_candidates):.3f} away from uniform in KL; "
                    f"kl_epsilon={self.kl.kl_epsilon} cannot be reached",
                )
        if not isinstance(self.planner, envs.spec(self.run.env).planner):
            raise ConfigError(
                ("planner", "run.env"),
                f"{self.run.env} plans with {envs.spec(self.run.env).planner.__name__}, "
                f"got {type(self.planner).__name__}",
            )

    @property
    def fragment_len(self) -> int:
        """T: steps each env takes per iteration."""
        return self.ppo.n_steps // self.run.envs_total

    @property
    def iterations(self) -> int:
        """Learner iterations in the whole run: total_env_steps in whole iterations, rounded
        down (so a run never exceeds its budget), at least one."""
        return max(1, self.run.total_env_steps // self.ppo.n_steps)

    def to_dict(self) -> dict[str, Any]:
        """The sections as plain data (``config.yaml``), with ``task_version``: the version of
        the env's task (`envs.registry.EnvSpec.version`), so that a run directory names the
        task it trained even after the name moves on to a new one."""
        out = {f.name: dataclasses.asdict(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {**out, "task_version": envs.spec(self.run.env).version}

    @property
    def method(self) -> str:
        """The run's method label: `WandbConfig.wandb_method`, or ppo-mppi-rho<rho0> (fixed ρ)
        / ppo-mppi-<mode><rho0> (Alg. 2: adaptive, relative, decay), as `results/` names them."""
        ir = self.influence_ratio
        kind = "rho" if ir.mode == "fixed" else ir.mode
        return self.wandb.wandb_method or f"ppo-mppi-{kind}{ir.rho0:g}"

    def wandb_config(self) -> dict[str, Any]:
        """W&B's config of the run: ``method``, ``env`` and ``seed`` at the top (what panels
        group and compare runs by), then the sections (`to_dict`)."""
        return {"method": self.method, "env": self.run.env, "seed": self.run.seed, **self.to_dict()}

    @property
    def schedule(self) -> Schedule:
        """The coordinator's loop numbers."""
        run = self.run
        return Schedule(
            iterations=self.iterations, fragment_len=self.fragment_len,
            num_actors=run.num_actors, max_policy_lag=run.max_policy_lag,
            checkpoint_every=run.checkpoint_every, stop_after=run.stop_after,
            max_actor_failures=run.max_actor_failures,
            actor_restart_timeout=run.actor_restart_timeout, actor_timeout=run.actor_timeout,
            eval_every=run.eval_every,
            eval_episodes=run.eval_episodes, final_eval_episodes=run.final_eval_episodes,
            first_eval_seed=run.first_eval_seed,
            final_eval_on_evaluator=bool(envs.spec(run.env).resources_per_env),
            film=Filming(1, run.eval_video_frames, run.eval_video_width)
            if run.eval_video_frames else None,
            film_every=run.eval_video_every,
        )  # fmt: skip

    def worker_spec(self) -> WorkerSpec:
        """What each rollout worker is built from."""
        run = self.run
        return WorkerSpec(
            env=run.env, n_envs=run.envs_per_actor, num_candidates=run.num_candidates,
            planner=self.planner, networks=self.networks, seed=run.seed,
            device=run.actor_device, threads=run.threads, virtual_terminal=run.virtual_terminal,
            inject_faults=tuple(run.fault_rates.items()), env_step_timeout=run.env_step_timeout,
            candidate_gamma=self.ppo.gamma if self.kl.enabled else None,
            diagnostics=run.diagnostics,
        )  # fmt: skip

    def eval_spec(self, episodes: int) -> WorkerSpec:
        """An evaluation worker's: up to 10 envs at once on the CPU, one where each env
        needs cluster resources (a CARLA server). No faults are injected into its envs."""
        needs = bool(envs.spec(self.run.env).resources_per_env)
        n = 1 if needs else min(10, max(episodes, 1))
        return dataclasses.replace(
            self.worker_spec(),
            n_envs=n,
            device="cpu",
            inject_faults=(),
            candidate_gamma=None,
            diagnostics=False,
            render=self.run.eval_video_frames > 0,
        )

    def learner_spec(self, sizes: tuple[int, int] | None = None) -> LearnerSpec:
        """What the learner is built from: its sections, the env's sizes ``(nobs, na)`` (read
        off a probe of the env when not given: `probe_model`), its device."""
        if sizes is None:
            model = probe_model(self.run.env)
            sizes = (model.nobs, model.na)
        return LearnerSpec(
            *sizes, self.ppo, self.networks, self.influence_ratio,
            device=resolve_device(self.run.learner_device), seed=self.run.seed,
            threads=self.run.threads, kl=self.kl, diagnostics=self.run.diagnostics,
            horizon=self.planner.planning_horizon,
        )  # fmt: skip
