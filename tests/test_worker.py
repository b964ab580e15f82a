"""The rollout worker and the replay shard as plain classes (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learners.policy import NetworkConfig
from planners.costs import planner_config
from rlmpc.fragments import FragmentId, FragmentMeta
from rlmpc.replay import ReplayShard
from rlmpc.worker import RolloutWorker, WorkerSpec


def _spec(env: str = "acrobot", n_envs: int = 3, M: int = 4, K: int = 16) -> WorkerSpec:
    return WorkerSpec(env, n_envs, M, planner_config(env, num_samples=K), NetworkConfig(), seed=3)


@pytest.mark.parametrize("env", ["acrobot", "lunarlander", "racing"])
def test_fragment_shapes_and_virtual_data(env):
    spec = _spec(env)
    w = RolloutWorker(0, spec)
    T, B, M, H = 5, spec.n_envs, spec.num_candidates, spec.planner.planning_horizon
    real, virtual, result = w.collect(FragmentId(0, 0), T, None, 0)
    nobs, na = w.model.nobs, w.model.na
    assert real.obs.shape == real.next_obs.shape == (T, B, nobs)
    assert real.actions.shape == (T, B, na) and real.logp.shape == real.rewards.shape == (T, B)
    N = T * B * (M - 1)
    assert virtual.obs.shape == (N, nobs) and virtual.actions.shape == (N, na)
    assert virtual.path_obs.shape == (N, H + 1, nobs)
    assert virtual.path_rewards.shape == virtual.path_terminated.shape == (N, H)
    assert result.meta == FragmentMeta(FragmentId(0, 0), -1, T * B, N)
    # virtual samples sit at the real states: s_t repeated for the M-1 other candidates,
    # and the planned path starts at ψ(x_t) = s_t (eq. 6)
    np.testing.assert_array_equal(virtual.obs.reshape(T, B, M - 1, nobs)[:, :, 0], real.obs)
    np.testing.assert_allclose(virtual.path_obs[:, 0], virtual.obs, atol=1e-4, rtol=1e-4)
    # next_obs is the env's observation before any reset; otherwise obs[t+1]
    done = real.terminated | real.truncated
    np.testing.assert_array_equal(real.next_obs[:-1][~done[:-1]], real.obs[1:][~done[:-1]])
    # r̂ along the path is the model's reward of the planned transitions
    p = torch.as_tensor(virtual.path_obs)
    assert np.all(np.isfinite(virtual.path_rewards)) and torch.isfinite(p).all()
    # the executed candidate and the kept ones are distinct draws of the same policy
    assert not np.any(np.isin(virtual.actions.reshape(T, B, M - 1, na)[..., 0], real.actions[..., 0]))


def test_single_candidate_ships_no_virtual_data():
    w = RolloutWorker(0, _spec(M=1))
    real, virtual, result = w.collect(FragmentId(0, 0), 3, None, 0)
    assert virtual is None and result.meta.virtual_samples == 0 and real.obs.shape[:2] == (3, 3)


def test_episode_stats_add_up():
    """Every reward is accounted for: in the returns of ended episodes or in flight."""
    w = RolloutWorker(0, _spec(n_envs=2, K=8))
    total, ended = 0.0, 0
    for i in range(3):
        real, _, result = w.collect(FragmentId(i, 0), 200, None, 0)
        total += float(real.rewards.sum())
        ended += len(result.episodes.returns)
        assert np.all(result.episodes.lengths >= 1)
        assert np.all(result.episodes.returns <= -result.episodes.lengths)  # -1 or -51 a step
        total -= float(result.episodes.returns.sum())
    assert ended >= 2  # the 500-step time limit falls inside 600 steps for both envs
    assert total == pytest.approx(float(w.episodes.ret.sum()))


def test_weights_and_version_are_taken_at_fragment_boundaries():
    w = RolloutWorker(0, _spec())
    weights = {"policy": {k: v + 0.5 for k, v in w.policy.state_dict().items()}}
    _, _, result = w.collect(FragmentId(0, 0), 1, weights, version=7)
    assert result.meta.version == 7 and w.version == 7
    for k, v in w.policy.state_dict().items():
        torch.testing.assert_close(v, weights["policy"][k])


@pytest.mark.parametrize("env", ["acrobot", "racing"])
def test_snapshot_restore_replays_exactly(env):
    w = RolloutWorker(0, _spec(env, K=8))
    w.collect(FragmentId(0, 0), 4, None, 0)
    blob = w.collect(FragmentId(1, 0), 3, None, 0, snapshot=True)[2].snapshot
    a, va, ra = w.collect(FragmentId(2, 0), 6, None, 0)
    w.restore(blob)
    b, vb, rb = w.collect(FragmentId(2, 0), 6, None, 0)
    for x, y in zip((*a, *va), (*b, *vb), strict=True):
        np.testing.assert_array_equal(x, y)


def test_lunar_lander_restore_restarts_episodes():
    w = RolloutWorker(0, _spec("lunarlander", n_envs=2, K=8))
    blob = w.collect(FragmentId(0, 0), 3, None, 0, snapshot=True)[2].snapshot
    w.restore(blob)  # Box2D can't be pickled: the envs start new episodes, and acting goes on
    real, _, _ = w.collect(FragmentId(1, 0), 3, None, 0)
    assert np.all(np.isfinite(real.obs))


def test_replay_shard_take_prune_and_lag():
    shard = ReplayShard("real")
    metas = [FragmentMeta(FragmentId(i, a), version=i, steps=10, virtual_samples=30)
             for i in range(3) for a in range(2)]  # fmt: skip
    for m in metas:
        shard.add(m, {"payload": m.fid})
    got = shard.take([FragmentId(1, 1), FragmentId(1, 0)], min_version=1)
    assert [g[0]["payload"] for g in got] == [FragmentId(1, 1), FragmentId(1, 0)]
    with pytest.raises(KeyError):
        shard.take([FragmentId(1, 0)])
    with pytest.raises(ValueError, match="older than the lag bound"):
        shard.take([FragmentId(0, 0)], min_version=1)
    assert shard.prune(max_index=0) == 2
    assert shard.stats() == {"held": 2, "added": 6, "taken": 2, "pruned": 2}
