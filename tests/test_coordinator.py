"""The coordinator as plain code: lag, order, restarts, drops, resume, evaluation schedule.

Test doubles stand in for the components (a worker that counts, a learner that counts
versions) behind the serial backend, so each test runs in milliseconds and no Ray starts.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from rlmpc.system.backend import (
    EVALUATOR,
    FINAL_EVALUATOR,
    LEARNER,
    REAL_SHARD,
    VIRTUAL_SHARD,
    ComponentDied,
    ComponentFailed,
    RestoreNeeded,
    SerialBackend,
    actor_name,
)
from rlmpc.system.coordinator import Coordinator, Schedule
from rlmpc.system.records import (
    CollectResult,
    EpisodeStats,
    EvalResult,
    Filming,
    FragmentMeta,
    Weights,
)


def episodes(n: int, value: float) -> EpisodeStats:
    return EpisodeStats(np.full(n, value), np.ones(n, np.int64), np.ones(n, bool),
                        np.zeros(n, np.int64), {"extra": np.full(n, value)})  # fmt: skip


class World:
    """The doubles' shared record: every collect and train call, in order."""

    def __init__(self, deaths: dict[int, list[int]] | None = None) -> None:
        self.collects: list[tuple[int, int, int, int]] = []  # actor, index, attempt, version
        self.trains: list[tuple[list[int], int]] = []  # actors in order, min_version
        self.evals: list[tuple[str, int]] = []
        self.films: list[Filming | None] = []  # what each evaluation was asked to film
        self.built: list[tuple[str, int]] = []
        self.restores: list[tuple[int, bytes]] = []  # actor, snapshot
        self.restore_deaths: dict[int, int] = {}  # actor -> its restore calls that die
        self.deaths = deaths or {}  # actor -> its collect calls (1-based) that die


class Worker:
    def __init__(self, world: World, actor: int, restarts: int) -> None:
        self.world, self.actor, self.calls, self.restored = world, actor, 0, None
        world.built.append((actor_name(actor), restarts))

    def collect(self, fid, steps, weights, version, snapshot):
        self.calls += 1
        n = sum(1 for c in self.world.collects if c[0] == self.actor) + 1
        if n in self.world.deaths.get(self.actor, []):
            self.world.deaths[self.actor].remove(n)
            raise ComponentDied(actor_name(self.actor), "killed")
        self.world.collects.append((self.actor, fid.index, fid.attempt, version))
        assert weights.policy["version"] == version  # the weights of the version it names
        meta = FragmentMeta(fid, version, steps * 2, steps * 6)
        blob = f"{self.actor}@{fid.index}".encode() if snapshot else None
        return CollectResult(meta, episodes(1, float(fid.index)), blob)

    def snapshot(self):
        return f"{self.actor}@start".encode()

    def restore(self, blob):
        if self.world.restore_deaths.get(self.actor, 0) > 0:
            self.world.restore_deaths[self.actor] -= 1
            raise ComponentDied(actor_name(self.actor), "killed while restoring")
        self.restored = blob
        self.world.restores.append((self.actor, blob))


class Learner:
    def __init__(self, world: World) -> None:
        self.world, self.version = world, 0

    def train(self, metas, min_version):
        assert all(m.version >= min_version for m in metas)
        self.world.trains.append(([m.fid.actor for m in metas], min_version))
        self.version += 1
        return {"version": float(self.version)}, self.get_weights()

    def get_weights(self):
        return Weights({"version": self.version})

    def state_dict(self):
        return {"version": self.version}

    def load_state_dict(self, state):
        self.version = state["version"]


class Shard:
    def prune(self, index):
        return 0


class Evaluator:
    def __init__(self, world: World, name: str) -> None:
        self.world, self.name = world, name

    def evaluate(self, weights, n, seed, record, film=None):
        self.world.evals.append((self.name, weights.policy["version"]))
        self.world.films.append(film)
        return EvalResult("toy", episodes(n, float(weights.policy["version"])), [])


