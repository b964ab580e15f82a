"""The system: Ray rollout actors, two replay shards, a central learner, and the driver loop.

```
RolloutActor ×N ──fragments (object refs)──> ReplayShard "real" / ReplayShard "virtual"
      ^                                                   │ refs
      │ weights ref, version                              v
   driver  <──metrics, weights── LearnerActor (GPU when given) ──ray.get──> fragment arrays
```

This module is the only place ``ray.remote`` is applied, to the thin shells of
`rlmpc.system.shells` around the plain classes (`RolloutWorker`, `Learner`, `Evaluator`) and to
`ReplayShard`.

The driver runs iteration ``i`` on the fragments meant for it (one per live actor, index
``i``) and keeps ``max_policy_lag`` further fragments in flight while the learner updates,
so actors act with weights at most that many versions old. Fragments are learned on in
actor order, so a run is reproducible, and a checkpoint holds what exact resumption needs:
the learner, the counters, the weights of the fragments in flight, and the actors' state
at the end of the last fragment learned on. A rollout actor that dies (its process killed,
its node lost) is restarted by Ray; the driver logs the event and collects its fragments
again, so a crash costs the episodes in flight, not the run.
"""

from __future__ import annotations

import collections
import json
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
import yaml
from ray.exceptions import RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import envs
from rlmpc.run.config import TrainConfig
from rlmpc.run.evaluate import Evaluator, format_table, plot_traces, summarize
from rlmpc.run.runlog import RunLogger, plot_curves
from rlmpc.system.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from rlmpc.system.learner import resolve_device
from rlmpc.system.records import CollectResult, EpisodeStats, FragmentId, FragmentMeta
from rlmpc.system.replay import ReplayShard
from rlmpc.system.shells import EvalActor, LearnerActor, RolloutActor
from rlmpc.system.worker import WorkerSpec
from rlmpc.tools.results import run_meta

# ---- the driver --------------------------------------------------------------------------


@dataclass
class _Slot:
    """A fragment in flight: where it goes, which weights collect it, its Ray ref."""

    index: int
    version: int
    attempt: int
    ref: Any = None


@dataclass
class _Counters:
    iteration: int = 0
    env_steps: int = 0
    virtual_samples: int = 0
    episodes: int = 0
    actor_restarts: int = 0
    lost_fragments: int = 0
    recent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100))


def worker_spec(cfg: TrainConfig) -> WorkerSpec:
    return WorkerSpec(
        env=cfg.run.env,
        n_envs=cfg.run.envs_per_actor,
        num_candidates=cfg.run.num_candidates,
        planner=cfg.planner,
        networks=cfg.networks,
        seed=cfg.run.seed,
        device=cfg.run.actor_device,
        threads=cfg.run.threads,
        virtual_terminal=cfg.run.virtual_terminal,
    )


