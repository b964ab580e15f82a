"""The coordinator: the training loop as plain code, over any `rlmpc.system.backend.Backend`.

Iteration ``i`` learns on the fragments meant for it (one per live actor, index ``i``),
while ``max_policy_lag`` further fragments per actor are in flight, so actors act with
weights at most that many versions old and never wait for the learner otherwise.
Fragments are learned on in actor order, so a run is reproducible: the same seed gives the
same ``metrics.jsonl`` on any backend. A checkpoint (`rlmpc.system.checkpoint.Checkpoint`)
holds what exact resumption needs: the learner, the counters, the weights of the fragments
in flight, the periodic evaluation in flight, and the actors' state at the end of the last
fragment learned on.

Failures (the methods under "recovery"):

* A rollout actor that dies, or stalls (no fragment for ``actor_timeout`` seconds: it is
  killed), is *replayed* (`Coordinator._replay`): restored to its snapshot at the newest
  checkpoint (or at the start of the run), it collects again, with the same weights, the
  fragments learned on since (their data is dropped; the shards prune it), then those it had
  in flight. Where the snapshots are exact the run goes on exactly as it would have without
  the death. An actor that keeps dying, or does not come back, is dropped
  (`Coordinator._actor_failed`).
* A rollout actor whose call failed because an env's simulator did not come back in time
  (`envs.base.SimulatorUnavailable`) loses that fragment (`Coordinator._fragment_lost`):
  counted, logged, the actor stays and goes on with its next fragments; one that loses
  ``max_actor_failures`` in a row is dropped.
* A dead core component (`rlmpc.system.backend.CORE`: the learner, a replay shard, the
  evaluator) raises `RestoreNeeded` (`Coordinator._core_check`): the caller
  (`rlmpc.run.train.Run`) restores the newest checkpoint in place.

The recovery state: ``base`` (per actor, the snapshot replays start from and the index of
the fragment it precedes) and ``history`` (per actor, the ``(index, version)`` of every
fragment submitted since). Evaluations are a composed object (`rlmpc.system.evaluations`);
a periodic evaluation whose env's simulator is unavailable is skipped, a final one tried again.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from envs.base import SimulatorUnavailable
from rlmpc.system.backend import (
    CORE,
    LEARNER,
    REAL_SHARD,
    VIRTUAL_SHARD,
    Backend,
    ComponentDied,
    ComponentFailed,
    RestoreNeeded,
    actor_name,
    brief,
)
from rlmpc.system.checkpoint import Checkpoint
from rlmpc.system.evaluations import Evaluations
from rlmpc.system.records import (
    FAULT_KINDS,
    CollectResult,
    EpisodeStats,
    EvalResult,
    Filming,
    FragmentId,
    FragmentMeta,
)


@dataclass(frozen=True)
class Schedule:
    """The loop's numbers (the run's config, `rlmpc.run.config.TrainConfig.schedule`)."""

    iterations: int
    fragment_len: int
    num_actors: int
    max_policy_lag: int = 1
    checkpoint_every: int = 10
    stop_after: int = 0
    max_actor_failures: int = 10
    actor_restart_timeout: float = 120.0
    actor_timeout: float = 600.0
    eval_every: int = 0
    eval_episodes: int = 10
    final_eval_episodes: int = 0
    first_eval_seed: int = 1_000_000
    final_eval_on_evaluator: bool = False
    """free the rollout actors and run the final evaluation on the evaluator (the env's envs
    need cluster resources, e.g. CARLA servers); else on a fresh local evaluator"""
    film: Filming | None = None
    """what the final evaluation films, and a filmed periodic evaluation (None: nothing)"""
    film_every: int = 0
    """film the k-th periodic evaluation (started after iteration k · eval_every) when k is a
    multiple of this; 0: none"""


class Observer(Protocol):
    """Where the coordinator's output goes (`rlmpc.run.train`: files, W&B, the console)."""

    def log(self, row: dict[str, Any]) -> None: ...

    def event(self, message: str) -> None: ...

    def evaluated(self, result: EvalResult, iteration: int, env_steps: int) -> None:
        """A periodic evaluation of ``iteration``'s policy, after the row holding its figures."""

    def checkpoint(self, state: Checkpoint) -> None: ...


@dataclass
class _Slot:
    """A fragment in flight: where it goes, which weights collect it, its call."""

    index: int
    version: int
    attempt: int
    call: Any = None