class Observer:
    def __init__(self) -> None:
        self.rows, self.events, self.checkpoints, self.evaluations = [], [], [], []

    def log(self, row):
        self.rows.append(row)

    def event(self, message):
        self.events.append(message)

    def evaluated(self, result, iteration, env_steps):
        self.evaluations.append(
            (len(self.rows), iteration, env_steps, len(result.episodes.returns))
        )

    def checkpoint(self, state):
        self.checkpoints.append(state)


def system(world: World, actors: int = 2) -> SerialBackend:
    factories = {
        LEARNER: lambda r: Learner(world),
        REAL_SHARD: lambda r: Shard(),
        VIRTUAL_SHARD: lambda r: Shard(),
        EVALUATOR: lambda r: Evaluator(world, EVALUATOR),
        FINAL_EVALUATOR: lambda r: Evaluator(world, FINAL_EVALUATOR),
    }
    for i in range(actors):
        factories[actor_name(i)] = lambda r, i=i: Worker(world, i, r)
    return SerialBackend(factories)


def run(world: World, **schedule) -> tuple[Coordinator, Observer, EvalResult | None]:
    s = Schedule(**{"iterations": 4, "fragment_len": 5, "num_actors": 2, **schedule})
    observer = Observer()
    coordinator = Coordinator(s, system(world, s.num_actors), observer)
    return coordinator, observer, coordinator.run()


@pytest.fixture(autouse=True)
def quick():
    start = time.perf_counter()
    yield
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("lag", [0, 1, 2])
def test_policy_lag_bounds_the_weights_fragments_are_collected_with(lag):
    world = World()
    _, obs, _ = run(world, iterations=5, max_policy_lag=lag)
    # fragment i is collected with the newest weights when it is submitted: i - lag (at least 0)
    assert [(a, i, v) for a, i, _, v in world.collects] == [
        (a, i, max(0, i - lag)) for i in range(5) for a in range(2)
    ]
    assert [r["policy_lag"] for r in obs.rows] == [min(i, lag) for i in range(5)]
    # the learner is told the oldest version it may take, and learns in actor order
    assert world.trains == [([0, 1], i - lag) for i in range(5)]
    assert [r["env_steps"] for r in obs.rows] == [20 * i for i in range(1, 6)]


def test_a_dead_actor_is_restarted_and_replayed_from_its_start():
    world = World(deaths={1: [2]})  # actor 1's second collect (fragment 1) dies
    _, obs, _ = run(world, iterations=4, max_policy_lag=2)  # with two fragments in flight
    assert (actor_name(1), 1) in world.built  # rebuilt once, as a restarted instance
    assert world.restores == [(1, b"1@start")]  # back to its state before fragment 0
    again = [c for c in world.collects if c[0] == 1 and c[2] == 1]
    # fragment 0 again (learned on already: dropped) with its weights, then those in flight
    assert [(c[1], c[3]) for c in again] == [(0, 0), (1, 0), (2, 0)]
    assert [r["env_steps"] for r in obs.rows] == [20, 40, 60, 80]  # nothing lost
    assert [t[0] for t in world.trains] == [[0, 1]] * 4
    assert obs.rows[-1]["actor_restarts"] == 1 and obs.rows[-1]["actors_live"] == 2
    assert any("actor 1 died" in e and "1 fragment(s) replayed" in e for e in obs.events)


def test_an_actor_dying_after_a_checkpoint_replays_from_that_checkpoint():
    world = World(deaths={0: [6]})  # fragment 5 of actor 0; checkpoint after iteration 4
    _, obs, _ = run(world, iterations=8, checkpoint_every=4)
    assert world.restores == [(0, b"0@3")]  # its state after fragment 3, the checkpoint's
    again = [(c[1], c[3]) for c in world.collects if c[0] == 0 and c[2] == 1]
    assert again == [(4, 3), (5, 4)]  # 4 replayed (learned on already), 5 was in flight
    assert [r["env_steps"] for r in obs.rows] == [20 * i for i in range(1, 9)]


