"""The bound's estimates (`learners.bound`), the relative ρ mode and the ρ0 rule, on hand-worked
cases; the diagnostics leave a run's data and updates as they were."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from envs import planner_config
from learners.bound import (
    BoundEstimates,
    gaussian_policy_kl,
    mc_value_error,
    model_coefficients,
    reward_error,
    transition_error,
)
from learners.policy import NetworkConfig
from learners.ppo import rho0_from_bias
from learners.rho import AdaptiveRho, InfluenceRatioConfig, make_influence_ratio
from rlmpc.system.records import FragmentId
from rlmpc.system.worker import RolloutWorker, WorkerSpec


def test_reward_and_transition_errors_by_hand():
    """A toy 'model' off by known amounts: r̂ = r + (0.5, -1, 2), and s' off by (3, 0) in
    units where the observations' std is (2, 1); a NaN (faulted) step is left out."""
    r = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    r_hat = torch.tensor([[1.5, 1.0, 5.0, float("nan")]])
    assert reward_error(r, r_hat) == (pytest.approx(3.5 / 3), pytest.approx(2.0))
    s1 = torch.zeros(1, 2, 2)
    s1_hat = torch.tensor([[[3.0, 0.0], [float("nan"), 0.0]]])
    # RMS over components of (3/2, 0) = sqrt(2.25 / 2); the NaN step is left out
    assert transition_error(s1, s1_hat, torch.tensor([2.0, 1.0])) == pytest.approx(
        math.sqrt(2.25 / 2)
    )


def test_monte_carlo_value_error_counts_only_episodes_that_terminate_in_the_fragment():
    """One env, 4 steps, γ = 0.5: an episode terminating at t = 1, then one truncated at t = 3.
    G_0 = 1 + 0.5·2 = 2, G_1 = 2; t = 2, 3 belong to the truncated episode (no MC return)."""
    rewards = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    terminated = torch.tensor([[False], [True], [False], [False]])
    truncated = torch.tensor([[False], [False], [False], [True]])
    values = torch.tensor([[1.0], [5.0], [0.0], [0.0]])
    # |1 - 2| and |5 - 2|
    assert mc_value_error(values, rewards, terminated, truncated, 0.5) == pytest.approx(2.0)
    assert math.isnan(mc_value_error(values, rewards, terminated * False, truncated, 0.5))


def test_policy_kl_and_eq12_coefficients_by_hand():
    mu0, mu1 = torch.zeros(3, 1), torch.ones(3, 1)
    ls = torch.zeros(1)
    assert gaussian_policy_kl(mu0, ls, mu1, ls) == pytest.approx(0.5)  # (μ0 - μ1)² / 2σ²
    kl = gaussian_policy_kl(mu0, ls, mu0, torch.tensor([math.log(2.0)]))
    assert kl == pytest.approx(math.log(2.0) + 1 / 8 - 0.5)
    # H = 3, γ = 0.5: H γ (1 - γ²)/(1 - γ) span/2 = 3·0.5·1.5·span/2; (1 - γ³)/(1 - γ) = 1.75
    c_p, c_r = model_coefficients(span_r=4.0, gamma=0.5, horizon=3)
    assert (c_p, c_r) == (pytest.approx(4.5), pytest.approx(1.75))


def test_bound_figures_assemble_the_terms_and_say_when_they_are_vacuous():
    est = BoundEstimates(gamma=0.5, horizon=3)
    T, B = 2, 2
    rewards = torch.tensor([[1.0, -1.0], [0.0, 1.0]])
    term = torch.tensor([[False, False], [True, True]])
    f = est.figures(
        rewards, term, torch.zeros(T, B, dtype=torch.bool), torch.zeros(T, B), 0.08, 0.3,
        torch.ones(1), torch.zeros(T, B, 1), torch.full((T, B, 1), 0.1), rewards + 0.2,
        torch.full((T, B), 0.5),
    )  # fmt: skip
    assert f["bound/span_r"] == 2.0 and f["bound/R_max"] == 1.0
    assert f["bound/alpha_r"] == pytest.approx(0.2) and f["bound/alpha_P"] == pytest.approx(0.1)
    c_p, c_r = model_coefficients(2.0, 0.5, 3)
    assert f["bound/model_per_rho"] == pytest.approx(c_p * 0.1 + c_r * 0.2)
    assert f["bound/model"] == pytest.approx(0.3 * f["bound/model_per_rho"])
    assert f["bound/policy"] == pytest.approx(4 * 1.0 * 1.75 / 0.5 * math.sqrt(0.04))
    assert f["bound/trivial"] == pytest.approx(4.0)
    assert f["bound/vacuous"] == float(f["bound/total"] >= 4.0)
    est.load_state_dict(est.state_dict())  # plain data, for checkpoints


