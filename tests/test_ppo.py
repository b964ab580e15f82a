"""PPO over real and virtual data: config, eq. (10) vs eq. (8), toys with known answers, safety."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common.checks import ConfigError
from learners import (
    InfluenceRatioConfig,
    NetworkConfig,
    PPOConfig,
    PPOLearner,
    RealBatch,
    TrainBatch,
    VirtualBatch,
    bernoulli_mix,
    mix_batches,
    weighted_loss,
)
from learners.ppo_loss import ppo_loss_terms, ppo_objective

NOBS, NA, H = 3, 2, 4
SMALL = PPOConfig(batch_size=16, n_epochs=2)
NETS = NetworkConfig(hidden_sizes=(8,), ensemble_size=3)


def real_batch(T=8, B=4, seed=0, nobs=NOBS, na=NA) -> RealBatch:
    rng = np.random.default_rng(seed)
    return RealBatch.from_numpy(
        obs=rng.normal(size=(T, B, nobs)),
        actions=rng.normal(size=(T, B, na)),
        logp=rng.normal(size=(T, B)) - 2.0,
        rewards=rng.normal(size=(T, B)),
        terminated=rng.random((T, B)) < 0.1,
        truncated=rng.random((T, B)) < 0.1,
        next_obs=rng.normal(size=(T, B, nobs)),
    )


def virtual_batch(N=96, seed=1, nobs=NOBS, na=NA) -> VirtualBatch:
    rng = np.random.default_rng(seed)
    return VirtualBatch.from_numpy(
        obs=rng.normal(size=(N, nobs)),
        actions=rng.normal(size=(N, na)),
        logp=rng.normal(size=N) - 2.0,
        path_obs=rng.normal(size=(N, H + 1, nobs)),
        path_rewards=rng.normal(size=(N, H)),
        path_terminated=rng.random((N, H)) < 0.1,
    )


def learner(rho=0.0, config=SMALL, nets=NETS, seed=0, engine=None, **rho_kwargs) -> PPOLearner:
    return PPOLearner(
        NOBS, NA, config, nets, InfluenceRatioConfig(rho0=rho, **rho_kwargs), seed=seed,
        engine=engine,
    )  # fmt: skip


def same_state(a: PPOLearner, b: PPOLearner) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    for key in ("policy", "values"):
        if any(not torch.equal(sa[key][k], sb[key][k]) for k in sa[key]):
            return False
    oa, ob = sa["optimizer"]["state"], sb["optimizer"]["state"]
    if oa.keys() != ob.keys():
        return False
    return all(torch.equal(oa[i][k], ob[i][k]) for i in oa for k in oa[i])


def test_table3_defaults():
    c = PPOConfig()
    assert (c.learning_rate, c.n_steps, c.batch_size, c.n_epochs) == (3e-4, 2048, 64, 10)
    assert (c.gamma, c.gae_lambda, c.clip_range) == (0.99, 0.95, 0.2)
    assert (c.ent_coef, c.vf_coef, c.max_grad_norm) == (0.0, 0.5, 0.5)
    assert c.mixing == "loss" and NetworkConfig().ensemble_size == 5
    r = InfluenceRatioConfig()
    assert (r.mode, r.update_every) == ("fixed", "iteration")


@pytest.mark.parametrize(
    "field,value,allowed",
    [
        ("learning_rate", 0.0, "> 0"),
        ("n_steps", 0, r"in \[1, 4194304\]"),
        ("batch_size", 0, r"in \[1, 4194304\]"),
        ("n_epochs", 0, r"in \[1, 1000\]"),
        ("gamma", 1.01, r"in \[0, 1\]"),
        ("gae_lambda", -0.1, r"in \[0, 1\]"),
        ("clip_range", -0.2, "> 0"),
        ("ent_coef", -1.0, ">= 0"),
        ("vf_coef", -0.5, ">= 0"),
        ("max_grad_norm", 0.0, "> 0"),
        ("adam_eps", 0.0, "> 0"),
        ("mixing", "both", "'loss' or 'sample'"),
        ("virtual_batch_size", 0, r"None or in \[1, 4194304\]"),
        ("bootstrap_p", 0.0, r"in \(0, 1\]"),
        ("learning_rate", float("nan"), "a finite number"),
    ],
)
def test_invalid_config_values_are_refused_naming_field_and_range(field, value, allowed):
    with pytest.raises(ValueError, match=f"PPOConfig.{field} must be {allowed}"):
        PPOConfig(**{field: value})


@pytest.mark.parametrize("mixing", ["loss", "sample"])
def test_rho_zero_is_plain_ppo_bit_for_bit(mixing):
    # Same seed: one learner gets virtual data at ρ = 0, the other none. The virtual branch
    # runs (its losses are reported) yet the weights, optimizer state and real-data metrics
    # are identical; the control at ρ > 0 shows the virtual data do reach the weights.
    cfg = PPOConfig(batch_size=16, n_epochs=2, mixing=mixing)
    control_rho = 1e-3 if mixing == "loss" else 0.2  # a sample draw needs ρ·32 slots ≳ 1
    with_virtual, plain, control = learner(0.0, cfg), learner(0.0, cfg), learner(control_rho, cfg)
    for it in range(2):
        real, virt = real_batch(seed=it), virtual_batch(seed=10 + it)
        m_v = with_virtual.update(real, virt)
        m_p = plain.update(real, None)
        control.update(real, virt)
        assert same_state(with_virtual, plain)
        for k in ("loss/policy", "loss/value", "approx_kl", "explained_variance"):
            assert m_v[k] == m_p[k]
    if mixing == "loss":
        assert "loss/value_virtual" in m_v and "loss/value_virtual" not in m_p
    assert not same_state(control, plain)


def test_empty_virtual_buffer_with_positive_rho_is_an_error():
    lrn = learner(0.3)
    with pytest.raises(ValueError, match=r"ρ=0.3 > 0 needs virtual samples"):
        lrn.update(real_batch(), None)
    with pytest.raises(ValueError, match="rho0=0"):
        lrn.update(real_batch(), VirtualBatch.empty(NOBS, NA, H))
    assert lrn.iteration == 0
    plain, empty = learner(0.0), learner(0.0)
    plain.update(real_batch(), None)
    empty.update(real_batch(), VirtualBatch.empty(NOBS, NA, H))
    assert same_state(plain, empty)


def test_construction_refuses_single_head_adaptive_and_sample_per_minibatch():
    with pytest.raises(ConfigError, match="ensemble_size >= 2") as err:
        learner(0.3, nets=NetworkConfig(ensemble_size=1), mode="adaptive")
    assert err.value.fields == ("influence_ratio.mode", "networks.ensemble_size")
    with pytest.raises(ConfigError, match="update_every='minibatch' needs mixing='loss'"):
        learner(0.3, config=PPOConfig(mixing="sample"), update_every="minibatch")
    learner(0.3, nets=NetworkConfig(ensemble_size=1))  # a fixed ρ needs no ensemble


def test_nonfinite_loss_skips_the_update_and_keeps_the_weights():
    """(Raw units: the statistics take in the data of a skipped update; test_normalize.)"""
    raw = NetworkConfig(
        hidden_sizes=(8,), ensemble_size=3, normalize_obs=False, normalize_values=False
    )
    lrn, ref = learner(0.5, nets=raw), learner(0.5, nets=raw)
    real = real_batch()
    bad = real._replace(rewards=real.rewards.clone())
    bad.rewards[3, 1] = float("nan")
    m = lrn.update(bad, virtual_batch())
    n_minibatches = SMALL.n_epochs * math.ceil(32 / SMALL.batch_size)
    assert m["skipped_updates"] == n_minibatches and m["minibatch_updates"] == 0
    assert same_state(lrn, ref) and lrn.skipped_updates == n_minibatches
    bad_virtual = virtual_batch()._replace(path_rewards=torch.full((96, H), float("inf")))
    assert lrn.update(real, bad_virtual)["skipped_updates"] == n_minibatches
    assert same_state(lrn, ref)
    m = lrn.update(real, virtual_batch())
    assert m["skipped_updates"] == 0 and m["minibatch_updates"] == n_minibatches
    assert all(math.isfinite(v) for v in m.values())


@pytest.mark.parametrize("engine", ["autograd", "fused"])
def test_nonfinite_gradient_skips_the_update(engine, monkeypatch):
    raw = NetworkConfig(
        hidden_sizes=(8,), ensemble_size=3, normalize_obs=False, normalize_values=False
    )
    lrn, ref = learner(0.5, nets=raw, engine=engine), learner(0.5, nets=raw, engine=engine)
    if engine == "autograd":
        lrn.policy.log_std.register_hook(lambda g: g * float("inf"))  # finite loss, inf gradient
    else:  # the fused engine writes the gradient itself: make the log-std's infinite
        steps = lrn.engine.steps
        backward = steps.backward

        def inf_gradient(*args):
            backward(*args)
            steps.g_log_std.mul_(float("inf"))

        monkeypatch.setattr(steps, "backward", inf_gradient)
    m = lrn.update(real_batch(), virtual_batch())
    assert m["skipped_updates"] == 4 and m["minibatch_updates"] == 0
    assert same_state(lrn, ref)


def test_loss_weighting_and_per_sample_mixing_agree_in_expectation():
    # Per-sample losses ℓ_r (n = 64 real), ℓ_v (192 virtual) under fixed networks.
    # Eq. (10): L = (1-ρ) mean ℓ_r + ρ mean ℓ_v. Eq. (8): slot i holds X_i = ℓ_r(i) if z_i = 0
    # else ℓ_v(J_i), z_i ~ Bernoulli(ρ), J_i uniform; L_s = (1/n) Σ_i X_i.
    #   E[X_i] = (1-ρ) ℓ_r(i) + ρ μ_v, so E[L_s] = L exactly.
    #   Var(X_i) = (1-ρ) ℓ_r(i)² + ρ m2_v - E[X_i]² (m2_v = mean ℓ_v²); with J drawn with
    #   replacement the slots are independent and Var(L_s) = Σ_i Var(X_i) / n² =: σ²; drawing
    #   J without replacement (bernoulli_mix) only lowers it. The mean of R draws then has
    #   standard error ≤ σ/√R, and we accept |mean - L| ≤ 5σ/√R (false alarm < 1e-6; seeded).
    torch.manual_seed(0)
    lrn = learner(0.3)
    g = torch.Generator().manual_seed(0)

    def batch(n, shift):
        boot = torch.bernoulli(torch.full((n, 3), 0.5), generator=g) / 0.5
        r = lambda *s: torch.randn(*s, generator=g)
        return TrainBatch(r(n, NOBS), r(n, NA), r(n) - 2, r(n), r(n) * 2 + shift, boot)

    real_tb, virt_tb = batch(64, 0.0), batch(192, 3.0)  # virtual returns off by 3: larger loss
    loss = lambda tb: ppo_objective(ppo_loss_terms(lrn.policy, lrn.values, tb, 0.2), 0.5, 0.01)
    rho, R = 0.3, 2000
    with torch.no_grad():
        l_r, l_v = loss(real_tb), loss(virt_tb)
        L = float(weighted_loss(l_r.mean(), l_v.mean(), rho))
        mixed = [mix_batches(real_tb, virt_tb, *bernoulli_mix(64, rho, 192, g)) for _ in range(R)]
        unified = TrainBatch(*(torch.cat(f) for f in zip(*mixed, strict=True)))
        L_s = loss(unified).reshape(R, 64).double().mean(1)
    l_r, l_v = l_r.double(), l_v.double()
    ex = (1 - rho) * l_r + rho * l_v.mean()
    var = ((1 - rho) * l_r**2 + rho * (l_v**2).mean() - ex**2).sum() / 64**2
    tol = 5 * float(var.sqrt()) / math.sqrt(R)
    assert abs(float(L_s.mean()) - L) <= tol
    # the band is tight enough to catch a swapped draw (ρ <-> 1-ρ) or a dropped virtual term
    assert abs(1 - 2 * rho) * abs(float(l_r.mean() - l_v.mean())) > 10 * tol
    # and the derived variance is the observed one (up to sampling and the without-replacement
    # correction, ≈ 1 - ρ·n/192 ≈ 0.9 on the virtual part)
    assert 0.8 < float(L_s.var()) / float(var) < 1.15


def _sin_toy_error(rho: float, seed: int, iters: int = 10) -> list[float]:
    """Value MSE to sin(3s) on [-1, 1] after each iteration of a one-step-episode toy.

    Real episodes start in [0, 0.5] only; virtual samples start anywhere in [-1, 1], their
    path terminates after the first step and r̂ = sin(3s) is the true reward, so their
    λ-returns are exactly the true returns (the rewards after the terminal step are noise
    that a correct target ignores).
    """
    cfg = PPOConfig(learning_rate=3e-3, batch_size=64, n_epochs=10)
    lrn = PPOLearner(
        1, 1, cfg, NetworkConfig((32, 32), 3), InfluenceRatioConfig(rho0=rho), seed=seed
    )
    g = torch.Generator().manual_seed(seed + 10)
    grid = torch.linspace(-1, 1, 101)[:, None]
    errors = []
    for _ in range(iters):
        s = torch.rand(8, 8, 1, generator=g) * 0.5
        a, lp = lrn.policy.sample(s.reshape(64, 1), 1, generator=g)
        ones, zeros = torch.ones(8, 8, dtype=torch.bool), torch.zeros(8, 8, dtype=torch.bool)
        real = RealBatch(
            s, a.reshape(8, 8, 1), lp.reshape(8, 8), torch.sin(3 * s[..., 0]), ones, zeros, s
        )
        sv = torch.rand(192, 1, generator=g) * 2 - 1
        av, lpv = lrn.policy.sample(sv, 1, generator=g)
        path_r = 5 * torch.randn(192, 2, generator=g)
        path_r[:, 0] = torch.sin(3 * sv[:, 0])
        path_t = torch.zeros(192, 2, dtype=torch.bool)
        path_t[:, 0] = True
        path_obs = torch.randn(192, 3, 1, generator=g)
        virtual = VirtualBatch(sv, av[:, 0], lpv[:, 0], path_obs, path_r, path_t)
        lrn.update(real, virtual if rho > 0 else None)
        with torch.no_grad():
            errors.append(
                float((lrn.values.mean(grid) - torch.sin(3 * grid[:, 0])).square().mean())
            )
    return errors


@pytest.mark.parametrize("seed", [0, 1])
def test_virtual_data_with_true_returns_lowers_value_error_faster(seed):
    # Mechanism 1 on a toy: the same real data, plus virtual samples whose targets are exact.
    # Measured (seeds 0, 1): from the third iteration on, mixed / real-only is 0.18-0.64.
    real_only, mixed = _sin_toy_error(0.0, seed), _sin_toy_error(0.5, seed)
    assert all(m < 0.8 * r for m, r in zip(mixed[2:], real_only[2:], strict=True))
    assert mixed[-1] < 0.5 * real_only[-1]


def _bandit_mean(rho: float, seed: int, iters: int = 8) -> float:
    """One-step bandit: virtual r̂ = -(a - 0.5)²; real r = -(a - 0.5)² at ρ = 0, else -(a + 0.5)²."""
    cfg = PPOConfig(learning_rate=1e-3, batch_size=64, n_epochs=10)
    lrn = PPOLearner(2, 1, cfg, NetworkConfig((16,), 2), InfluenceRatioConfig(rho0=rho), seed=seed)
    g = torch.Generator().manual_seed(seed + 10)
    ones, zeros = torch.ones(1, 256, dtype=torch.bool), torch.zeros(1, 256, dtype=torch.bool)
    for _ in range(iters):
        s = torch.randn(1, 256, 2, generator=g)
        a, lp = lrn.policy.sample(s[0], 1, generator=g)
        a = a.reshape(1, 256, 1)
        real_target = 0.5 if rho == 0 else -0.5
        r = -((a[..., 0] - real_target) ** 2)
        real = RealBatch(s, a, lp.reshape(1, 256), r, ones, zeros, s)
        av, lpv = lrn.policy.sample(s[0], 3, generator=g)
        sv = s[0, :, None].expand(256, 3, 2).reshape(768, 2)
        av, lpv = av.reshape(768, 1), lpv.reshape(768)
        virtual = VirtualBatch(
            sv, av, lpv, torch.zeros(768, 2, 2), -((av - 0.5) ** 2), torch.ones(768, 1).bool()
        )
        lrn.update(real, virtual if rho > 0 else None)
    return float(lrn.policy.mean(torch.randn(200, 2, generator=g)).mean())


def test_policy_moves_toward_higher_advantage_from_real_or_virtual_data():
    assert 0.35 < _bandit_mean(0.0, seed=0) < 0.65
    # ρ = 1: only L_MPPI counts, so the misleading real rewards (pointing at -0.5) are ignored
    assert 0.35 < _bandit_mean(1.0, seed=0) < 0.65


def test_state_dict_resumes_exactly():
    a = learner(0.3, mode="adaptive", lam=0.9)
    a.update(real_batch(seed=0), virtual_batch(seed=0))
    state = a.state_dict()
    b = learner(0.3, mode="adaptive", lam=0.9, seed=123)
    b.load_state_dict(state)
    m_a = a.update(real_batch(seed=1), virtual_batch(seed=1))
    m_b = b.update(real_batch(seed=1), virtual_batch(seed=1))
    assert same_state(a, b) and m_a == m_b and a.rho == b.rho < 0.3
    assert (a.iteration, b.iteration) == (2, 2)
    assert state["configs"]["influence_ratio"]["mode"] == "adaptive"


def test_weights_ship_as_plain_cpu_state_dicts():
    a, b = learner(0.0, seed=0), learner(0.0, seed=1)
    a.update(real_batch(), None)
    w = a.get_weights()
    assert set(w) == {"policy", "values"}
    assert all(t.device.type == "cpu" for part in w.values() for t in part.values())
    b.set_weights(w)
    obs = torch.randn(5, NOBS)
    torch.testing.assert_close(b.policy.mean(obs), a.policy.mean(obs), rtol=0, atol=0)
    torch.testing.assert_close(b.values(obs), a.values(obs), rtol=0, atol=0)
    w["policy"]["log_std"].add_(1.0)  # a copy: shipping never aliases the learner's weights
    assert not torch.equal(w["policy"]["log_std"], a.policy.log_std.detach())


def test_per_minibatch_rho_updates_anneal_faster():
    per_iter = learner(0.5, mode="adaptive", lam=0.9)
    per_mb = learner(0.5, mode="adaptive", lam=0.9, update_every="minibatch")
    m_i = per_iter.update(real_batch(), virtual_batch())
    m_m = per_mb.update(real_batch(), virtual_batch())
    assert per_iter.rho_schedule.num_updates == 1
    assert per_mb.rho_schedule.num_updates == m_m["minibatch_updates"] == 4
    assert m_m["rho"] < m_i["rho"] < 0.5 and 0 < m_i["rho/Omega"] < 1


def test_metrics_are_plain_floats():
    m = learner(0.3, mode="adaptive").update(real_batch(), virtual_batch())
    for key in ("rho", "ensemble_var", "loss/policy", "loss/value", "loss/entropy", "approx_kl",
                "clip_fraction", "explained_variance", "skipped_updates", "loss/value_virtual"):  # fmt: skip
        assert isinstance(m[key], float) and math.isfinite(m[key]), key
    assert m["real_samples"] == 32 and m["virtual_samples"] == 96
    m = learner(0.3, config=PPOConfig(batch_size=16, mixing="sample")).update(
        real_batch(), virtual_batch()
    )
    assert 0.0 < m["virtual_fraction"] < 1.0


def test_virtual_diagnostics_by_hand():
    from learners.ppo_loss import virtual_diagnostics

    v_bar, ret = torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 3.0, 5.0])
    ended = torch.tensor([[False, True], [False, False], [False, False], [True, True]])
    d = virtual_diagnostics(v_bar, ret, ended)
    assert d["virtual/advantage_mean"] == pytest.approx(1.0)  # advantages 1, 0, 1, 2
    assert d["virtual/advantage_std"] == pytest.approx(0.5**0.5)
    assert d["virtual/terminal_fraction"] == pytest.approx(0.5)
    # 1 - Var(ret - v̄) / Var(ret) = 1 - 0.5 / 2.75
    assert d["explained_variance_virtual"] == pytest.approx(1 - 0.5 / 2.75)
