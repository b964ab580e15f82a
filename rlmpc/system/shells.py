"""The components' shells: the methods the coordinator calls, around the plain classes.

Each shell wraps a plain class that tests drive in-process (`RolloutWorker`, `Learner`) and
reaches the replay shards through a `Shards` link, so that one shell serves both backends:
`LocalShards` (the serial backend: the shard objects themselves) or the Ray backend's link
(`rlmpc.system.ray_backend`), which also adds the little that only Ray needs (restart
detection, the process id). Data goes from a rollout shell to the shards and from the
shards to the learner shell, never through the coordinator.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Protocol

import envs
from learners.policy import NetworkConfig
from learners.pompc import KLPriorConfig
from learners.ppo_loss import PPOConfig
from learners.rho import InfluenceRatioConfig
from rlmpc.system.backend import (
    EVALUATOR,
    FINAL_EVALUATOR,
    LEARNER,
    REAL_SHARD,
    VIRTUAL_SHARD,
    SerialBackend,
    actor_name,
)
from rlmpc.system.learner import Learner
from rlmpc.system.records import (
    CollectResult,
    EvalResult,
    Filming,
    FragmentId,
    FragmentMeta,
    RealArrays,
    VirtualArrays,
    Weights,
)
from rlmpc.system.replay import ReplayShard
from rlmpc.system.worker import EVAL_ACTOR_ID, RolloutWorker, WorkerSpec


@dataclass(frozen=True)
class LearnerSpec:
    """Everything the learner is built from: its sections of the config, sizes and device."""

    nobs: int
    na: int
    ppo: PPOConfig
    networks: NetworkConfig
    influence_ratio: InfluenceRatioConfig
    device: str = "cpu"
    seed: int = 0
    threads: int = 1
    kl: KLPriorConfig = KLPriorConfig()
    diagnostics: bool = False
    """log the bound's estimates (`learners.bound`)"""
    horizon: int | None = None
    """the planner's H, for eq. (12)'s coefficients"""

    def build(self) -> Learner:
        """The `Learner` this spec describes."""
        return Learner(
            self.nobs, self.na, self.ppo, self.networks, self.influence_ratio,
            device=self.device, seed=self.seed, threads=self.threads, kl=self.kl,
            diagnostics=self.diagnostics, horizon=self.horizon,
        )  # fmt: skip


class Shards(Protocol):
    """How a shell reaches the two replay shards (real: D_RL, virtual: D_MPPI)."""

    def add(self, meta: FragmentMeta, real: RealArrays, virtual: VirtualArrays | None) -> None:
        """Hand a fragment to the shards (they own it from then on)."""

    def take(self, metas: list[FragmentMeta],
             min_version: int) -> tuple[list[RealArrays], list[VirtualArrays]]:  # fmt: skip
        """The fragments of ``metas``, in that order (`ReplayShard.take`)."""


class LocalShards:
    """`Shards` of this process: the `ReplayShard` objects themselves."""

    def __init__(self, real: ReplayShard, virtual: ReplayShard) -> None:
        self.real, self.virtual = real, virtual

    def add(self, meta: FragmentMeta, real: RealArrays, virtual: VirtualArrays | None) -> None:
        self.real.add(meta, real)
        if virtual is not None:
            self.virtual.add(meta, virtual)

    def take(self, metas: list[FragmentMeta],
             min_version: int) -> tuple[list[RealArrays], list[VirtualArrays]]:  # fmt: skip
        reals = [r[0] for r in self.real.take([m.fid for m in metas], min_version)]
        vfids = [m.fid for m in metas if m.virtual_samples > 0]
        virtuals = [r[0] for r in self.virtual.take(vfids, min_version)] if vfids else []
        return reals, virtuals


def node_env_kwargs(spec: WorkerSpec) -> list[dict[str, Any]] | None:
    """The envs' constructor arguments on this node (`envs.registry.EnvSpec.env_kwargs`:
    e.g. a CARLA server of the node for each env); None for envs that need none."""
    return envs.spec(spec.env).env_kwargs(spec.n_envs)


class RolloutShell:
    """A rollout actor: a `RolloutWorker` whose fragments go to the shards."""

    def __init__(
        self, actor_id: int, spec: WorkerSpec, shards: Shards, seed_offset: int = 0
    ) -> None:
        self.worker = RolloutWorker(actor_id, spec, seed_offset, env_kwargs=node_env_kwargs(spec))
        self.shards = shards

    def collect(self, fid: FragmentId, steps: int, weights: Weights, version: int,
                snapshot: bool) -> CollectResult:  # fmt: skip
        real, virtual, result = self.worker.collect(fid, steps, weights, version, snapshot)
        self.shards.add(result.meta, real, virtual)
        return result

    def snapshot(self) -> dict[str, Any]:
        return self.worker.snapshot()

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.worker.restore(snapshot)

    def close(self) -> None:
        for env in self.worker.envs:
            env.close()


class EvalShell(RolloutShell):
    """The evaluator: a worker of its own (`EVAL_ACTOR_ID`) acting with the policy's mean."""

    def __init__(self, spec: WorkerSpec) -> None:
        spec = replace(spec, keep_virtual=False)
        self.worker = RolloutWorker(EVAL_ACTOR_ID, spec, env_kwargs=node_env_kwargs(spec))

    def evaluate(self, weights: Weights | None, episodes: int, seed: int, record: int,
                 film: Filming | None = None) -> EvalResult:  # fmt: skip
        return self.worker.evaluate(weights, episodes, seed=seed, record=record, film=film)


class LearnerShell:
    """The learner: fetches the fragments the coordinator names from the shards, learns."""

    def __init__(self, spec: LearnerSpec, shards: Shards) -> None:
        self.learner = spec.build()
        self.shards = shards

    def train(
        self, metas: list[FragmentMeta], min_version: int
    ) -> tuple[dict[str, float], Weights]:
        start = time.perf_counter()
        reals, virtuals = self.shards.take(metas, min_version)
        fetched = time.perf_counter()
        metrics = self.learner.train(reals, virtuals)
        metrics["time/fetch_s"] = fetched - start
        metrics["time/update_s"] = time.perf_counter() - fetched
        return metrics, self.learner.get_weights()

    def get_weights(self) -> Weights:
        return self.learner.get_weights()

    def state_dict(self) -> dict[str, Any]:
        return self.learner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state)


def serial_backend(worker: WorkerSpec, learner: LearnerSpec, num_actors: int,
                   eval_worker: WorkerSpec, final_eval_worker: WorkerSpec) -> SerialBackend:  # fmt: skip
    """Every component of a run in this process (`rlmpc.system.backend.SerialBackend`)."""
    real, virtual = ReplayShard("real"), ReplayShard("virtual")
    shards = LocalShards(real, virtual)
    factories = {
        REAL_SHARD: lambda restarts: real,
        VIRTUAL_SHARD: lambda restarts: virtual,
        LEARNER: lambda restarts: LearnerShell(learner, shards),
        EVALUATOR: lambda restarts: EvalShell(eval_worker),
        FINAL_EVALUATOR: lambda restarts: EvalShell(final_eval_worker),
    }
    for i in range(num_actors):
        factories[actor_name(i)] = lambda restarts, i=i: RolloutShell(i, worker, shards, restarts)
    return SerialBackend(factories)
