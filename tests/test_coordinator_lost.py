"""The coordinator when an env's simulator does not come back in time
(`envs.base.SimulatorUnavailable` from a call): a lost fragment or a skipped evaluation, never
the end of the run. The doubles of `tests.test_coordinator`, behind the serial backend."""

from __future__ import annotations

import pytest

from envs.base import SimulatorUnavailable
from rlmpc.system.backend import (
    EVALUATOR,
    FINAL_EVALUATOR,
    ComponentDied,
    ComponentFailed,
    actor_name,
)
from rlmpc.system.coordinator import Coordinator, Schedule
from tests.test_coordinator import Evaluator, Observer, Worker, World, system


class Gone(SimulatorUnavailable):
    """What a CARLA env raises when its server stays away (`CarlaUnavailable` is one)."""


class FlakyWorker(Worker):
    """A worker whose n-th collect calls (1-based) fail with ``fail[actor]``'s error."""

    fail: dict[int, tuple[list[int], Exception]] = {}

    def collect(self, fid, steps, weights, version, snapshot):
        self.n = getattr(self, "n", 0) + 1
        calls, error = self.fail.get(self.actor, ([], None))
        if self.n in calls:
            raise error
        return super().collect(fid, steps, weights, version, snapshot)


class FlakyEvaluator(Evaluator):
    fails = 0

    def evaluate(self, weights, n, seed, record, film=None):
        if FlakyEvaluator.fails:
            FlakyEvaluator.fails -= 1
            raise Gone("the evaluator's server is away")
        return super().evaluate(weights, n, seed, record, film)


def run(fail: dict, actors: int = 2, evals: int = 0, **schedule):
    FlakyWorker.fail, FlakyEvaluator.fails = fail, evals
    world = World()
    backend = system(world, actors)
    for i in range(actors):
        backend._factories[actor_name(i)] = lambda r, i=i: FlakyWorker(world, i, r)
    backend._factories[EVALUATOR] = lambda r: FlakyEvaluator(world, EVALUATOR)
    backend._factories[FINAL_EVALUATOR] = lambda r: FlakyEvaluator(world, FINAL_EVALUATOR)
    s = Schedule(**{"iterations": 4, "fragment_len": 5, "num_actors": actors, **schedule})
    observer = Observer()
    coordinator = Coordinator(s, backend, observer)
    return coordinator, observer, world, coordinator.run()


def test_a_lost_fragment_is_counted_and_the_actor_goes_on():
    c, obs, world, _ = run({1: ([2], Gone("server 2003 away"))})  # actor 1, fragment 1
    rows = obs.rows
    assert [t[0] for t in world.trains] == [[0, 1], [0], [0, 1], [0, 1]]  # iteration 1: actor 0's
    assert [r["env_steps"] for r in rows] == [20, 30, 50, 70]
    assert rows[-1]["lost_fragments"] == 1 and rows[-1]["actors_live"] == 2
    assert rows[-1]["actor_restarts"] == 0 and c.env_failures == [0, 0]
    assert (actor_name(1), 1) not in world.built  # never rebuilt: it stayed alive
    assert any("actor 1 lost its fragment" in e and "server 2003 away" in e for e in obs.events)


def test_when_every_actor_lost_it_the_fragment_is_collected_again():
    c, obs, world, _ = run({0: ([2, 3], Gone("away"))}, actors=1)
    assert [r["env_steps"] for r in obs.rows] == [10, 20, 30, 40]  # nothing learned on less
    again = [(i, attempt) for a, i, attempt, _ in world.collects if i == 1]
    assert again == [(1, 2)]  # the third try (attempt 2) of fragment 1 came through
    assert obs.rows[-1]["lost_fragments"] == 2 and obs.rows[-1]["actors_live"] == 1


def test_an_actor_losing_fragments_past_max_actor_failures_is_dropped():
    c, obs, world, _ = run({1: (list(range(2, 20)), Gone("away"))}, max_actor_failures=2)
    assert obs.rows[-1]["actors_live"] == 1 and c.live == [0]
    assert [r["env_steps"] for r in obs.rows][-1] == 20 + 3 * 10  # actor 0 alone from then
    assert any("lost 3 fragments in a row" in e and "dropped" in e for e in obs.events)


def test_the_last_actor_lost_to_its_simulator_stops_the_run():
    with pytest.raises(ComponentDied, match="every rollout actor has failed"):
        run({0: (list(range(1, 30)), Gone("away"))}, actors=1, max_actor_failures=2)


def test_an_error_of_another_kind_still_stops_the_run():
    with pytest.raises(ComponentFailed) as err:
        run({1: ([2], ValueError("a bug"))})
    assert isinstance(err.value.cause, ValueError)


def test_a_periodic_evaluation_without_its_simulator_is_skipped():
    c, obs, world, _ = run({}, evals=1, iterations=6, eval_every=2)
    assert ["eval/reward" in r for r in obs.rows] == [False] * 5 + [True]  # the second one
    assert sum("periodic evaluation" in e and "skipped" in e for e in obs.events) == 1


def test_a_final_evaluation_without_its_simulator_is_tried_again():
    c, obs, world, result = run({}, evals=2, iterations=2, final_eval_episodes=3)
    assert result is not None and len(result.episodes.returns) == 3
    assert [e for e in obs.events if "final evaluation failed" in e][-1].endswith("attempt 3 of 3")


def test_a_final_evaluation_that_keeps_failing_stops_with_its_cause():
    with pytest.raises(ComponentFailed) as err:
        run({}, evals=3, iterations=2, final_eval_episodes=2)
    assert isinstance(err.value.cause, SimulatorUnavailable)
