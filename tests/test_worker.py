"""The rollout worker and the replay shard as plain classes (no Ray)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from envs import planner_config
from learners.policy import NetworkConfig
from planners.mppi import PlannedControls
from rlmpc.system.records import FragmentId, FragmentMeta, Weights
from rlmpc.system.replay import ReplayShard
from rlmpc.system.worker import RolloutWorker, WorkerSpec


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
    assert not np.any(
        np.isin(virtual.actions.reshape(T, B, M - 1, na)[..., 0], real.actions[..., 0])
    )


@pytest.mark.parametrize("env", ["acrobot", "lunarlander"])
@pytest.mark.parametrize("terminal", ["reward", "exclude"])
def test_virtual_data_are_each_steps_plan_rescored(env, terminal):
    """Rolled out once per fragment, the virtual data are what each step's full `plan` gives:
    the kept candidates' paths through ψ, r̂ of their transitions (plus the env's terminal
    reward on a transition into a terminal state, unless excluded), the model's termination."""
    w = RolloutWorker(0, replace(_spec(env, K=8), virtual_terminal=terminal))
    plans = []

    def plan_and_record(x, a, warm, *, generator):  # `plan`, for `_act`'s `plan_controls`
        plan = w.planner.plan(x, a, warm, generator=generator)
        plans.append((a, plan))
        return PlannedControls(plan.first, plan.controls, plan.weights)

    w.planner.plan_controls = plan_and_record
    T, B, M, H = 3, w.spec.n_envs, w.spec.num_candidates, w.horizon
    real, virtual, _ = w.collect(FragmentId(0, 0), T, None, 0)
    assert len(plans) == T
    for t, (a, plan) in enumerate(plans):
        chosen = (a == torch.as_tensor(real.actions[t])[:, None]).all(-1)  # [B, M]
        assert (chosen.sum(1) == 1).all()
        paths = plan.paths[~chosen].view(B, M - 1, H + 1, w.model.nx)  # candidate order
        seqs = plan.controls[~chosen].view(B, M - 1, H, w.model.nu)
        rows = slice(t * B * (M - 1), (t + 1) * B * (M - 1))
        np.testing.assert_array_equal(virtual.actions[rows], a[~chosen].numpy())
        expected = {
            "path_obs": w.model.observe(paths),
            "path_rewards": w.model.reward(paths[:, :, :-1], seqs)
            + (terminal == "reward") * w.model.terminal_reward(paths[:, :, 1:]),
        }
        for name, value in expected.items():
            np.testing.assert_allclose(
                getattr(virtual, name)[rows], value.flatten(0, 1).numpy(), rtol=1e-5, atol=1e-5
            )
        np.testing.assert_array_equal(
            virtual.path_terminated[rows], w.model.terminated(paths[:, :, 1:]).flatten(0, 1)
        )


def test_bench_worker_command_ends_with_key_value_lines(capsys):
    from rlmpc.bench import worker as bench_worker

    argv = ["--envs", "acrobot", "--n-envs", "2", "--steps", "2", "--repeats", "1"]
    figures = bench_worker.main(argv)
    key, value = capsys.readouterr().out.strip().splitlines()[-1].split(": ")
    assert key == "worker_acrobot_B2_env_steps_per_s" and list(figures) == [key]
    assert float(value) > 0


def test_single_candidate_ships_no_virtual_data():
    w = RolloutWorker(0, _spec(M=1))
    real, virtual, result = w.collect(FragmentId(0, 0), 3, None, 0)
    assert virtual is None and result.meta.virtual_samples == 0 and real.obs.shape[:2] == (3, 3)


@pytest.mark.parametrize("env", ["acrobot", "lunarlander"])
def test_weights_made_at_rho_zero_stop_the_virtual_data_and_leave_the_real_data_alone(env):
    """ρ travels with the weights (`Weights.rho`): at ρ = 0 no virtual sample is built, and
    since none of them draws anything random, the real fragments equal, bit for bit, those
    of a worker that builds them; weights made at ρ > 0 (or with ρ unknown) bring them back."""
    with_virtual, without = RolloutWorker(0, _spec(env)), RolloutWorker(0, _spec(env))
    policy = with_virtual.policy.state_dict()
    for i, rho in enumerate((0.0, 0.0, 0.3, None)):
        a, va, _ = with_virtual.collect(FragmentId(i, 0), 4, Weights(policy, rho=0.3), i)
        b, vb, result = without.collect(FragmentId(i, 0), 4, Weights(policy, rho=rho), i)
        for field in a._fields:
            x, y = getattr(a, field), getattr(b, field)
            assert (x is None and y is None) or np.array_equal(x, y), field
        if rho == 0.0:
            assert vb is None and result.meta.virtual_samples == 0
        else:
            assert result.meta.virtual_samples == len(va.obs) == len(vb.obs) > 0
            np.testing.assert_array_equal(va.path_obs, vb.path_obs)