def init_ray(cfg: TrainConfig, address: str | None) -> None:
    """Join the given cluster ($RAY_ADDRESS, 'auto'), or start an embedded local Ray."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    need = cfg.run.num_actors * cfg.run.actor_cpus + 2
    ray.init(
        address="local",  # a fresh embedded Ray, even when a cluster runs on this machine
        num_cpus=max(os.cpu_count() or 1, math.ceil(need)),
        num_gpus=1 if resolve_device(cfg.run.learner_device).startswith("cuda") else 0,
        include_dashboard=False,
        object_store_memory=512 * 1024**2,
        log_to_driver=True,
    )


class Driver:
    """Runs a training run on an initialised Ray (see the module doc for the loop)."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, resume: bool) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        run = cfg.run
        self.spec = worker_spec(cfg)
        # CARLA racing has racing's spaces; probing it would need a server on this node
        self.carla = run.env == "carla-racing"
        probe = envs.make("racing" if self.carla else run.env).unwrapped.planner_model()
        self.nobs, self.na = probe.nobs, probe.na
        # shards live on the driver's node (the head under `ray submit`): losing a worker node
        # must cost its actors' fragments, not the replay; the learner prefers it too
        here = ray.get_runtime_context().get_node_id()
        pinned = NodeAffinitySchedulingStrategy(here, soft=False)
        near = NodeAffinitySchedulingStrategy(here, soft=True)
        Shard = ray.remote(ReplayShard).options(num_cpus=0, scheduling_strategy=pinned)
        self.real_shard = Shard.remote("real", put=ray.put)
        self.virtual_shard = Shard.remote("virtual", put=ray.put)
        gpu = resolve_device(run.learner_device).startswith("cuda")
        self.learner = (
            ray.remote(LearnerActor)
            .options(num_cpus=1, num_gpus=1 if gpu else 0, scheduling_strategy=near)
            .remote(replace(cfg, run=replace(run, learner_device="cuda" if gpu else "cpu")),
                    self.nobs, self.na, self.real_shard, self.virtual_shard)
        )  # fmt: skip
        Actor = ray.remote(RolloutActor).options(
            num_cpus=run.actor_cpus,
            resources=run.actor_resource_dict or None,
            max_restarts=run.max_actor_failures,
            max_task_retries=0,
        )
        self.actors = [
            Actor.remote(i, self.spec, self.real_shard, self.virtual_shard)
            for i in range(run.num_actors)
        ]
        self.live = list(range(run.num_actors))
        self.failures = [0] * run.num_actors
        self.slots: dict[int, collections.deque[_Slot]] = {
            a: collections.deque() for a in self.live
        }
        self.evaluator = (
            ray.remote(EvalActor)
            .options(
                num_cpus=0,
                # a CARLA evaluator drives one server of a carla node; the others stay near
                resources={"carla": 1} if self.carla else None,
                scheduling_strategy=None if self.carla else near,
            )
            .remote(
                replace(
                    self.spec, n_envs=1 if self.carla else min(10, run.eval_episodes), device="cpu"
                )
            )  # fmt: skip
        )
        self.pending_eval: tuple[Any, int] | None = None
        self.counters = _Counters()
        self.weights_by_version: dict[int, Any] = {}
        self.version = 0
        self.logger = RunLogger(
            run_dir, cfg.to_dict(), cfg.wandb, run.total_env_steps, run_dir.name,
            progress=run.progress, resume=resume,
        )  # fmt: skip

    # -- fragments in flight --
    def _checkpoint_due(self, index: int) -> bool:
        run = self.cfg.run
        last = index == self.cfg.iterations - 1
        stop = run.stop_after > 0 and index == self.first_index + run.stop_after - 1
        return last or stop or (index + 1) % run.checkpoint_every == 0

    def _submit(self, actor: int, slot: _Slot) -> None:
        fid = FragmentId(slot.index, actor, slot.attempt)
        slot.ref = self.actors[actor].collect.remote(
            fid, self.cfg.fragment_len, self.weights_by_version[slot.version], slot.version,
            self._checkpoint_due(slot.index),
        )  # fmt: skip

    def _submit_index(self, index: int) -> None:
        for a in self.live:
            slot = _Slot(index, self.version, 0)
            self.slots[a].append(slot)
            self._submit(a, slot)

    def _actor_failed(self, actor: int, error: Exception) -> None:
        """Log, then re-collect everything the actor had in flight (Ray restarts it)."""
        self.failures[actor] += 1
        self.counters.actor_restarts += 1
        slots = self.slots[actor]
        # let every call of the dead instance settle before resubmitting, in order
        ray.wait([s.ref for s in slots], num_returns=len(slots), timeout=60)
        back = self.failures[actor] <= self.cfg.run.max_actor_failures and self._restarted(actor)
        if not back:
            self.live.remove(actor)
            self.counters.lost_fragments += len(slots)
            slots.clear()
            ray.kill(self.actors[actor], no_restart=True)
            self.logger.event(
                f"iteration {self.counters.iteration}: actor {actor} failed "
                f"{self.failures[actor]} times ({type(error).__name__}) and is not back; "
                f"dropped, {len(self.live)} actors left"
            )
            if not self.live:
                raise RuntimeError("every rollout actor has failed; stopping the run") from error
            return
        self.logger.event(
            f"iteration {self.counters.iteration}: actor {actor} died ({type(error).__name__}); "
            f"Ray restarts it, {len(slots)} fragment(s) collected again"
        )
        for slot in slots:
            slot.attempt += 1
            self._submit(actor, slot)

    def _restarted(self, actor: int) -> bool:
        """Whether Ray brought the actor back within ``actor_restart_timeout`` seconds."""
        deadline = time.monotonic() + self.cfg.run.actor_restart_timeout
        while time.monotonic() < deadline:
            ref = self.actors[actor].pid.remote()
            ready, _ = ray.wait([ref], timeout=max(0.1, deadline - time.monotonic()))
            if not ready:
                return False
            try:
                ray.get(ready[0])
                return True
            except RayActorError:
                time.sleep(0.2)
        return False

    def _gather(self, index: int) -> dict[int, CollectResult]:
        """The fragment of every live actor for ``index`` (re-collecting after failures)."""
        done: dict[int, CollectResult] = {}
        while True:
            waiting = {a: self.slots[a][0] for a in self.live if a not in done}
            if not waiting:
                return done
            refs = {s.ref: a for a, s in waiting.items()}
            ready, _ = ray.wait(list(refs), num_returns=1)
            a = refs[ready[0]]
            try:
                result = ray.get(ready[0])
            except RayActorError as e:
                self._actor_failed(a, e)
                continue
            slot = self.slots[a].popleft()
            assert slot.index == index, (slot.index, index)
            done[a] = result

    # -- checkpoints --
    def _checkpoint(self, results: dict[int, CollectResult]) -> None:
        inflight = sorted({s.version for q in self.slots.values() for s in q})
        state = {
            "learner": {
                **ray.get(self.learner.state_dict.remote()),
                "weights": ray.get(self.weights_by_version[self.version]),
            },
            "counters": {k: v for k, v in vars(self.counters).items() if k != "recent"},
            "recent": list(self.counters.recent),
            "version": self.version,
            "inflight_weights": {v: ray.get(self.weights_by_version[v]) for v in inflight},
            "inflight": {a: [(s.index, s.version) for s in q] for a, q in self.slots.items()},
            "snapshots": {a: r.snapshot for a, r in results.items() if r.snapshot is not None},
            "worker_spec": self.spec,
            "config": self.cfg.to_dict(),
        }
        save_checkpoint(self.run_dir, self.counters.iteration, state)

    def _restore(self) -> None:
        state = load_checkpoint(self.run_dir)
        ray.get(self.learner.load_state_dict.remote(state["learner"]))
        for k, v in state["counters"].items():
            setattr(self.counters, k, v)
        self.counters.recent.extend(state["recent"])
        self.version = state["version"]
        self.weights_by_version = {v: ray.put(w) for v, w in state["inflight_weights"].items()}
        self.weights_by_version[self.version] = ray.put(state["learner"]["weights"])
        ray.get([self.actors[a].restore.remote(b) for a, b in state["snapshots"].items()])
        self.resume_inflight = state["inflight"]
        self.logger.event(f"resumed at iteration {self.counters.iteration}, "
                          f"{self.counters.env_steps} env steps")  # fmt: skip

    # -- the loop --
    def run(self, resume: bool) -> dict[str, Any] | None:
        cfg, run, c = self.cfg, self.cfg.run, self.counters
        lag = run.max_policy_lag
        if resume:
            self._restore()
        else:
            self.weights_by_version[0] = self.learner.get_weights.remote()
        self.first_index = c.iteration
        if resume and self.resume_inflight:
            for a, items in self.resume_inflight.items():
                for index, version in items:
                    slot = _Slot(index, version, 0)
                    self.slots[a].append(slot)
                    self._submit(a, slot)
        else:
            for index in range(c.iteration, min(c.iteration + max(lag, 1), cfg.iterations)):
                self._submit_index(index)
        self._times = collections.deque([(time.perf_counter(), c.env_steps)], maxlen=11)
        while c.iteration < cfg.iterations:
            i = c.iteration
            t0 = time.perf_counter()
            results = self._gather(i)
            waited = time.perf_counter() - t0
            if lag >= 1 and i + lag < cfg.iterations:
                self._submit_index(i + lag)
            metas = [results[a].meta for a in sorted(results)]
            metrics, weights = ray.get(self.learner.train.remote(metas, self.version - lag))
            self.version += 1
            self.weights_by_version[self.version] = ray.put(weights)
            live_versions = {s.version for q in self.slots.values() for s in q} | {self.version}
            self.weights_by_version = {
                v: w for v, w in self.weights_by_version.items() if v in live_versions
            }
            self.real_shard.prune.remote(i)
            self.virtual_shard.prune.remote(i)
            if lag == 0 and i + 1 < cfg.iterations:
                self._submit_index(i + 1)
            c.iteration += 1
            c.env_steps += sum(m.steps for m in metas)
            c.virtual_samples += sum(m.virtual_samples for m in metas)
            episodes = EpisodeStats.concat([results[a].episodes for a in sorted(results)])
            c.episodes += len(episodes.returns)
            c.recent.extend(zip(episodes.returns.tolist(), episodes.success.tolist(), strict=True))
            metrics["time/wait_actors_s"] = waited
            metrics["time/collect_s"] = float(np.mean([r.seconds for r in results.values()]))
            metrics["time/iteration_s"] = time.perf_counter() - t0
            self._log({**metrics, **self._poll_eval()}, metas)
            if (
                run.eval_every
                and c.iteration % run.eval_every == 0
                and c.iteration < cfg.iterations
            ):
                self._start_eval(run.eval_episodes)
            if any(r.snapshot is not None for r in results.values()):
                self._checkpoint(results)
            if run.stop_after and c.iteration - self.first_index >= run.stop_after:
                break
        if c.iteration < cfg.iterations or run.final_eval_episodes == 0:
            return None
        return self._final_eval()

    def _rate(self, env_steps: int) -> float:
        """Env steps per second over the last (up to) 10 iterations."""
        self._times.append((time.perf_counter(), env_steps))
        (t0, s0), (t1, s1) = self._times[0], self._times[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else float("nan")

    def _log(self, metrics: dict[str, float], metas: list[FragmentMeta]) -> None:
        c = self.counters
        recent = list(c.recent)
        row = {
            "iteration": c.iteration,
            "env_steps": c.env_steps,
            "virtual_samples": c.virtual_samples,
            "episodes": c.episodes,
            "episode_return": float(np.mean([r for r, _ in recent])) if recent else float("nan"),
            "success_rate": float(np.mean([s for _, s in recent])) if recent else float("nan"),
            "sps": self._rate(c.env_steps),
            "policy_lag": float(np.mean([self.version - 1 - m.version for m in metas])),
            "actors_live": len(self.live),
            "actor_restarts": c.actor_restarts,
            "lost_fragments": c.lost_fragments,
            "time": time.time(),
        }
        for k, v in metrics.items():
            row.setdefault(k, v)
        self.logger.log(row)

    def _start_eval(self, episodes: int) -> None:
        if self.pending_eval is None:
            ref = self.evaluator.run.remote(
                self.weights_by_version[self.version], episodes, self.cfg.run.first_eval_seed, 0
            )
            self.pending_eval = (ref, self.counters.env_steps)

    def _poll_eval(self) -> dict[str, float]:
        """The finished periodic evaluation's figures (``eval/*``), or nothing yet."""
        if self.pending_eval is None or not ray.wait([self.pending_eval[0]], timeout=0)[0]:
            return {}
        ref, steps = self.pending_eval
        self.pending_eval = None
        try:
            s = summarize(self.cfg.run.env, ray.get(ref).episodes)
        except RayActorError as e:  # its node went away: skip this one, the next one retries
            self.logger.event(f"periodic evaluation lost ({type(e).__name__}); skipped")
            return {}
        row = {"eval/env_steps": steps}
        for k in ("success_rate", "steps", "reward", "distance_to_pad", "collision_or_offtrack"):
            if s.get(k):
                row[f"eval/{k}"] = s[k]["mean"]
                row[f"eval/{k}_std"] = s[k]["std"]
        return row

    def _final_eval(self) -> dict[str, Any]:
        run = self.cfg.run
        weights = self.weights_by_version[self.version]
        if self.carla:  # on the evaluator actor, next to a CARLA server the actors now free
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
            result = ray.get(
                self.evaluator.run.remote(weights, run.final_eval_episodes, run.first_eval_seed, 3)
            )
            model = None
        else:
            spec = replace(self.spec, n_envs=min(10, run.final_eval_episodes), device="cpu")
            evaluator = Evaluator(spec)
            result = evaluator.run(
                ray.get(weights), run.final_eval_episodes, seed=run.first_eval_seed, record=3
            )
            model = evaluator.worker.model
        summary = summarize(run.env, result.episodes)
        summary["env_steps"] = self.counters.env_steps
        summary["seed"], summary["eval_seed"] = run.seed, run.first_eval_seed
        (self.run_dir / "eval.json").write_text(json.dumps(summary, indent=2))
        plot_traces(result, self.run_dir / "eval_episodes.png", model)
        self.logger.summary({f"final/{k}": v["mean"] for k, v in summary.items()
                             if isinstance(v, dict)})  # fmt: skip
        return summary

    def close(self) -> None:
        self.logger.close()


def new_run_dir(cfg: TrainConfig) -> Path:
    name = cfg.run.run_name or time.strftime(f"{cfg.run.env}-%Y%m%d-%H%M%S")
    path = Path(cfg.run.runs_dir) / name
    if path.exists() and latest_checkpoint(path) is not None:
        raise ValueError(
            f"run directory {path} already holds a run; use --resume {path} or another --run-name"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def train(cfg: TrainConfig, resume: Path | None = None, ray_address: str | None = None,
          argv: list[str] | None = None) -> Path:  # fmt: skip
    """Train (or continue) a run; returns its directory. Ray is started here if needed.

    ``argv`` (the command line, for the record) goes to ``meta.json`` with the git commit and
    the machine; the wall time is added when the run ends."""
    if resume is not None:
        run_dir = resume
        if latest_checkpoint(run_dir) is None:
            raise ValueError(f"--resume {run_dir}: no checkpoint in {run_dir / 'checkpoints'}")
    else:
        run_dir = new_run_dir(cfg)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    meta_file = run_dir / "meta.json"
    meta = json.loads(meta_file.read_text()) if resume is not None and meta_file.is_file() else {}
    meta.setdefault("invocations", []).append(run_meta(argv if argv is not None else []))
    meta.update(meta["invocations"][0])
    meta_file.write_text(json.dumps(meta, indent=1))
    started = time.perf_counter()
    # the final evaluation runs here: the same thread count as the actors, the same numbers
    torch.set_num_threads(cfg.run.threads)
    init_ray(cfg, ray_address)
    driver = Driver(cfg, run_dir, resume=resume is not None)
    try:
        summary = driver.run(resume=resume is not None)
    finally:
        driver.close()
    meta["wall_time_s"] = meta.get("wall_time_s", 0.0) + time.perf_counter() - started
    meta_file.write_text(json.dumps(meta, indent=1))
    curves = plot_curves(run_dir)
    if summary is None and driver.counters.iteration >= cfg.iterations:
        print(f"finished; run directory: {run_dir.resolve()}")
    elif summary is None:
        print(f"stopped after iteration {driver.counters.iteration}; continue with "
              f"`python launch.py --resume {run_dir}`")  # fmt: skip
    else:
        print(format_table(summary))
        print(f"run directory: {run_dir.resolve()}  (eval.json, eval_episodes.png, "
              f"{curves.name if curves else 'no curves'}, metrics.jsonl, checkpoints/)")  # fmt: skip
    return run_dir