def test_the_relative_mode_reads_the_disagreement_against_its_early_median_by_hand():
    """Values [[0, a], [1, 1]]: row variances a²/4 and 0, so σ̄² = a²/8 (= s/2 for a = 2√s).
    The reference is the median σ̄² of the first 3 updates (0.5, 0.1, 0.3: 0.3 from the third
    on, the median of those so far before); ω = 1 / (1 + σ̄² / reference)."""
    rho = AdaptiveRho(0.5, lam=0.9, mode="relative", reference_updates=3)
    batch = lambda s: torch.tensor([[0.0, 2.0 * math.sqrt(s)], [1.0, 1.0]])
    sig = lambda s: s / 2
    expected_ref = []
    for s in (1.0, 0.2, 0.6, 0.1):
        rho.update(batch(s))
        if len(expected_ref) < 3:
            expected_ref.append(sig(s))
        ref = float(np.median(expected_ref))
        assert rho.sigma2 == pytest.approx(sig(s))
        assert rho.confidence == pytest.approx(1 / (1 + sig(s) / ref))
    decay = make_influence_ratio(InfluenceRatioConfig(mode="decay", rho0=0.5, lam=0.9))
    decay.update(batch(1.0))
    assert decay.confidence == 1.0 and decay.rho == pytest.approx(0.5 * (1 - 0.1 * 0.1))
    with pytest.raises(ValueError, match="'decay' ρ state into a 'relative'"):
        rho.load_state_dict(decay.state_dict())


def test_the_rho0_rule_on_known_terms():
    """b = model terms per unit ρ / the returns' spread: an exact model keeps the ceiling, a
    worse model gets less, monotonically."""
    assert rho0_from_bias(0.5, 0.0) == 0.5
    assert rho0_from_bias(0.5, 1.0) == 0.25
    values = [rho0_from_bias(0.5, b) for b in (0.0, 0.1, 1.0, 10.0)]
    assert values == sorted(values, reverse=True)


def _collect(env: str, diagnostics: bool, steps: int = 40):
    spec = WorkerSpec(env=env, n_envs=4, num_candidates=3, planner=planner_config(env, num_samples=16),
                      networks=NetworkConfig(), seed=0, diagnostics=diagnostics)  # fmt: skip
    torch.manual_seed(0)
    return RolloutWorker(0, spec).collect(FragmentId(0, 0, 0), steps, None, 0)


@pytest.mark.parametrize("env", ["acrobot", "lunarlander"])
def test_diagnostics_leave_the_data_as_they_were_and_acrobots_exact_model_has_no_error(env):
    """The same seeded collect with and without the diagnostics: every array the same, bit for
    bit; Acrobot's model is its env's (App. B.1), so α̂_r is 0 and α̂_P float32 rounding."""
    (r0, v0, _), (r1, v1, _) = _collect(env, False), _collect(env, True)
    for name, a in r0._asdict().items():
        if a is not None:
            assert np.array_equal(a, getattr(r1, name)), name
    for a, b in zip(v0, v1, strict=True):
        assert np.array_equal(a, b)
    assert r0.model_obs is None and r1.model_obs.shape == r1.next_obs.shape
    if env == "acrobot":
        alpha_r, _ = reward_error(torch.as_tensor(r1.rewards), torch.as_tensor(r1.model_rewards))
        scale = torch.as_tensor(r1.next_obs).reshape(-1, r1.next_obs.shape[-1]).std(0) + 1e-6
        alpha_p = transition_error(torch.as_tensor(r1.next_obs), torch.as_tensor(r1.model_obs),
                                   scale)  # fmt: skip
        assert alpha_r == 0.0 and alpha_p < 1e-4
    assert np.isfinite(r1.plan_kl).all() and (r1.plan_kl >= 0).all()


