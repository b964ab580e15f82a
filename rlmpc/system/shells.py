"""The Ray shells of the system's plain classes: thin, one method per remote call.

Each shell wraps a plain class that tests drive in-process (`RolloutWorker`, `Learner`,
`Evaluator`); `rlmpc.system.driver` applies ``ray.remote`` to these shells when it assembles the
system, and `ReplayShard` is used as is.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

import ray

from rlmpc.run.config import TrainConfig
from rlmpc.run.evaluate import EvalResult, Evaluator
from rlmpc.system.learner import Learner
from rlmpc.system.records import CollectResult, FragmentId, FragmentMeta
from rlmpc.system.worker import RolloutWorker, WorkerSpec


def node_env_kwargs(spec: WorkerSpec) -> list[dict[str, Any]] | None:
    """Per-env constructor arguments on this node: a CARLA server of the node for each
    carla-racing env (claimed for this process), nothing for the embedded envs."""
    if spec.env != "carla-racing":
        return None
    from rlmpc.tools.carla_servers import claim_server

    claims = [claim_server() for _ in range(spec.n_envs)]
    return [{"host": c.host, "port": c.port, "tm_port": c.tm_port} for c in claims]


class RolloutActor:
    """Ray shell of `RolloutWorker`: hands its fragments to the shards (which own them)."""

    def __init__(
        self, actor_id: int, spec: WorkerSpec, real_shard: Any, virtual_shard: Any
    ) -> None:
        with warnings.catch_warnings():  # Ray's own use of a deprecated property
            warnings.simplefilter("ignore")
            restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self.worker = RolloutWorker(
            actor_id, spec, seed_offset=os.getpid() if restarted else 0,
            env_kwargs=node_env_kwargs(spec),
        )  # fmt: skip
        self.real_shard, self.virtual_shard = real_shard, virtual_shard

    def collect(self, fid: FragmentId, steps: int, weights: dict[str, Any], version: int,
                snapshot: bool) -> CollectResult:  # fmt: skip
        real, virtual, result = self.worker.collect(fid, steps, weights, version, snapshot)
        adds = [self.real_shard.add.remote(result.meta, real)]
        if virtual is not None:
            adds.append(self.virtual_shard.add.remote(result.meta, virtual))
        ray.get(adds)
        return result

    def restore(self, blob: bytes) -> None:
        self.worker.restore(blob)

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


class LearnerActor:
    """Ray shell of `Learner`: fetches the fragments the driver names from the two shards."""

    def __init__(
        self, cfg: TrainConfig, nobs: int, na: int, real_shard: Any, virtual_shard: Any
    ) -> None:
        self.learner = Learner(
            nobs, na, cfg.ppo, cfg.networks, cfg.influence_ratio,
            device=cfg.run.learner_device, seed=cfg.run.seed, threads=cfg.run.threads,
        )  # fmt: skip
        self.real_shard, self.virtual_shard = real_shard, virtual_shard

    def train(self, metas: list[FragmentMeta], min_version: int) -> tuple[dict[str, float], dict]:
        start = time.perf_counter()
        fids = [m.fid for m in metas]
        reals = ray.get([r[0] for r in ray.get(self.real_shard.take.remote(fids, min_version))])
        vfids = [m.fid for m in metas if m.virtual_samples > 0]
        virtuals = []
        if vfids:
            refs = ray.get(self.virtual_shard.take.remote(vfids, min_version))
            virtuals = ray.get([r[0] for r in refs])
        fetched = time.perf_counter()
        metrics = self.learner.train(reals, virtuals)
        metrics["time/fetch_s"] = fetched - start
        metrics["time/update_s"] = time.perf_counter() - fetched
        return metrics, self.learner.get_weights()

    def get_weights(self) -> dict[str, Any]:
        return self.learner.get_weights()

    def state_dict(self) -> dict[str, Any]:
        return self.learner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state)


class EvalActor:
    """Ray shell of `Evaluator` (periodic evaluations run beside training)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.evaluator = Evaluator(spec, env_kwargs=node_env_kwargs(spec))

    def run(self, weights: dict[str, Any], episodes: int, seed: int, record: int) -> EvalResult:
        return self.evaluator.run(weights, episodes, seed=seed, record=record)