@pytest.mark.parametrize("core", [LEARNER, REAL_SHARD, EVALUATOR])
def test_a_dead_core_component_asks_for_a_restore(core):
    world = World()
    backend = system(world)
    if core == LEARNER:
        backend._factories[LEARNER] = lambda r: Dying(Learner(world), "train", 3)
    elif core == REAL_SHARD:
        backend._factories[REAL_SHARD] = lambda r: Dying(Shard(), "prune", 3)
    else:
        backend._factories[EVALUATOR] = lambda r: Dying(Evaluator(world, EVALUATOR), "evaluate", 1)
    s = Schedule(iterations=6, fragment_len=5, num_actors=2, eval_every=2)
    coordinator = Coordinator(s, backend, Observer())
    with pytest.raises(RestoreNeeded) as err:
        coordinator.run()
    assert err.value.components == [core]


class Dying:
    """A component whose ``method``'s ``n``-th call dies (its process is gone)."""

    def __init__(self, inner, method: str, n: int) -> None:
        self.inner, self.method, self.n, self.calls = inner, method, n, 0

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name != self.method:
            return attr

        def call(*args):
            self.calls += 1
            if self.calls == self.n:
                raise ComponentDied(name, "killed")
            return attr(*args)

        return call


def test_a_checkpoint_carries_the_evaluation_in_flight_and_resume_starts_it_again():
    whole_world = World()
    _, whole, _ = run(whole_world, iterations=6, eval_every=4, checkpoint_every=2)
    world = World()
    _, part, _ = run(world, iterations=6, eval_every=4, checkpoint_every=2, stop_after=6)
    state = part.checkpoints[-2]  # iteration 4: the evaluation of version 4 is in flight
    assert state.iteration == 4
    assert state.pending_eval == {"due": 6, "env_steps": 80, "version": 4, "film": False}
    assert 4 in state.inflight_weights
    s = Schedule(iterations=6, fragment_len=5, num_actors=2, eval_every=4, checkpoint_every=2)
    observer = Observer()
    resumed = Coordinator(s, system(world), observer)
    resumed.restore(state)
    resumed.run()
    assert observer.rows[-1]["eval/reward"] == whole.rows[-1]["eval/reward"] == 4.0


def test_an_actor_that_keeps_dying_is_dropped_and_the_run_goes_on():
    world = World(deaths={1: [2]})
    _, obs, _ = run(world, iterations=4, max_policy_lag=2, max_actor_failures=0)
    assert [r["actors_live"] for r in obs.rows] == [2, 1, 1, 1]
    assert [r["env_steps"] for r in obs.rows] == [20, 30, 40, 50]  # one actor's worth after
    assert obs.rows[-1]["lost_fragments"] == 2
    assert world.trains[1:] == [([0], -1), ([0], 0), ([0], 1)]
    assert any("actor 1 failed 1 times" in e and "dropped" in e for e in obs.events)


def test_when_every_actor_is_gone_the_run_stops_naming_it():
    with pytest.raises(RuntimeError, match="every rollout actor has failed"):
        run(World(deaths={0: [1]}), num_actors=1, max_actor_failures=0)


def test_a_failing_learner_is_reported_as_the_learner():
    world = World()
    backend = system(world)
    backend._factories[LEARNER] = lambda r: (_ for _ in ()).throw(ValueError("bad config"))
    coordinator = Coordinator(Schedule(4, 5, 2), backend, Observer())
    with pytest.raises(ComponentFailed) as err:
        coordinator.run()
    assert err.value.component == LEARNER and isinstance(err.value.cause, ValueError)
    assert world.collects == []  # no actor was blamed (or even asked)