@pytest.mark.parametrize("env", ["acrobot", "lunarlander", "racing"])
def test_a_fragments_diagnostics_at_once_equal_them_step_by_step(env):
    """`RolloutWorker._diagnose` takes a fragment's T steps in one model call of T·B rows
    (the per-call cost was 6–10 % of Lunar Lander's acting): the same figures as T calls of B
    rows, to float32 rounding (a batch's size may change a reduction's order)."""
    spec = WorkerSpec(env=env, n_envs=3, num_candidates=2, planner=planner_config(env, num_samples=8),
                      networks=NetworkConfig(), seed=1, diagnostics=True)  # fmt: skip
    worker, by_step = RolloutWorker(0, spec), []
    act = worker._act

    def acting(*args):  # each step's figures as soon as it is taken (B rows, one call)
        out = act(*args)
        if out[3] is not None:
            by_step.append(worker._diagnose([out[3]]))
        return out

    worker._act = acting
    real, _, _ = worker.collect(FragmentId(0, 0, 0), 12, None, 0)
    assert len(by_step) == 12
    for name in ("model_obs", "model_rewards", "plan_kl"):
        one_by_one = np.stack([getattr(d, name)[0] for d in by_step])
        np.testing.assert_allclose(getattr(real, name), one_by_one, rtol=1e-5, atol=1e-6,
                                   err_msg=name)  # fmt: skip


def test_a_faulted_steps_diagnostics_are_nan_and_the_others_are_not():
    """A step whose env fails (an injected fault: its episode is dropped) has NaN diagnostics
    in its row of the fragment; every other row is finite."""
    spec = WorkerSpec(env="acrobot", n_envs=3, num_candidates=2,
                      planner=planner_config("acrobot", num_samples=8), networks=NetworkConfig(),
                      seed=1, diagnostics=True, inject_faults=(("raise", 0.2),))  # fmt: skip
    real, _, _ = RolloutWorker(0, spec).collect(FragmentId(0, 0, 0), 12, None, 0)
    nan = np.isnan(real.model_rewards)
    assert nan.any() and not nan.all()
    assert np.isnan(real.model_obs[nan]).all() and np.isnan(real.plan_kl[nan]).all()
    assert np.isfinite(real.model_obs[~nan]).all() and np.isfinite(real.plan_kl[~nan]).all()


def test_the_rule_and_the_modes_are_options_refused_where_they_cannot_work():
    from rlmpc.run.cli import parse

    cfg = parse(["--influence-ratio-mode", "relative", "--influence-ratio-rho0-rule", "bound"]).cfg
    assert (cfg.influence_ratio.mode, cfg.method) == ("relative", "ppo-mppi-relative0.3")
    with pytest.raises(SystemExit):
        parse(["--influence-ratio-rho0-rule", "bound", "--no-diagnostics"])
    assert replace(cfg.run, diagnostics=False).diagnostics is False


def test_the_diagnostics_cost_benchmark_runs_the_same_run_with_and_without_them(tmp_path):
    """`python -m rlmpc.bench system --diagnostics-cost` compares runs that differ only in
    the diagnostics switch (the figure itself is a benchmark's, never asserted)."""
    import argparse

    from rlmpc.bench import system

    parser = argparse.ArgumentParser()
    system.add_system_parser(parser.add_subparsers())
    args = parser.parse_args(["system", "--diagnostics-cost", "--env", "acrobot"])
    assert args.diagnostics_cost
    on, off = (system._config(args, str(tmp_path), diagnostics=d) for d in (True, False))
    assert on.run.diagnostics and not off.run.diagnostics
    assert replace(off, run=replace(off.run, diagnostics=True)) == on