@pytest.mark.parametrize("mode", ["fixed", "adaptive"])
def test_a_learner_ships_its_rho_and_at_rho_zero_leaves_virtual_fragments_out(mode):
    """`Learner.train` at ρ = 0 equals, bit for bit, a learner given no virtual fragments
    (what the workers send once the weights carry ρ = 0); its weights carry ρ."""
    from learners.ppo_loss import PPOConfig
    from learners.rho import InfluenceRatioConfig
    from rlmpc.system.learner import Learner

    w = RolloutWorker(0, _spec(n_envs=4))
    real, virtual, _ = w.collect(FragmentId(0, 0), 8, None, 0)
    ppo, nets = PPOConfig(n_steps=32, batch_size=16, n_epochs=2), NetworkConfig((16,), 2)
    make = lambda rho: Learner(w.model.nobs, w.model.na, ppo, nets,
                               InfluenceRatioConfig(mode=mode, rho0=rho), seed=1)  # fmt: skip
    given, none, positive = make(0.0), make(0.0), make(0.3)
    assert given.get_weights().rho == 0.0 and positive.get_weights().rho == 0.3
    m_given, m_none = given.train([real], [virtual]), none.train([real], [])
    assert m_given["virtual_samples"] == m_none["virtual_samples"] == 0
    a, b = given.get_weights(), none.get_weights()
    for k in a.policy:
        assert torch.equal(a.policy[k], b.policy[k]), k
    assert positive.train([real], [virtual])["virtual_samples"] == len(virtual.obs)


def test_bench_worker_times_a_rho_zero_twin(capsys):
    from rlmpc.bench import worker as bench_worker

    argv = ["--envs", "acrobot", "--n-envs", "2", "--steps", "2", "--repeats", "1", "--rho-zero"]
    figures = bench_worker.main(argv)
    assert list(figures) == [
        "worker_acrobot_B2_env_steps_per_s", "worker_acrobot_B2_rho0_env_steps_per_s",
        "worker_acrobot_B2_rho0_speedup",
    ]  # fmt: skip
    assert figures["worker_acrobot_B2_rho0_speedup"] == pytest.approx(
        figures["worker_acrobot_B2_rho0_env_steps_per_s"]
        / figures["worker_acrobot_B2_env_steps_per_s"]
    )


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
    assert total == pytest.approx(float(w.acting.episodes.ret.sum()))


def test_weights_and_version_are_taken_at_fragment_boundaries():
    w = RolloutWorker(0, _spec())
    weights = Weights(policy={k: v + 0.5 for k, v in w.policy.state_dict().items()})
    _, _, result = w.collect(FragmentId(0, 0), 1, weights, version=7)
    assert result.meta.version == 7 and w.version == 7
    for k, v in w.policy.state_dict().items():
        torch.testing.assert_close(v, weights.policy[k])


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


def test_value_terminal_cost_uses_the_shipped_critic():
    """Eq. (41) in the worker: -w_value V(ψ(x_H)) with the learner's value ensemble."""
    from learners.policy import build_networks

    spec = WorkerSpec("acrobot", 2, 3, planner_config("acrobot", num_samples=16, w_value=5.0),
                      NetworkConfig(hidden_sizes=(16,)), seed=0)  # fmt: skip
    w = RolloutWorker(0, spec)
    assert w.planner.terminal_cost is not None
    policy, values = build_networks(w.model.nobs, w.model.na, spec.networks)
    x = w._planner_states()
    a = torch.zeros(2, 3, w.model.na)
    noise = w.planner.sample_noise(2, x, torch.Generator().manual_seed(0))
    plans = []
    for scale in (0.0, 50.0):  # a flat critic (weights zeroed), then a steep one
        shipped = {k: v * scale if ".w" in k else v for k, v in values.state_dict().items()}
        w.set_weights(Weights(policy.state_dict(), shipped), version=1)
        for k, v in w.values.state_dict().items():
            torch.testing.assert_close(v, shipped[k])
        plans.append(w.planner.plan(x, a, w.acting.warm, noise=noise).controls)
    assert not torch.allclose(plans[0], plans[1])
    real, _, _ = w.collect(FragmentId(0, 0), 2, None, 1)  # and it acts with it
    assert np.all(np.isfinite(real.obs))