def test_resume_from_a_checkpoint_continues_exactly():
    whole_world = World()
    _, whole, _ = run(whole_world, iterations=6, checkpoint_every=2)
    world = World()
    _, part, _ = run(world, iterations=6, checkpoint_every=2, stop_after=3)
    state = part.checkpoints[-1]
    assert state.iteration == 3 and state.snapshots == {0: b"0@2", 1: b"1@2"}
    assert state.inflight == {0: [(3, 2)], 1: [(3, 2)]}  # lag 1: fragment 3 was in flight
    s = Schedule(iterations=6, fragment_len=5, num_actors=2, checkpoint_every=2)
    observer, backend = Observer(), system(world)
    resumed = Coordinator(s, backend, observer)
    resumed.restore(state)
    resumed.run()
    assert [backend._live[actor_name(a)].restored for a in range(2)] == [b"0@2", b"1@2"]
    ignore = ("sps", "time")
    rows = lambda rs: [
        {k: v for k, v in r.items() if k not in ignore and "time/" not in k} for r in rs
    ]
    assert rows(part.rows) + rows(observer.rows) == rows(whole.rows)
    assert world.trains == whole_world.trains


def test_evaluations_are_logged_one_period_later_and_the_final_one_runs_at_the_end():
    world = World()
    _, obs, result = run(world, iterations=6, eval_every=2, eval_episodes=3, final_eval_episodes=4)
    with_eval = [r["iteration"] for r in obs.rows if "eval/success_rate" in r]
    assert with_eval == [4, 6]  # started after iterations 2 and 4
    assert [obs.rows[i - 1]["eval/reward"] for i in with_eval] == [2.0, 4.0]  # their weights
    assert obs.rows[3]["eval/env_steps"] == 40 and "eval/extra" in obs.rows[3]
    # each after the row holding its figures: (rows so far, its policy's iteration, steps, N)
    assert obs.evaluations == [(4, 2, 40, 3), (6, 4, 80, 3)]
    assert world.evals == [(EVALUATOR, 2), (EVALUATOR, 4), (FINAL_EVALUATOR, 6)]
    assert len(result.episodes.returns) == 4


def test_every_film_every_th_periodic_evaluation_and_the_final_one_film_an_episode():
    world = World()
    film = Filming(1, 20, 64)
    _, obs, _ = run(world, iterations=9, eval_every=2, final_eval_episodes=2, film=film,
                    film_every=2)  # fmt: skip
    # periodic evaluations after iterations 2, 4, 6, 8: the 2nd and the 4th film; the final one
    assert world.films == [None, film, None, film, film]
    world = World()
    run(world, iterations=5, eval_every=2, final_eval_episodes=2, film=None, film_every=1)
    assert world.films == [None, None, None]  # nothing to film with: no video frames


def test_an_env_needing_cluster_resources_evaluates_last_on_the_evaluator_without_actors():
    world = World()
    coordinator, _, _ = run(world, final_eval_episodes=2, final_eval_on_evaluator=True)
    assert world.evals == [(EVALUATOR, 4)]
    with pytest.raises(ComponentDied):  # the actors were let go first
        coordinator.backend.get(coordinator.backend.call(actor_name(0), "restore", b""))


def test_an_actor_dying_while_being_restored_is_restored_again():
    whole_world, world = World(), World()
    _, whole, _ = run(whole_world, iterations=6, checkpoint_every=2)
    _, part, _ = run(world, iterations=6, checkpoint_every=2, stop_after=3)
    world.restore_deaths = {1: 1}
    s = Schedule(iterations=6, fragment_len=5, num_actors=2, checkpoint_every=2)
    observer = Observer()
    resumed = Coordinator(s, system(world), observer)
    resumed.restore(part.checkpoints[-1])
    resumed.run()
    assert world.restores == [(0, b"0@2"), (1, b"1@2")]
    assert any("actor 1 died while being restored" in e for e in observer.events)
    env_steps = lambda rows: [r["env_steps"] for r in rows]
    assert env_steps(part.rows) + env_steps(observer.rows) == env_steps(whole.rows)
    assert observer.rows[-1]["actor_restarts"] == 1
