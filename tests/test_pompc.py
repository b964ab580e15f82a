"""PO-MPC's KL prior in the hierarchy (`learners.pompc`): the maths against twins and hand
computations, λ = 0 is PPO-MPPI bit for bit and a one-step toy with a known answer (both
engines), resume. The fused engine's KL term against autograd's: `tests/test_fused_step.py`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common.checks import ConfigError
from learners import InfluenceRatioConfig, NetworkConfig, PPOConfig, PPOLearner, RealBatch
from learners.pompc import (
    KLPriorConfig,
    candidate_returns,
    candidate_weights,
    gaussian_kl,
    intermediate_prior_loss,
    planner_prior,
    policy_kl,
    temperature_for_kl,
    weights_kl,
)
from tests.test_ppo import virtual_batch

NOBS, NA, M = 3, 2, 4
SMALL = PPOConfig(batch_size=16, n_epochs=2)
NETS = NetworkConfig(hidden_sizes=(8,), ensemble_size=3)


def real_batch(T=8, B=4, seed=0, nobs=NOBS, na=NA, M=M) -> RealBatch:
    rng = np.random.default_rng(seed)
    return RealBatch.from_numpy(
        obs=rng.normal(size=(T, B, nobs)),
        actions=rng.normal(size=(T, B, na)),
        logp=rng.normal(size=(T, B)) - 2.0,
        rewards=rng.normal(size=(T, B)),
        terminated=rng.random((T, B)) < 0.1,
        truncated=rng.random((T, B)) < 0.1,
        next_obs=rng.normal(size=(T, B, nobs)),
        candidates=rng.normal(size=(T, B, M, na)),
        candidate_returns=rng.normal(size=(T, B, M)),
    )


def learner(
    kl: KLPriorConfig | None = None, rho=0.0, seed=0, config=SMALL, engine="autograd"
) -> PPOLearner:
    return PPOLearner(
        NOBS, NA, config, NETS, InfluenceRatioConfig(rho0=rho), seed=seed, engine=engine, kl=kl
    )


def same_networks(a: PPOLearner, b: PPOLearner) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    nets = all(torch.equal(sa[k][n], sb[k][n]) for k in ("policy", "values") for n in sa[k])
    oa, ob = sa["optimizer"]["state"], sb["optimizer"]["state"]
    return nets and all(torch.equal(oa[i][k], ob[i][k]) for i in oa for k in oa[i])


# ---- the maths --------------------------------------------------------------------------
@pytest.mark.parametrize("direction", ["reverse", "forward"])
def test_gaussian_kl_matches_a_monte_carlo_twin(direction):
    g = torch.Generator().manual_seed(0)
    mean, prior_mean = (
        torch.randn(3, generator=g, dtype=torch.float64),
        torch.randn(3, generator=g, dtype=torch.float64),
    )
    log_std = 0.3 * torch.randn(3, generator=g, dtype=torch.float64)
    prior_log_std = 0.3 * torch.randn(3, generator=g, dtype=torch.float64)
    kl = float(policy_kl(mean, log_std, prior_mean, prior_log_std, direction))
    # the twin: E_p[log p(x) - log q(x)] by sampling from p
    p, q = ((mean, log_std), (prior_mean, prior_log_std))[:: 1 if direction == "reverse" else -1]
    dist = lambda m, ls: torch.distributions.Normal(m, ls.exp())
    x = dist(*p).sample((400_000,))
    mc = float((dist(*p).log_prob(x) - dist(*q).log_prob(x)).sum(-1).mean())
    assert kl > 0 and abs(kl - mc) < 0.02 * max(1.0, kl)
    # and torch's closed form
    ref = torch.distributions.kl_divergence(dist(*p), dist(*q)).sum()
    assert kl == pytest.approx(float(ref), rel=1e-10)


def test_kl_of_equal_gaussians_is_zero_and_the_directions_differ():
    m, ls = torch.tensor([0.2, -1.0]), torch.tensor([0.0, -0.5])
    assert float(gaussian_kl(m, ls, m, ls)) == pytest.approx(0.0, abs=1e-7)
    a = float(policy_kl(m, ls, m + 1.0, ls + 1.0, "reverse"))
    b = float(policy_kl(m, ls, m + 1.0, ls + 1.0, "forward"))
    assert a != pytest.approx(b)


def test_candidate_weighted_prior_by_hand():
    # three candidates, returns (0, ln 2, 0), η = 1: weights (1/4, 1/2, 1/4)
    cands = torch.tensor([[[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]]], dtype=torch.float64)  # [1, 3, 2]
    G = torch.tensor([[0.0, math.log(2.0), 0.0]], dtype=torch.float64)
    w = candidate_weights(G, 1.0)
    assert torch.allclose(w, torch.tensor([[0.25, 0.5, 0.25]], dtype=torch.float64))
    mean, log_std = planner_prior(cands, G, eta=1.0, min_std=0.05)
    # dim 0: μ = 0·¼ + 1·½ + 2·¼ = 1; the ML variance ¼·1 + ½·0 + ¼·1 = ½ over
    # 1 - Σw² = 1 - 3/8 = 5/8 (unbiased, reliability weights) gives σ² = 0.8;
    # dim 1: all equal, σ at its floor
    assert torch.allclose(mean, torch.tensor([[1.0, 1.0]], dtype=torch.float64))
    assert torch.allclose(
        log_std.exp(), torch.tensor([[math.sqrt(0.8), 0.05]], dtype=torch.float64)
    )
    # η scales the returns: (0, 2 ln 2, 0) at η = 2 is the same distribution
    mean2, log_std2 = planner_prior(cands, 2.0 * G, eta=2.0, min_std=0.05)
    assert torch.allclose(mean2, mean) and torch.allclose(log_std2, log_std)
    # η → ∞: the plain mean and sample variance (n - 1) of the candidates, σ² = 1;
    # η → 0 (0.05: the others weigh 1e-6): the best one's mean, half its squared distance to
    # the others, ½, as variance
    mean_hot, ls_hot = planner_prior(cands, G, eta=1e9, min_std=0.05)
    mean_cold, ls_cold = planner_prior(cands, G, eta=0.05, min_std=0.05)
    assert torch.allclose(mean_hot, torch.tensor([[1.0, 1.0]], dtype=torch.float64))
    assert torch.allclose(ls_hot.exp()[0, 0], torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(mean_cold, cands[:, 1], atol=1e-5) and torch.allclose(
        ls_cold.exp()[0, 0], torch.tensor(math.sqrt(0.5), dtype=torch.float64), atol=1e-5
    )
    # one weight exactly 1 (the others underflow): no 0/0, σ at its floor; beside another
    # state, that state is left out of the pool instead of counting as zero spread
    G_one = torch.tensor([[0.0, 1e4, 0.0]], dtype=torch.float64)
    m_one, ls_one = planner_prior(cands, G_one, eta=1.0, min_std=0.05)
    assert torch.allclose(m_one, cands[:, 1]) and torch.allclose(
        ls_one.exp(), torch.tensor(0.05, dtype=torch.float64)
    )
    both = planner_prior(torch.cat([cands, cands]), torch.cat([G_one, G]), 1.0, 0.05)[1]
    assert torch.allclose(both[0], log_std[0]) and torch.allclose(both[1], log_std[0])


def test_the_planner_prior_of_uniform_weights_keeps_the_policys_spread():
    """With uninformative returns π_P's σ is π_old's: pooled over the states, the variance of
    M = 4 candidates per state is the distribution's (a per-state ML fit would average 3/4 of
    it, and its precision, which the reverse KL weighs, 3 times the distribution's)."""
    gen = torch.Generator().manual_seed(0)
    cands = 0.5 * torch.randn(2_000, M, 1, generator=gen, dtype=torch.float64)
    mean, log_std = planner_prior(cands, torch.zeros(2_000, M, dtype=torch.float64), 1.0, 1e-6)
    assert torch.allclose(mean, cands.mean(-2))
    assert torch.equal(log_std, log_std[:1].expand_as(log_std))  # one σ for every state
    assert float(log_std[0, 0].exp()) == pytest.approx(0.5, rel=0.02)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_the_kl_bound_picks_eta_whatever_the_returns_scale(scale):
    """MPO's E-step bound: η puts the weights' mean KL from uniform at ε, and η scales with the
    returns, so the weights are the same on every scale (η = 1 would give near-uniform weights
    on returns 1,000 times smaller and one-hot ones on returns 1,000 times larger)."""
    g = torch.randn(500, M, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eta = temperature_for_kl(g * scale, 0.2)
    assert float(weights_kl(g * scale, eta).mean()) == pytest.approx(0.2, abs=1e-9)
    assert eta == pytest.approx(temperature_for_kl(g, 0.2) * scale, rel=1e-9)
    torch.testing.assert_close(candidate_weights(g * scale, eta), candidate_weights(g, eta / scale))
    # KL(w ‖ uniform) by hand for one state: w = softmax(G/η)
    w = torch.softmax(g[0] / (eta / scale), -1)
    assert float(weights_kl(g[:1], eta / scale)) == pytest.approx(
        float((w * torch.log(M * w)).sum())
    )


def test_the_kl_bound_at_its_limits():
    equal = torch.zeros(10, M)  # uniform weights at any η: ε is out of reach
    assert temperature_for_kl(equal, 0.1, lo=1e-4) == 1e-4
    g = torch.randn(10, M, generator=torch.Generator().manual_seed(1))
    assert temperature_for_kl(g, 1e-30, hi=1e3) == 1e3  # as uniform as η = hi makes them
    with pytest.raises(ValueError, match="epsilon"):
        temperature_for_kl(g, 0.0)


def test_the_learner_reports_eta_and_the_weights_kl():
    fixed = learner(KLPriorConfig("planner", kl_temperature=0.7)).update(real_batch())
    assert fixed["kl/eta"] == 0.7
    bounded = learner(KLPriorConfig("planner", kl_epsilon=0.3)).update(real_batch())
    assert bounded["kl/weights_kl"] == pytest.approx(0.3, abs=1e-6)


def test_candidate_returns_by_hand():
    r = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    term = torch.tensor([[False, False], [True, False]])
    g = candidate_returns(r, torch.tensor([10.0, 10.0]), term, gamma=0.5)
    # 1 + 0.5·2 + 0.25·10 = 4.5; a terminal planned state after the first step stops it: 1
    assert torch.allclose(g, torch.tensor([4.5, 1.0]))
    # leading shapes are kept: [T, B, M, H] -> [T, B, M]
    g3 = candidate_returns(
        r.expand(2, 3, 2, 2), torch.full((2, 3, 2), 10.0), term.expand(2, 3, 2, 2), 0.5
    )
    assert g3.shape == (2, 3, 2) and torch.allclose(g3[1, 2], g)


def test_intermediate_prior_losses_are_the_two_kls():
    """Reverse: KL(π_θp ‖ π_P). Forward: KL(π_P ‖ π_θp) decoupled, its mean part and its std
    part each with the other at the target's; equal to the full forward KL where the stds
    agree, and its std optimum is σ_P whatever the mean's residual (the full KL's is wider)."""
    m, ls, tm, tls = (
        torch.randn(4, 2),
        torch.randn(4, 2) * 0.1,
        torch.randn(4, 2),
        torch.randn(4, 2) * 0.1,
    )
    assert torch.allclose(
        intermediate_prior_loss(m, tls, tm, tls, "forward"), gaussian_kl(tm, tls, m, tls)
    )
    assert not torch.allclose(
        intermediate_prior_loss(m, ls, tm, tls, "forward"), gaussian_kl(tm, tls, m, ls)
    )
    log_std = torch.zeros(4, 2, requires_grad=True)  # σ_θp fitted to σ_P = 1 at a mean off by 1
    opt = torch.optim.SGD([log_std], lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        intermediate_prior_loss(
            tm + 1.0, log_std, tm, torch.zeros(4, 2), "forward"
        ).sum().backward()
        opt.step()
    assert torch.allclose(log_std, torch.zeros(4, 2), atol=1e-4)
    full = torch.zeros(4, 2, requires_grad=True)  # the full forward KL: σ² = 1 + 1 = 2
    opt = torch.optim.SGD([full], lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        gaussian_kl(tm, torch.zeros(4, 2), tm + 1.0, full).sum().backward()
        opt.step()
    assert torch.allclose(full, torch.full((4, 2), 0.5 * math.log(2.0)), atol=1e-3)
    assert torch.allclose(
        intermediate_prior_loss(m, ls, tm, tls, "reverse"), gaussian_kl(m, ls, tm, tls)
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("kl_prior", "mpc"), ("kl_lambda", -0.1), ("kl_lambda", math.inf), ("kl_direction", "both"),
     ("kl_temperature", 0.0), ("kl_min_std", 0.0), ("kl_prior_loss", "x"), ("kl_prior_lr", 0.0),
     ("kl_prior_epochs", 0), ("kl_epsilon", -0.1), ("kl_epsilon", math.nan)],
)  # fmt: skip
def test_invalid_kl_options_are_refused_naming_the_field(field, value):
    with pytest.raises(ConfigError) as err:
        KLPriorConfig(**{field: value})
    assert err.value.fields == (field,)


def test_construction_refuses_sample_mixing_on_either_engine():
    kl = KLPriorConfig("planner")
    assert PPOLearner(NOBS, NA, SMALL, NETS, kl=kl).engine_name == "fused"  # the default engine
    for engine in ("fused", "autograd"):
        with pytest.raises(ValueError, match="mixing"):
            PPOLearner(NOBS, NA, PPOConfig(mixing="sample"), NETS, engine=engine, kl=kl)


def test_a_kl_prior_without_candidates_is_an_error():
    lrn = learner(KLPriorConfig("planner"))
    bare = real_batch()._replace(candidates=None, candidate_returns=None)
    with pytest.raises(ValueError, match="candidates"):
        lrn.update(bare)


# ---- the learner ------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["autograd", "fused"])
@pytest.mark.parametrize("prior", ["planner", "intermediate"])
@pytest.mark.parametrize("rho", [0.0, 0.3])
def test_lambda_zero_is_ppo_mppi_bit_for_bit(prior, rho, engine):
    kl = KLPriorConfig(prior, kl_lambda=0.0, kl_critic=True)
    plain, zero = learner(rho=rho, engine=engine), learner(kl, rho=rho, engine=engine)
    for it in range(2):
        real, virt = real_batch(seed=it), virtual_batch(seed=it, nobs=NOBS, na=NA)
        m_plain = plain.update(real, virt)
        m_zero = zero.update(real, virt)
        assert same_networks(plain, zero)
        assert all(
            m_zero[k] == v or (math.isnan(v) and math.isnan(m_zero[k])) for k, v in m_plain.items()
        )
        assert "loss/kl" in m_zero and "kl/policy_prior" in m_zero
    if prior == "intermediate":
        assert math.isfinite(m_zero["loss/kl_prior"])
    # and λ > 0 does change the policy
    some = learner(KLPriorConfig(prior, kl_lambda=1.0), rho=rho, engine=engine)
    some.update(real_batch(seed=0), virtual_batch(seed=0, nobs=NOBS, na=NA))
    plain2 = learner(rho=rho, engine=engine)
    plain2.update(real_batch(seed=0), virtual_batch(seed=0, nobs=NOBS, na=NA))
    assert not same_networks(plain2, some)


def _toy_batch(rng: np.random.Generator, a_star: float, n: int = 256) -> RealBatch:
    """One-step episodes at one state; every reward 0 (PPO's advantage is 0 everywhere, so
    the PPO gradient on the policy vanishes); the candidates are a_star ± 0.2 with equal
    returns and a_star with a higher one: π_P's mean is a_star exactly."""
    obs = np.zeros((1, n, 1))
    cands = np.array([a_star - 0.2, a_star, a_star + 0.2])[None, None, :, None].repeat(n, 1)
    returns = np.array([0.0, 1.0, 0.0])[None, None].repeat(n, 1)
    return RealBatch.from_numpy(
        obs=obs, actions=rng.normal(size=(1, n, 1)), logp=np.full((1, n), -1.0),
        rewards=np.zeros((1, n)), terminated=np.ones((1, n), bool),
        truncated=np.zeros((1, n), bool), next_obs=obs, candidates=cands,
        candidate_returns=returns,
    )  # fmt: skip


@pytest.mark.parametrize("engine", ["autograd", "fused"])
@pytest.mark.parametrize("prior", ["planner", "intermediate"])
def test_one_step_toy_large_lambda_puts_the_mean_on_the_prior_mean(prior, engine):
    cfg = PPOConfig(batch_size=64, n_epochs=10, learning_rate=1e-2)
    kls = {lam: KLPriorConfig(prior, kl_lambda=lam, kl_prior_lr=1e-2) for lam in (0.0, 9.0)}
    learners = {
        lam: PPOLearner(1, 1, cfg, NETS, InfluenceRatioConfig(rho0=0.0), engine=engine, kl=kl)
        for lam, kl in kls.items()
    }  # fmt: skip
    s = torch.zeros(1, 1)
    start = float(learners[0.0].policy.mean(s))
    a_star = 0.5
    for it in range(8):
        for lrn in learners.values():
            lrn.update(_toy_batch(np.random.default_rng(it), a_star))
    # λ = 0: the PPO gradient alone, and it is zero here: the mean has not moved
    assert float(learners[0.0].policy.mean(s)) == start
    # large λ: the mean is on π_prior's mean, a_star
    assert float(learners[9.0].policy.mean(s)) == pytest.approx(a_star, abs=0.03)


def test_intermediate_prior_resumes_exactly():
    kl = KLPriorConfig("intermediate", kl_lambda=1.0)
    a = learner(kl)
    a.update(real_batch(seed=0))
    state = a.state_dict()
    b = learner(kl, seed=99)
    b.load_state_dict(state)
    m_a, m_b = a.update(real_batch(seed=1)), b.update(real_batch(seed=1))
    assert m_a == m_b and same_networks(a, b)
    pa, pb = a.prior_net.state_dict(), b.prior_net.state_dict()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert state["configs"]["kl"]["kl_prior"] == "intermediate"
    with pytest.raises(ValueError, match="intermediate prior"):
        learner(kl).load_state_dict(learner().state_dict())


# ---- the actor: candidates and their returns travel with the real fragment ---------------
@pytest.mark.parametrize("env", ["acrobot", "racing"])
def test_worker_scores_every_candidate_without_changing_the_fragment(env):
    from dataclasses import replace

    from envs import planner_config
    from rlmpc.system.records import FragmentId, Weights
    from rlmpc.system.worker import RolloutWorker, WorkerSpec

    spec = WorkerSpec(env, 3, 4, planner_config(env, num_samples=16), NetworkConfig(), seed=3)
    plain, scoring = RolloutWorker(0, spec), RolloutWorker(0, replace(spec, candidate_gamma=0.9))
    weights = Weights(plain.policy.state_dict(), scoring.values.state_dict())
    T, B, M = 5, 3, 4
    r0, v0, _ = plain.collect(FragmentId(0, 0), T, weights, 0)
    r1, v1, _ = scoring.collect(FragmentId(0, 0), T, weights, 0)
    # the same real and virtual data, bit for bit: scoring draws nothing and steps no env
    for a, b in zip(r0[:7], r1[:7], strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(v0, v1, strict=True):
        np.testing.assert_array_equal(a, b)
    assert r0.candidates is None and r0.candidate_returns is None
    na = scoring.model.na
    assert r1.candidates.shape == (T, B, M, na) and r1.candidate_returns.shape == (T, B, M)
    assert np.isfinite(r1.candidate_returns).all()
    # the executed action is one of the candidates, the virtual ones are the others
    hit = (r1.candidates == r1.actions[:, :, None]).all(-1)
    assert (hit.sum(-1) == 1).all()
    others = r1.candidates[~hit].reshape(T, B, M - 1, na)
    np.testing.assert_array_equal(others, v1.actions.reshape(T, B, M - 1, na))
    # each kept candidate's G is its virtual path's H-step return with the critic at x̂_H
    vb = v1.to_batch()
    with torch.no_grad():
        end = scoring.values.mean(vb.path_obs[:, -1])
    g = candidate_returns(vb.path_rewards, end, vb.path_terminated, 0.9)
    np.testing.assert_allclose(
        r1.candidate_returns[~hit].reshape(-1), g.numpy(), rtol=1e-4, atol=1e-3
    )
    # and the fragment reaches the learner with them
    batch = r1.to_batch()
    assert batch.candidates.shape == (T, B, M, na)


# ---- the command line -----------------------------------------------------------------------
def test_command_line_options_and_refusals(capsys):
    from rlmpc.run.cli import parse

    cfg = parse([]).cfg
    assert cfg.kl == KLPriorConfig() and cfg.worker_spec().candidate_gamma is None
    cfg = parse(["--kl-prior", "intermediate", "--kl-lambda", "9",
                 "--kl-direction", "forward", "--kl-temperature", "0.5"]).cfg  # fmt: skip
    assert (cfg.kl.kl_prior, cfg.kl.kl_lambda, cfg.kl.kl_direction) == (
        "intermediate",
        9.0,
        "forward",
    )
    assert cfg.ppo.engine == "fused"  # the default engine takes the KL prior
    assert parse(["--kl-prior", "planner", "--engine", "autograd"]).cfg.ppo.engine == "autograd"
    assert cfg.worker_spec().candidate_gamma == cfg.ppo.gamma and cfg.learner_spec().kl == cfg.kl
    assert cfg.eval_spec(10).candidate_gamma is None
    refusals = [
        (["--kl-prior", "planner", "--mixing", "sample"], ["--kl-prior", "--mixing"]),
        (["--kl-prior", "planner", "--num-candidates", "1", "--influence-ratio-rho0", "0"],
         ["--kl-prior", "--num-candidates"]),
        (["--kl-lambda", "-1"], ["--kl-lambda"]),
        (["--kl-prior", "planner", "--kl-epsilon", "1.4"], ["--kl-epsilon", "--num-candidates"]),
    ]  # fmt: skip
    for argv, named in refusals:
        with pytest.raises(SystemExit):
            parse(argv)
        err = capsys.readouterr().err
        assert all(flag in err for flag in named), err
