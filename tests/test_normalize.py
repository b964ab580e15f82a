"""Observation normalisation and value scaling: twins of the running statistics, the targets
in the critic's units, output preservation, checkpoints, and Alg. 2 on normalised values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learners import InfluenceRatioConfig, NetworkConfig, PPOConfig, PPOLearner
from learners.normalize import ObsNormalizer, RunningMeanStd, ValueScale
from learners.policy import build_networks
from learners.rho import adaptive_rho_step
from tests.test_ppo import NA, NOBS, real_batch, virtual_batch

F64 = torch.float64
NORM = NetworkConfig(hidden_sizes=(8,), ensemble_size=3, normalize_obs=True, normalize_values=True)


def test_running_mean_std_merges_batches_exactly():
    """Merging batches of any sizes gives the mean and population variance of all rows."""
    rng = np.random.default_rng(0)
    rows = [rng.normal(3.0, 5.0, size=(n, 4)) for n in (1, 7, 100, 2)]
    stats = RunningMeanStd(4)
    for r in rows:
        stats.update(torch.as_tensor(r))
    every = np.concatenate(rows)
    np.testing.assert_allclose(stats.mean.numpy(), every.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.var.numpy(), every.var(0), rtol=1e-12)
    assert float(stats.count) == len(every)
    stats.update(torch.full((3, 4), float("nan")))  # non-finite rows are skipped
    assert float(stats.count) == len(every)


def test_obs_normalizer_is_the_identity_until_enabled_and_clips():
    obs = torch.tensor([[100.0, -3.0], [0.0, 1.0], [-50.0, 2.0]])
    off = ObsNormalizer(2, enabled=False)
    off.update(obs)
    assert torch.equal(off(obs), obs)
    on = ObsNormalizer(2, clip=1.5)
    assert torch.equal(on(obs[:1]), torch.tensor([[1.5, -1.5]]))  # mean 0, std 1: clipped
    on.update(obs)
    mean, std = obs.double().mean(0), obs.double().std(0, correction=0)
    expected = ((obs.double() - mean) / (std**2 + 1e-8).sqrt()).clamp(-1.5, 1.5)
    torch.testing.assert_close(on(obs), expected.float())


def test_one_normalizer_is_shared_by_the_policy_and_every_value_head():
    policy, values = build_networks(NOBS, NA, NORM)
    assert policy.normalizer is values.normalizer
    policy.normalizer.update(torch.randn(50, NOBS) * 7 + 2)
    obs = torch.randn(5, NOBS) * 7 + 2
    z = policy.normalizer(obs)
    torch.testing.assert_close(policy(obs), policy.mean_net(z))
    heads = values.heads(z).squeeze(-1).T + values.prior_values(obs)
    torch.testing.assert_close(values(obs), heads)


def test_value_scale_update_preserves_v_and_the_heads_fit_normalised_targets():
    """After `update` + `rescale_heads`, V on any state is unchanged (no prior: exactly)."""
    nets = NetworkConfig(hidden_sizes=(8,), ensemble_size=4, prior_scale=0.0, normalize_values=True)
    _, values = build_networks(NOBS, NA, nets)
    obs = torch.randn(20, NOBS)
    before = values.mean(obs)
    for targets in (torch.randn(64) * 300 + 1000, torch.randn(64) * 10 - 5):
        a, b = values.scale.update(targets)
        values.rescale_heads(a, b)
        torch.testing.assert_close(values.mean(obs), before, rtol=1e-5, atol=1e-3)
    g = torch.tensor([0.0, 1000.0])
    torch.testing.assert_close(values.scale.denormalize(values.scale.normalize(g)), g)
    off = ValueScale(enabled=False)
    assert off.update(g) == (1.0, 0.0) and torch.equal(off.normalize(g), g)


def _plain_gae(r, v, v_next, term, trunc, gamma, lam):
    """GAE by a plain loop over t, per env (the twin of `learners.targets.gae`)."""
    T, B = r.shape
    adv = np.zeros((T, B))
    for b in range(B):
        last = 0.0
        for t in reversed(range(T)):
            delta = r[t, b] + gamma * (1 - term[t, b]) * v_next[t, b] - v[t, b]
            last = delta + gamma * lam * (1 - term[t, b]) * (1 - trunc[t, b]) * last
            adv[t, b] = last
    return adv, adv + v


def test_normalised_value_targets_equal_a_plain_loop_twin():
    """The heads' targets: raw GAE returns with the denormalised critic, then standardised by
    the running mean and std of every real target so far (a plain numpy twin)."""
    cfg = PPOConfig(batch_size=16, n_epochs=1)
    lrn = PPOLearner(NOBS, NA, cfg, NORM, InfluenceRatioConfig(rho0=0.0), seed=0)
    seen = []
    for seed in range(3):
        real = real_batch(seed=seed)
        scaled = real._replace(rewards=real.rewards * 100.0 + 40.0)
        lrn.policy.normalizer.update(scaled.obs)
        with torch.no_grad():
            v = lrn.values.mean(scaled.obs).double().numpy()
            v_next = lrn.values.mean(scaled.next_obs).double().numpy()
        args = [t.double().numpy() for t in (scaled.rewards, scaled.terminated, scaled.truncated)]
        _, ret = _plain_gae(args[0], v, v_next, args[1], args[2], cfg.gamma, cfg.gae_lambda)
        seen.append(ret.reshape(-1))
        train, _, _ = lrn._real_targets(scaled)
        np.testing.assert_allclose(
            train.batch.returns.double().numpy(), ret.reshape(-1), rtol=1e-4, atol=1e-3
        )
        train, _ = lrn._scale_values(train, None)
        every = np.concatenate(seen)
        expected = (ret.reshape(-1) - every.mean()) / every.std()
        np.testing.assert_allclose(
            train.batch.returns.double().numpy(), expected, rtol=1e-4, atol=1e-4
        )


def test_normalisation_statistics_survive_a_checkpoint_round_trip():
    lrn = PPOLearner(NOBS, NA, PPOConfig(batch_size=16, n_epochs=2), NORM,
                     InfluenceRatioConfig(rho0=0.3), seed=0)  # fmt: skip
    for seed in range(2):
        real = real_batch(seed=seed)
        lrn.update(real._replace(obs=real.obs * 9 + 4, rewards=real.rewards * 50), virtual_batch())
    state = lrn.state_dict()
    fresh = PPOLearner(NOBS, NA, PPOConfig(batch_size=16, n_epochs=2), NORM,
                       InfluenceRatioConfig(rho0=0.3), seed=5)  # fmt: skip
    fresh.load_state_dict(state)
    for a, b in (
        (lrn.policy.normalizer, fresh.policy.normalizer),
        (lrn.values.scale, fresh.values.scale),
    ):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert torch.equal(x, y), name
    assert fresh.policy.normalizer is fresh.values.normalizer
    assert float(lrn.policy.normalizer.stats.count) == 2 * 8 * 4
    obs = torch.randn(6, NOBS) * 9 + 4
    assert torch.equal(lrn.policy(obs), fresh.policy(obs))
    assert torch.equal(lrn.values.mean(obs), fresh.values.mean(obs))
    # the actors' copies (built from the config, loaded from the shipped weights) agree too
    policy, values = build_networks(NOBS, NA, NORM)
    weights = lrn.get_weights()
    policy.load_state_dict(weights["policy"])
    values.load_state_dict(weights["values"])
    assert torch.equal(policy(obs), lrn.policy(obs))
    assert torch.equal(values.mean(obs), lrn.values.mean(obs))


def test_alg2_reads_the_heads_in_normalised_units():
    """ρ after one iteration equals Alg. 2 by hand on the heads' outputs (the critic's units)
    at the fresh real observations: returns ×1000 leave ω where raw heads would make it ~0."""
    nets = NetworkConfig(hidden_sizes=(8,), ensemble_size=3, normalize_obs=False)
    cfg = InfluenceRatioConfig(mode="adaptive", rho0=0.3, lam=0.9)
    lrn = PPOLearner(NOBS, NA, PPOConfig(batch_size=16, n_epochs=1), nets, cfg, seed=0)
    real = real_batch(seed=4)
    real = real._replace(rewards=real.rewards * 1000.0)
    with torch.no_grad():
        heads = lrn.values(real.obs).reshape(-1, 3)
    rho, omega = adaptive_rho_step(heads.double(), lrn.rho, lrn.rho_schedule.omega, 0.9)
    lrn.update(real, virtual_batch())
    assert lrn.rho == pytest.approx(rho) and lrn.rho_schedule.omega == pytest.approx(omega)
    var = float(heads.double().var(-1, correction=0).mean())
    assert omega == pytest.approx(0.1 * 1.0 / (1.0 + var))  # Ω0 = 0, λ = 0.9


def test_nonfinite_real_targets_leave_the_value_units_alone():
    lrn = PPOLearner(NOBS, NA, PPOConfig(batch_size=16, n_epochs=1), NORM,
                     InfluenceRatioConfig(rho0=0.3), seed=0)  # fmt: skip
    lrn.update(real_batch(seed=0), virtual_batch())
    before = {k: v.clone() for k, v in lrn.values.scale.state_dict().items()}
    heads = {k: v.clone() for k, v in lrn.values.heads.state_dict().items()}
    bad = real_batch(seed=1)
    bad.rewards[3, 1] = float("nan")
    m = lrn.update(bad, virtual_batch())
    assert m["minibatch_updates"] == 0
    for k, v in lrn.values.scale.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in lrn.values.heads.state_dict().items():
        assert torch.equal(v, heads[k]), k


def test_advantage_normalisation_of_equal_values_is_zero():
    """`learners.ppo_loss.normalise`: values equal up to float rounding normalise to exact
    zeros (not their rounding noise blown up by 1/(std + 1e-8)); others as before."""
    from learners.ppo_loss import normalise

    equal = torch.full((2048,), -2.03e-4) + torch.randn(2048) * 3e-11  # a sum's rounding
    assert torch.equal(normalise(equal), torch.zeros(2048))
    assert torch.equal(normalise(torch.full((64,), 0.37)), torch.zeros(64))
    a = torch.randn(2048) * 3.0 + 1.0
    assert torch.equal(normalise(a), (a - a.mean()) / (a.std(correction=0) + 1e-8))
    tiny = torch.randn(512) * 1e-6  # genuinely spread, however small
    assert normalise(tiny).std(correction=0) == pytest.approx(1.0, rel=0.05)
