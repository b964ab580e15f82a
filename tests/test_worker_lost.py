"""The rollout worker when an env loses its simulator: the episode it was in is dropped and
counted as ``lost``; an env whose next episode cannot start fails the call and is started
first thing in the next one; an evaluation plays a lost episode again from its seed. A toy
env that loses its "server" on cue stands in for CARLA; no Ray starts here."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import envs
from envs.base import SimulatorUnavailable
from learners.policy import NetworkConfig
from rlmpc.system.records import EpisodeStats, FragmentId
from rlmpc.system.worker import RolloutWorker, WorkerSpec
from tests import toy_env


class LossyToyEnv(toy_env.ToyEnv):
    """The toy env; ``lose_at``: its step counts (over its life) at which the server is lost;
    ``unavailable``: how many resets after a loss raise before the server is back."""

    lose_at: set[int] = set()
    unavailable = 0

    def __init__(self) -> None:
        super().__init__()
        self.life, self.lost, self.seeds = 0, False, []

    def reset(self, *, seed=None, options=None):
        if self.lost and LossyToyEnv.unavailable:
            LossyToyEnv.unavailable -= 1
            raise SimulatorUnavailable("the toy's server is away")
        self.lost = False
        self.seeds.append(seed)
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self.life += 1
        if self.life in self.lose_at:
            self.lost = True
            info = {"in_danger": False, "is_success": False, "server_lost": True}
            return self.state.astype(np.float32), 0.0, False, True, info
        return super().step(action)


SPEC = dataclasses.replace(
    toy_env.SPEC, name="toy-lossy", id="rlmpc-tests/ToyLossy-v0", entry_point=LossyToyEnv,
    episode_lost=lambda info: bool(info.get("server_lost")),
)  # fmt: skip


@pytest.fixture
def lossy():
    envs.register(SPEC)
    yield
    envs.registry._REGISTRY.pop(SPEC.name, None)
    envs.registry.ENV_IDS.pop(SPEC.name, None)
    LossyToyEnv.lose_at, LossyToyEnv.unavailable = set(), 0


def worker(n_envs: int = 2) -> RolloutWorker:
    spec = WorkerSpec("toy-lossy", n_envs, 3, toy_env.ToyPlannerConfig(),
                      NetworkConfig(hidden_sizes=(16,)), seed=4)  # fmt: skip
    return RolloutWorker(0, spec)


def test_a_lost_episode_is_dropped_and_a_server_still_away_fails_the_call(lossy):
    w = worker()
    w.envs[1].unwrapped.lose_at = {5}
    LossyToyEnv.unavailable = 2  # the two resets after the loss fail
    with pytest.raises(SimulatorUnavailable):
        w.collect(FragmentId(0, 0), 8, None, 0)
    assert w.acting.pending == {1: True}  # env 1 starts an episode first thing, next call
    with pytest.raises(SimulatorUnavailable):
        w.collect(FragmentId(0, 0, 1), 8, None, 0)
    real, _, res = w.collect(FragmentId(0, 0, 2), 8, None, 0)
    assert w.acting.pending == {} and real.obs.shape[:2] == (8, 2)
    assert np.isfinite(real.obs).all() and np.isfinite(real.rewards).all()
    assert res.episodes.faults == {"lost": 1}  # the lost episode, counted once
    _, _, res = w.collect(FragmentId(1, 0), 40, None, 0)
    assert res.episodes.faults == {}


def test_the_lost_step_is_a_zero_reward_truncation_at_s_t(lossy):
    w = worker()
    w.envs[0].unwrapped.lose_at = {3}
    real, _, res = w.collect(FragmentId(0, 0), 6, None, 0)
    t = 2  # the third step
    assert real.truncated[t, 0] and not real.terminated[t, 0] and real.rewards[t, 0] == 0
    np.testing.assert_array_equal(real.next_obs[t, 0], real.obs[t, 0])
    ended = EpisodeStats.concat([res.episodes])
    assert ended.faults == {"lost": 1} and len(ended.returns) == 0  # dropped, not ended


def test_an_evaluation_plays_a_lost_episode_again_from_its_seed(lossy):
    w = worker(n_envs=1)
    env = w.envs[0].unwrapped
    env.lose_at, env.seeds = {env.life + 10}, []
    result = w.evaluate(None, episodes=2, seed=500)
    assert env.seeds == [500, 500, 501]  # the lost episode 500 played again, then 501
    assert len(result.episodes.returns) == 2 and result.episodes.faults == {"lost": 1}
