"""The Ray backend: the components as Ray actors, on an embedded local Ray or a cluster.

```
RolloutActor ×N ──fragments (object refs)──> ReplayShard "real" / ReplayShard "virtual"
      ^                                                   │ refs
      │ weights ref, version                              v
 coordinator <──metrics, weights── LearnerActor (GPU when given) ──ray.get──> fragment arrays
```

This module is the only place ``ray.remote`` is applied: to the shells of
`rlmpc.system.shells` (with the little only Ray needs: restart detection, the process and
node ids, a shell that could not be built handing its error to the driver as itself) and to
`ReplayShard`. The shards are named actors on the coordinator's node (a
lost worker node costs its actors' fragments, not the replay); the others find them by
name, so no actor is built from another actor's handle (Ray could not restart it from
arguments that live in the object store). The learner and the evaluator prefer the
coordinator's node; the final evaluation runs in this process unless the env's envs need
cluster resources (CARLA servers), then on the evaluator once the rollout actors are gone.
Inside a placement group (a Ray Tune trial of `rlmpc.reproduce`, which reserves the
learner's and the actors' bundles with the trial) every component is placed in that group
instead, so a trial never takes resources reserved for another.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import ray
import torch
from ray._private import state as ray_state  # the actor table; no public API without a dashboard
from ray.exceptions import RayActorError, RayTaskError
from ray.util import get_current_placement_group
from ray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

import envs
from envs.registry import EnvSpec
from rlmpc.system.backend import (
    EVALUATOR,
    FINAL_EVALUATOR,
    LEARNER,
    REAL_SHARD,
    VIRTUAL_SHARD,
    ComponentDied,
    ComponentFailed,
    actor_name,
)
from rlmpc.system.records import FragmentMeta, RealArrays, VirtualArrays
from rlmpc.system.replay import ReplayShard
from rlmpc.system.shells import EvalShell, LearnerShell, LearnerSpec, RolloutShell
from rlmpc.system.worker import WorkerSpec


def init_ray(address: str | None, num_cpus: float, gpu: bool) -> None:
    """Join the given cluster ($RAY_ADDRESS, 'auto'), or start an embedded local Ray that
    declares this machine's GPUs (torch's count) when ``gpu`` (a component wants one)."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    # user envs named MODULE:ATTRIBUTE were imported from these directories; the local Ray's
    # worker processes inherit this environment, so they import them too (on a cluster the
    # job's working directory or an installed package does: docs/custom_env.md)
    roots = envs.registry.module_roots()
    if roots:
        paths = [*roots, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    # a fresh embedded Ray enables token authentication for itself and says so at every
    # start; nothing to act on for a Ray that lives and dies with this process
    auth = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level, auth.level = auth.level, logging.ERROR
    try:
        ray.init(
            address="local",  # a fresh embedded Ray, even when a cluster runs on this machine
            num_cpus=max(os.cpu_count() or 1, math.ceil(num_cpus)),
            num_gpus=max(torch.cuda.device_count(), 1) if gpu else 0,
            include_dashboard=False,
            object_store_memory=512 * 1024**2,
            log_to_driver=True,
            logging_level=logging.WARNING,
        )
    finally:
        auth.setLevel(level)


class RayShards:
    """`rlmpc.system.shells.Shards` on Ray: the two named shard actors."""

    def __init__(self, real: str, virtual: str) -> None:
        self.names = (real, virtual)
        self._handles: tuple[Any, Any] | None = None

    def _shards(self) -> tuple[Any, Any]:
        if self._handles is None:
            self._handles = tuple(ray.get_actor(n) for n in self.names)
        return self._handles

    def add(self, meta: FragmentMeta, real: RealArrays, virtual: VirtualArrays | None) -> None:
        real_shard, virtual_shard = self._shards()
        adds = [real_shard.add.remote(meta, real)]
        if virtual is not None:
            adds.append(virtual_shard.add.remote(meta, virtual))
        ray.get(adds)

    def take(self, metas: list[FragmentMeta],
             min_version: int) -> tuple[list[RealArrays], list[VirtualArrays]]:  # fmt: skip
        real_shard, virtual_shard = self._shards()
        fids = [m.fid for m in metas]
        reals = ray.get([r[0] for r in ray.get(real_shard.take.remote(fids, min_version))])
        vfids = [m.fid for m in metas if m.virtual_samples > 0]
        virtuals = []
        if vfids:
            virtuals = ray.get(
                [r[0] for r in ray.get(virtual_shard.take.remote(vfids, min_version))]
            )
        return reals, virtuals


class _Built:
    """An actor whose shell could not be built (its env's server away, its town missing, a bad
    argument) stays up holding the error, and every call of its shell raises it: the driver
    gets it as itself (a ``RayTaskError`` whose ``cause`` keeps its type and fields), where
    Ray's own report of a failed constructor keeps only its text."""

    _error: Exception | None = None

    def _build(self, build: Any) -> None:
        try:
            build()
        except Exception as err:  # handed to the driver by the calls below
            self._error = err

    def _ready(self) -> None:
        if self._error is not None:
            raise self._error.with_traceback(None)


class RolloutActor(_Built, RolloutShell):
    """A rollout shell as a Ray actor; a restarted one draws fresh random streams. ``env``
    is the env's registry entry (an env registered outside `envs` is known here too)."""

    def __init__(self, actor_id: int, spec: WorkerSpec, shards: tuple[str, str],
                 env: EnvSpec) -> None:  # fmt: skip
        envs.registry.ensure(env)
        with warnings.catch_warnings():  # Ray's own use of a deprecated property
            warnings.simplefilter("ignore")
            restarted = ray.get_runtime_context().was_current_actor_reconstructed
        offset = os.getpid() if restarted else 0
        self._build(lambda: RolloutShell.__init__(self, actor_id, spec, RayShards(*shards), offset))

    def collect(self, *args: Any) -> Any:
        self._ready()
        return super().collect(*args)

    def snapshot(self) -> Any:
        self._ready()
        return super().snapshot()

    def restore(self, snapshot: Any) -> None:
        self._ready()
        super().restore(snapshot)

    def close(self) -> None:
        if self._error is None:
            super().close()

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


class EvalActor(_Built, EvalShell):
    def __init__(self, spec: WorkerSpec, env: EnvSpec) -> None:
        envs.registry.ensure(env)
        self._build(lambda: EvalShell.__init__(self, spec))

    def evaluate(self, *args: Any) -> Any:
        self._ready()
        return super().evaluate(*args)

    def pid(self) -> int:
        return os.getpid()


class LearnerActor(LearnerShell):
    def __init__(self, spec: LearnerSpec, shards: tuple[str, str]) -> None:
        super().__init__(spec, RayShards(*shards))

    def pid(self) -> int:
        return os.getpid()


class ShardActor(ReplayShard):
    def pid(self) -> int:
        return os.getpid()


@dataclass(frozen=True)
class RayPlacement:
    """What the Ray scheduler is told: the actors' resources and restarts."""

    actor_cpus: float = 1.0
    actor_gpus: float = 0.0
    """each rollout actor's GPU share (`RunConfig.actor_gpus`): actors on one GPU by Ray's
    accounting, placed on a GPU node of a cluster"""
    actor_resources: dict[str, float] | None = None
    max_restarts: int = 10
    eval_resources: dict[str, float] | None = None
    """what the evaluator needs (the env's per-env resources for its one env); None: it
    stays near the coordinator"""


class _Call:
    def __init__(self, component: str, ref: Any) -> None:
        self.component, self.ref = component, ref


class _LocalCall(_Call):
    def __init__(self, component: str, value: Any = None, error: Exception | None = None) -> None:
        super().__init__(component, None)
        self.value, self.error = value, error


class RayBackend:
    """`rlmpc.system.backend.Backend` on an initialised Ray (see the module docstring)."""

    def __init__(self, worker: WorkerSpec, learner: LearnerSpec, num_actors: int,
                 eval_worker: WorkerSpec, final_eval_worker: WorkerSpec,
                 placement: RayPlacement) -> None:  # fmt: skip
        run = uuid.uuid4().hex[:8]
        shards = (f"rlmpc-{run}-real", f"rlmpc-{run}-virtual")
        here = ray.get_runtime_context().get_node_id()
        pinned = NodeAffinitySchedulingStrategy(here, soft=False)
        near: Any = NodeAffinitySchedulingStrategy(here, soft=True)
        group = get_current_placement_group()
        if group is not None:  # a Tune trial: everything in the trial's reserved bundles
            pinned = near = PlacementGroupSchedulingStrategy(group)
        Shard = ray.remote(ShardActor)
        shard = lambda name: Shard.options(name=name, num_cpus=0, scheduling_strategy=pinned)
        gpu = learner.device.startswith("cuda")
        self.handles: dict[str, Any] = {
            REAL_SHARD: shard(shards[0]).remote("real", put=ray.put),
            VIRTUAL_SHARD: shard(shards[1]).remote("virtual", put=ray.put),
            LEARNER: ray.remote(LearnerActor)
            .options(num_cpus=1, num_gpus=1 if gpu else 0, scheduling_strategy=near)
            .remote(replace(learner, device="cuda" if gpu else "cpu"), shards),
        }
        Actor = ray.remote(RolloutActor).options(
            num_cpus=placement.actor_cpus, num_gpus=placement.actor_gpus,
            resources=placement.actor_resources or None,
            max_restarts=placement.max_restarts, max_task_retries=0,
            scheduling_strategy=None if group is None else near,
        )  # fmt: skip
        env = envs.spec(worker.env)
        for i in range(num_actors):
            self.handles[actor_name(i)] = Actor.remote(i, worker, shards, env)
        res = placement.eval_resources
        self.handles[EVALUATOR] = (
            ray.remote(EvalActor)
            .options(
                num_cpus=0,
                resources=res,
                scheduling_strategy=None if res and group is None else near,
            )
            .remote(eval_worker, env)
        )
        self.final_eval_worker = final_eval_worker
        self.local: dict[str, Any] = {}

    def call(
        self, component: str, method: str, *args: Any, num_returns: int = 1
    ) -> _Call | tuple[_Call, ...]:
        if num_returns != 1:
            bound = getattr(self.handles[component], method).options(num_returns=num_returns)
            return tuple(_Call(component, ref) for ref in bound.remote(*args))
        if component == FINAL_EVALUATOR:  # in this process
            args = tuple(ray.get(a) if isinstance(a, ray.ObjectRef) else a for a in args)
            try:
                if component not in self.local:
                    self.local[component] = EvalShell(self.final_eval_worker)
                return _LocalCall(component, getattr(self.local[component], method)(*args))
            except Exception as err:  # handed to the caller of `get`
                return _LocalCall(component, error=ComponentFailed(component, err))
        return _Call(component, getattr(self.handles[component], method).remote(*args))

    def wait(self, calls: Sequence[_Call], num_returns: int = 1,
             timeout: float | None = None) -> list[_Call]:  # fmt: skip
        local = [c for c in calls if isinstance(c, _LocalCall)]
        if len(local) >= num_returns:
            return local[:num_returns]
        by_ref = {c.ref: c for c in calls if not isinstance(c, _LocalCall)}
        ready, _ = ray.wait(list(by_ref), num_returns=num_returns - len(local), timeout=timeout)
        return local + [by_ref[r] for r in ready]

    def get(self, call: _Call) -> Any:
        if isinstance(call, _LocalCall):
            if call.error is not None:
                raise call.error
            return call.value
        try:
            return ray.get(call.ref)
        except RayActorError as err:
            raise ComponentDied(call.component, err) from err
        except RayTaskError as err:
            raise ComponentFailed(call.component, err.cause or err) from err

    def keep(self, call: _Call) -> Any:
        if isinstance(call, _LocalCall):
            return self.get(call)
        return call.ref

    def put(self, value: Any) -> Any:
        return ray.put(value)

    def fetch(self, ref: Any) -> Any:
        return ray.get(ref)

    def restarted(self, component: str, timeout: float) -> bool:
        """Whether Ray brought the actor back within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ref = self.handles[component].pid.remote()
            ready, _ = ray.wait([ref], timeout=max(0.1, deadline - time.monotonic()))
            if not ready:
                return False
            try:
                ray.get(ready[0])
                return True
            except RayActorError:
                time.sleep(0.2)
        return False

    def dead(self, components: Sequence[str]) -> list[str]:
        """Those of ``components`` that Ray's control store (GCS) knows as dead or
        restarting. (Asked there, not by a call: a component busy with a long call, e.g.
        an evaluation, would not answer one.)"""
        out = []
        for c in components:
            handle = self.handles.get(c)
            if handle is None:
                continue
            info = ray_state.actors(actor_id=handle._actor_id.hex())
            if info.get("State") in ("DEAD", "RESTARTING"):
                out.append(c)
        return out

    def kill(self, component: str) -> None:
        """Kill the actor's process; Ray restarts it when its ``max_restarts`` allows."""
        handle = self.handles.get(component)
        if handle is not None:
            ray.kill(handle, no_restart=False)

    def drop(self, component: str) -> None:
        handle = self.handles.pop(component, None)
        if handle is not None:
            ray.kill(handle, no_restart=True)

    def close(self) -> None:
        for name in list(self.handles):
            self.drop(name)
