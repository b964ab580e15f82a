"""The coordinator's failure handling (`rlmpc.system.coordinator.Coordinator` inherits it).

* A rollout actor that dies, or stalls and is killed, is *replayed* (`Recovery._replay`):
  restored to its snapshot at the newest checkpoint (or at the start of the run), it
  collects again, with the same weights, the fragments learned on since (their data is
  dropped; the shards prune it), then those it had in flight. Where the snapshots are exact
  the run goes on exactly as it would have without the death. An actor that keeps dying, or
  does not come back, is dropped (`Recovery._actor_failed`).
* A rollout actor whose call failed because an env's simulator did not come back in time
  (`envs.base.SimulatorUnavailable`) loses that fragment (`Recovery._fragment_lost`): counted,
  logged, the actor stays and goes on with its next fragments (its env tries the simulator
  again first); one that loses ``max_actor_failures`` in a row is dropped.
* A dead core component (`rlmpc.system.backend.CORE`) raises `RestoreNeeded`
  (`Recovery._core_check`): the run restores its newest checkpoint in place
  (`rlmpc.run.train.Run`).

The state it keeps (set up by the coordinator): ``base`` (per actor, the snapshot replays
start from and the index of the fragment it precedes) and ``history`` (per actor, the
``(index, version)`` of every fragment submitted since).
"""

from __future__ import annotations

import collections
from typing import Any

from rlmpc.system.backend import (
    CORE,
    Backend,
    ComponentDied,
    ComponentFailed,
    RestoreNeeded,
    actor_name,
    brief,
)
from rlmpc.system.records import FragmentId


class Recovery:
    """Replays of actors, restores of actors, and the check for dead core components.

    Uses the coordinator's state (annotated here) and its ``_submit``."""

    s: Any  #: the `Schedule`
    backend: Backend
    observer: Any
    counters: Any
    live: list[int]
    failures: list[int]
    env_failures: list[int]
    slots: dict[int, collections.deque]
    weights: dict[int, Any]
    base: dict[int, tuple[Any, int]]
    history: dict[int, list[tuple[int, int]]]

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