@dataclass
class Counters:
    iteration: int = 0
    env_steps: int = 0
    virtual_samples: int = 0
    episodes: int = 0
    episodes_faulted: int = 0
    actor_restarts: int = 0
    lost_fragments: int = 0
    recent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100))

    def plain(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if k != "recent"}


class Coordinator:
    """Runs a training run over ``backend`` (module docstring); output goes to ``observer``.

    ``record`` is what checkpoints carry besides the loop's state: the worker spec and the
    run's config (`Checkpoint.worker`, `Checkpoint.config`).
    """

    def __init__(self, schedule: Schedule, backend: Backend, observer: Observer,
                 record: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.s, self.backend, self.observer = schedule, backend, observer
        self.record = record or {}
        self.live = list(range(schedule.num_actors))
        self.failures = [0] * schedule.num_actors
        self.env_failures = [0] * schedule.num_actors  # fragments lost in a row, per actor
        self.slots: dict[int, collections.deque[_Slot]] = {
            a: collections.deque() for a in self.live
        }
        self.counters = Counters()
        self.weights: dict[int, Any] = {}  # version -> backend ref
        self.version = 0
        self.first_index = 0
        self.evals = Evaluations(schedule, backend, observer)
        # per actor: its snapshot and the index of the fragment it starts, and the
        # (index, version) of every fragment submitted since (what a replay collects again)
        self.base: dict[int, tuple[Any, int]] = {}
        self.history: dict[int, list[tuple[int, int]]] = {a: [] for a in self.live}
        self._prunes: list[Any] = []
        self._times: collections.deque = collections.deque(maxlen=11)

    # -- fragments in flight --
    def _checkpoint_due(self, index: int) -> bool:
        s = self.s
        last = index == s.iterations - 1
        stop = s.stop_after > 0 and index == self.first_index + s.stop_after - 1
        return last or stop or (index + 1) % s.checkpoint_every == 0

    def _submit(self, actor: int, slot: _Slot) -> None:
        fid = FragmentId(slot.index, actor, slot.attempt)
        slot.call = self.backend.call(
            actor_name(actor), "collect", fid, self.s.fragment_len, self.weights[slot.version],
            slot.version, self._checkpoint_due(slot.index),
        )  # fmt: skip

    def _submit_index(self, index: int) -> None:
        for a in self.live:
            slot = _Slot(index, self.version, 0)
            self.slots[a].append(slot)
            self.history[a].append((index, self.version))
            self._submit(a, slot)

    def _gather(self, index: int) -> dict[int, CollectResult]:
        """The fragment of every live actor for ``index`` (re-collecting after failures); an
        actor whose env lost its simulator has none (`_fragment_lost`), unless every
        actor lost theirs: those are collected again."""
        done: dict[int, CollectResult] = {}
        lost: dict[int, _Slot] = {}
        while True:
            waiting = {a: self.slots[a][0] for a in self.live if a not in done and a not in lost}
            if not waiting:
                if done or not lost:
                    return done
                for a, slot in lost.items():  # nothing to learn on: collect them again
                    slot.attempt += 1
                    self.slots[a].appendleft(slot)
                    self._submit(a, slot)
                lost.clear()
                continue
            calls = {id(s.call): a for a, s in waiting.items()}
            ready = self.backend.wait(
                [s.call for s in waiting.values()], num_returns=1, timeout=self.s.actor_timeout
            )
            if not ready:  # stalled: killed here, restarted and replayed when its call fails
                for a in waiting:
                    self.observer.event(
                        f"iteration {index}: {actor_name(a)} sent no fragment for "
                        f"{self.s.actor_timeout:g} s; killed as stalled"
                    )
                    self.backend.kill(actor_name(a))
                continue
            a = calls[id(ready[0])]
            try:
                result = self.backend.get(ready[0])
            except (ComponentDied, ComponentFailed) as err:
                self._core_check(err)  # a dead shard fails the actors' calls too
                if isinstance(err, ComponentDied):
                    self._actor_failed(a, err)
                elif isinstance(err.cause, SimulatorUnavailable):
                    slot = self._fragment_lost(a, err)
                    if slot is not None:
                        lost[a] = slot
                else:
                    raise
                continue
            slot = self.slots[a].popleft()
            assert slot.index == index, (slot.index, index)
            done[a] = result
            self.env_failures[a] = 0

    # -- checkpoints --
    def _checkpoint(self, results: dict[int, CollectResult]) -> None:
        b, c = self.backend, self.counters
        inflight = {s.version for q in self.slots.values() for s in q}
        pending = None
        if self.evals.pending is not None:
            _, due, steps, version, film = self.evals.pending
            pending = {"due": due, "env_steps": steps, "version": version, "film": film}
            inflight.add(version)
        self.observer.checkpoint(Checkpoint(
            counters=self.counters.plain(), recent=list(self.counters.recent),
            version=self.version, learner=b.get(b.call(LEARNER, "state_dict")),
            weights=b.fetch(self.weights[self.version]),
            inflight_weights={v: b.fetch(self.weights[v]) for v in sorted(inflight)},
            inflight={a: [(s.index, s.version) for s in q] for a, q in self.slots.items()},
            live=list(self.live),
            snapshots={a: r.snapshot for a, r in results.items() if r.snapshot is not None},
            pending_eval=pending, worker=self.record.get("worker"),
            config=self.record.get("config", {}),
        ))  # fmt: skip
        self._rebase({a: r.snapshot for a, r in results.items()}, c.iteration)

    def restore(self, state: Checkpoint) -> None:
        """Continue from a checkpoint: learner, counters, weights, actors, slots in flight."""
        b, c = self.backend, self.counters
        b.get(b.call(LEARNER, "load_state_dict", state.learner))
        for k, v in state.counters.items():
            setattr(c, k, v)
        c.recent.extend(state.recent)
        self.version = state.version
        self.weights = {v: b.put(w) for v, w in state.inflight_weights.items()}
        self.weights[self.version] = b.put(state.weights)
        for a in set(self.live) - set(state.live):
            self.live.remove(a)
            b.drop(actor_name(a))
        calls = {a: b.call(actor_name(a), "restore", blob) for a, blob in state.snapshots.items()}
        for a, call in calls.items():
            self._restored(a, call, state.snapshots[a])
        self._rebase(state.snapshots, c.iteration)
        for a, items in state.inflight.items():
            if a not in self.live:
                continue
            for index, version in items:
                slot = _Slot(index, version, 0)
                self.slots[a].append(slot)
                self.history[a].append((index, version))
                self._submit(a, slot)
        if state.pending_eval is not None:  # the evaluation in flight, started again
            p = state.pending_eval
            self.evals.start(self.weights[p["version"]], p["version"], p["due"], p["env_steps"],
                             bool(p.get("film", False)))  # fmt: skip
        self.observer.event(f"resumed at iteration {c.iteration}, {c.env_steps} env steps")

    # -- the loop --
    def run(self) -> EvalResult | None:
        """Train to the end (or ``stop_after`` iterations); the final evaluation, if any.
        `RestoreNeeded` when a core component died."""
        try:
            return self._run()
        except (ComponentDied, ComponentFailed) as err:
            self._core_check(err)
            raise

    def _run(self) -> EvalResult | None:
        s, c, b = self.s, self.counters, self.backend
        lag = s.max_policy_lag
        if not self.weights:  # a new run: the learner's initial weights, the actors' states
            first = b.call(LEARNER, "get_weights")
            b.get(first)  # a learner that cannot start fails here, as itself
            self.weights[0] = b.keep(first)
            calls = {a: b.call(actor_name(a), "snapshot") for a in self.live}
            self._rebase({a: self._first_snapshot(a, call) for a, call in calls.items()}, 0)
        self.first_index = c.iteration
        if not any(self.slots.values()):
            for index in range(c.iteration, min(c.iteration + max(lag, 1), s.iterations)):
                self._submit_index(index)
        self._times.append((time.perf_counter(), c.env_steps))
        while c.iteration < s.iterations:
            i = c.iteration
            t0 = time.perf_counter()
            results = self._gather(i)
            waited = time.perf_counter() - t0
            if lag >= 1 and i + lag < s.iterations:
                self._submit_index(i + lag)
            metas = [results[a].meta for a in sorted(results)]
            call, weights = b.call(LEARNER, "train", metas, self.version - lag, num_returns=2)
            metrics = b.get(call)  # the weights stay in the object store, for the actors
            self.version += 1
            self.weights[self.version] = b.keep(weights)
            live_versions = {slot.version for q in self.slots.values() for slot in q}
            live_versions.update(v for h in self.history.values() for _, v in h)  # replays
            if self.evals.pending is not None:
                live_versions.add(self.evals.pending.version)
            live_versions.add(self.version)
            self.weights = {v: w for v, w in self.weights.items() if v in live_versions}
            for call in self._prunes:  # last iteration's: a dead shard shows here
                b.get(call)
            self._prunes = [b.call(REAL_SHARD, "prune", i), b.call(VIRTUAL_SHARD, "prune", i)]
            if lag == 0 and i + 1 < s.iterations:
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
            metrics.update(self._faults(results))
            row, evaluated = self.evals.finished(c.iteration)
            self._log({**metrics, **row}, metas)
            if evaluated is not None:
                self.observer.evaluated(*evaluated)
            if s.eval_every and c.iteration % s.eval_every == 0 and c.iteration < s.iterations:
                due = min(c.iteration + s.eval_every, s.iterations)
                film = bool(s.film_every) and (c.iteration // s.eval_every) % s.film_every == 0
                self.evals.start(self.weights[self.version], self.version, due, c.env_steps, film)
            if any(r.snapshot is not None for r in results.values()):
                self._checkpoint(results)
            if s.stop_after and c.iteration - self.first_index >= s.stop_after:
                break
        if c.iteration < s.iterations or s.final_eval_episodes == 0:
            return None
        return self.evals.final(self.weights[self.version], self.live)

    def _faults(self, results: dict[int, CollectResult]) -> dict[str, float]:
        """Count the episodes the fragments dropped to failing env steps, an event line per
        actor that had any; this iteration's counts by kind (``faults/*``)."""
        for a in sorted(results):
            faults = results[a].episodes.faults
            if faults:
                self.counters.episodes_faulted += sum(faults.values())
                kinds = ", ".join(f"{k}: {faults.get(k, 0)}" for k in FAULT_KINDS)
                self.observer.event(
                    f"iteration {self.counters.iteration}: {actor_name(a)} dropped "
                    f"{sum(faults.values())} episode(s) to faults ({kinds})"
                )
        return {
            f"faults/{k}": sum(r.episodes.faults.get(k, 0) for r in results.values())
            for k in FAULT_KINDS
        }

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
            "episodes_faulted": c.episodes_faulted,
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
        self.observer.log(row)

    # -- recovery --
    def _replay(self, actor: int) -> None:
        """Bring a restarted actor back to where it died: restore its base snapshot, collect
        again (data dropped: learned on already) the fragments since, then those in flight."""
        slots, name = self.slots[actor], actor_name(actor)
        first, attempt = self._first_inflight(actor), self.failures[actor]
        if actor in self.base:  # none: a checkpoint of an earlier layout, without snapshots
            blob, start = self.base[actor]
            self.backend.call(name, "restore", blob)
        for index, version in self.history[actor] if actor in self.base else ():
            if start <= index < first:  # results dropped; the shards prune them
                fid = FragmentId(index, actor, attempt)
                self.backend.call(name, "collect", fid, self.s.fragment_len,
                                  self.weights[version], version, False)  # fmt: skip
        for slot in slots:
            slot.attempt = attempt
            self._submit(actor, slot)

    def _first_inflight(self, actor: int) -> int:
        slots = self.slots[actor]
        return slots[0].index if slots else self.counters.iteration

    def _core_check(self, error: Exception) -> None:
        """Raise `RestoreNeeded` when a core component is dead (``error`` is what surfaced);
        not when a constructor failed (Ray's ``actor_init_failed``): it would fail again."""
        if getattr(getattr(error, "cause", None), "actor_init_failed", False):
            return
        dead = self.backend.dead(CORE)
        if dead:
            raise RestoreNeeded(dead, error) from error

    def _actor_failed(self, actor: int, error: ComponentDied) -> None:
        """Log, then re-collect everything the actor had in flight (the backend restarts it)."""
        self.failures[actor] += 1
        self.counters.actor_restarts += 1
        slots = self.slots[actor]
        # let every call of the dead instance settle before resubmitting, in order
        self.backend.wait([s.call for s in slots], num_returns=len(slots), timeout=60)
        name, s = actor_name(actor), self.s
        back = self.failures[actor] <= s.max_actor_failures and self.backend.restarted(
            name, s.actor_restart_timeout
        )
        if not back:
            self._drop(actor, error, f"iteration {self.counters.iteration}: {name} failed "
                       f"{self.failures[actor]} times ({brief(error.cause)}) and is not back")  # fmt: skip
            return
        start = self.base[actor][1] if actor in self.base else self._first_inflight(actor)
        replayed = sum(start <= i < self._first_inflight(actor) for i, _ in self.history[actor])
        self.observer.event(
            f"iteration {self.counters.iteration}: {name} died ({brief(error.cause)}); restarted "
            f"from its state at iteration {start}, {replayed} fragment(s) replayed, "
            f"{len(slots)} collected again"
        )
        self._replay(actor)

    def _fragment_lost(self, actor: int, error: ComponentFailed) -> Any:
        """The actor's call failed with its env's simulator unavailable: its fragment is lost
        (counted, logged) and the actor goes on. Returns the lost slot; None when the actor
        has now lost ``max_actor_failures`` fragments in a row and is dropped."""
        slot, name = self.slots[actor].popleft(), actor_name(actor)
        self.counters.lost_fragments += 1
        self.env_failures[actor] += 1
        lost = self.env_failures[actor]
        if lost <= self.s.max_actor_failures:
            self.observer.event(
                f"iteration {slot.index}: {name} lost its fragment ({brief(error.cause)}); the "
                f"actor stays, its env tries its simulator again ({lost} fragment(s) lost in a row)"
            )
            return slot
        self._drop(actor, error, f"iteration {slot.index}: {name} lost {lost} fragments in a "
                   f"row to an unavailable simulator ({brief(error.cause)})")  # fmt: skip
        return None

    def _drop(self, actor: int, error: ComponentFailed, why: str) -> None:
        """Give up on ``actor``: its fragments in flight are lost, the run goes on with the
        others (logged: ``why``); raises ComponentDied when it was the last one."""
        name, slots = actor_name(actor), self.slots[actor]
        self.live.remove(actor)
        self.counters.lost_fragments += len(slots)
        slots.clear()
        self.backend.drop(name)
        self.observer.event(f"{why}; dropped, {len(self.live)} actors left")
        if not self.live:
            raise ComponentDied(
                name, f"{error.cause!r}; every rollout actor has failed, stopping the run"
            ) from error

    def _rebase(self, snapshots: dict[int, Any], index: int) -> None:
        """Replays start from these snapshots, taken before fragment ``index``."""
        for a, blob in snapshots.items():
            if blob is not None:
                self.base[a] = (blob, index)
                self.history[a] = [(i, v) for i, v in self.history[a] if i >= index]

    def _first_snapshot(self, actor: int, call: Any) -> Any:
        """An actor's snapshot at the start of a run (its ``snapshot`` call); None, and the
        actor dropped, when it does not answer within ``actor_restart_timeout``: after an
        in-place restore with no checkpoint to load, an actor whose node is gone (a lost CARLA
        node) waits for a place that never comes, and the run waited with it."""
        return self.backend.get(call) if self._answers(actor, call, "started") else None

    def _answers(self, actor: int, call: Any, what: str) -> bool:
        """Whether ``call`` completes within ``actor_restart_timeout``; if not, the actor is
        dropped (``what``: what it was not, for the log)."""
        name, timeout = actor_name(actor), self.s.actor_restart_timeout
        if self.backend.wait([call], timeout=timeout):
            return True
        why = f"{name} not {what} within --actor-restart-timeout {timeout:g} s"
        self._drop(actor, ComponentDied(name, why), why)
        return False

    def _restored(self, actor: int, call: Any, blob: Any) -> None:
        """Wait for an actor's ``restore``; if the actor died meanwhile, restore it again once
        it is back (or drop it, as `_actor_failed` would). One that does not answer within
        ``actor_restart_timeout`` is dropped too: after an in-place restore the backend builds
        every actor again, and one whose node is gone (a lost CARLA node) waits for a place
        that never comes; without the bound the restore, and the run, waited with it."""
        name, s = actor_name(actor), self.s
        while True:
            if not self._answers(actor, call, "restored"):
                return
            try:
                self.backend.get(call)
                return
            except ComponentDied as err:
                self.failures[actor] += 1
                self.counters.actor_restarts += 1
                back = self.failures[actor] <= s.max_actor_failures and self.backend.restarted(
                    name, s.actor_restart_timeout
                )
                if not back:
                    self.live.remove(actor)
                    self.slots[actor].clear()
                    self.backend.drop(name)
                    self.observer.event(f"{name} died while being restored ({brief(err.cause)}); "
                                        f"dropped, {len(self.live)} actors left")  # fmt: skip
                    if not self.live:
                        raise
                    return
                self.observer.event(
                    f"{name} died while being restored ({brief(err.cause)}); restored again"
                )
                call = self.backend.call(name, "restore", blob)
