"""The fused engine against the autograd engine (the reference): one step's gradient, whole
updates on fixed batches (Table 3's and the options', PO-MPC's KL prior), random streams,
Adam's state."""

from __future__ import annotations

import math

import pytest
import torch

from learners import InfluenceRatioConfig, NetworkConfig, PPOConfig, PPOLearner
from learners.fused_step import LOG_SQRT_2PI
from learners.pompc import KLPriorConfig
from learners.ppo_loss import minibatch_loss
from rlmpc.bench.update import random_batches
from tests.test_pompc import real_batch as kl_real_batch
from tests.test_ppo import NA, NETS, NOBS, SMALL, real_batch, virtual_batch


def _pair(rho=0.3, config=SMALL, nets=NETS, **rho_kwargs) -> tuple[PPOLearner, PPOLearner]:
    make = lambda engine: PPOLearner(
        NOBS, NA, config, nets, InfluenceRatioConfig(rho0=rho, **rho_kwargs), seed=0,
        engine=engine,
    )  # fmt: skip
    return make("fused"), make("autograd")


def _max_diff(a: PPOLearner, b: PPOLearner) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max(
        float((sa[k][n] - sb[k][n]).abs().max()) for k in ("policy", "values") for n in sa[k]
    )


def _same_streams(a: PPOLearner, b: PPOLearner) -> bool:
    return all(
        torch.equal(a.generators[k].get_state(), b.generators[k].get_state()) for k in a.generators
    )


def _reference_step(ref, loss):
    """The autograd engine's step on ``loss``: its raw gradients, then clip and Adam."""
    ref.optimizer.zero_grad()
    loss.backward()
    grads = [p.grad.clone() for p in ref.engine.params]
    ref.engine.clip_gradients()
    ref.optimizer.step()
    return grads


def test_one_step_gradient_and_adam_step_equal_autograd():
    """A fused step's gradient is autograd's of `minibatch_loss` (eq. 10), and the clipped
    Adam step that follows gives the same weights, to float32 rounding."""
    fused, ref = _pair(0.3)
    for lrn in (fused, ref):
        lrn.update(real_batch(), virtual_batch())  # away from the initialisation
    train, _, _ = ref._real_targets(real_batch(seed=3))
    virt, _ = ref._virtual_targets(virtual_batch(seed=4))
    mb, vmb = train.index(torch.arange(16)), virt.index(torch.arange(40, 88))
    loss, terms, vterms = minibatch_loss(ref.policy, ref.values, mb, vmb, 0.3, ref.config)
    grads = _reference_step(ref, loss)

    engine = fused.engine
    engine.nets.pack()
    columns = torch.cat((engine._columns(mb), engine._columns(vmb))).t().contiguous()
    steps = engine.steps
    steps.begin(1)
    backward = steps.backward
    seen = {}

    def keep_gradient(*args):
        backward(*args)
        seen["grad"] = steps.grad.clone()

    steps.backward = keep_gradient
    steps.step(steps.columns(columns), 16, 48, 0.3, 0)
    engine.nets.unpack()
    for k, g in enumerate(grads):
        torch.testing.assert_close(engine.nets.view(seen["grad"], k), g, rtol=1e-5, atol=1e-7)
    assert _max_diff(fused, ref) < 1e-6
    q = steps.q_means[0]
    torch.testing.assert_close(-q[0, 0], terms.policy.mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(q[1], torch.stack((terms.value.mean(), vterms.value.mean())))
    entropy = steps.entropy_sums[0] + NA * (0.5 + LOG_SQRT_2PI)
    torch.testing.assert_close(entropy, terms.entropy.mean())


CASES = {
    "loss mixing": dict(rho=0.3),
    "adaptive, per minibatch": dict(rho=0.3, mode="adaptive", update_every="minibatch"),
    "rho 0 with virtual data": dict(rho=0.0),
    "sample mixing": dict(rho=0.4, config=PPOConfig(batch_size=16, n_epochs=2, mixing="sample")),
    "joint clip, entropy bonus": dict(
        rho=0.3,
        config=PPOConfig(batch_size=16, n_epochs=2, clip_grad_per_network=False, ent_coef=0.01),
    ),  # fmt: skip
    "ragged minibatches, one layer": dict(
        rho=0.3, config=PPOConfig(batch_size=12, n_epochs=2), nets=NetworkConfig((8,), 3)
    ),
    "three layers, raw units": dict(
        rho=0.3, nets=NetworkConfig((8, 6, 5), 2, normalize_obs=False, normalize_values=False)
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_updates_equal_the_autograd_engines(case):
    """Same batches, same seed: the same weights and metrics to float32 rounding, and the
    same random streams (minibatch order, bootstrap draws, per-sample mixing) bit for bit."""
    fused, ref = _pair(**CASES[case])
    for it in range(3):
        real, virt = real_batch(seed=it), virtual_batch(seed=10 + it)
        m_f, m_r = fused.update(real, virt), ref.update(real, virt)
        assert _same_streams(fused, ref)
        assert _max_diff(fused, ref) < 1e-5, case
        assert m_f.keys() == m_r.keys()
        for key, value in m_r.items():
            assert m_f[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (case, key)
    opt_f, opt_r = fused.state_dict()["optimizer"], ref.state_dict()["optimizer"]
    for i, state in opt_r["state"].items():
        assert float(opt_f["state"][i]["step"]) == float(state["step"])
        torch.testing.assert_close(
            opt_f["state"][i]["exp_avg"], state["exp_avg"], atol=1e-6, rtol=1e-4
        )


def test_table3_update_equals_the_autograd_engine():
    """Table 3's iteration (10 epochs × 32 minibatches of 64 real + 192 virtual samples, D = 5
    heads of (64, 64), adaptive ρ, normalisation on) on a fixed batch."""
    T, B, M, H, nobs, na = 32, 64, 4, 10, 12, 2
    real, virtual = random_batches(T, B, (M - 1) * T * B, H, nobs, na, seed=0)
    make = lambda engine: PPOLearner(
        nobs, na, PPOConfig(n_steps=T * B), NetworkConfig(),
        InfluenceRatioConfig(mode="adaptive", rho0=0.3), seed=0, engine=engine,
    )  # fmt: skip
    fused, ref = make("fused"), make("autograd")
    m_f, m_r = fused.update(real, virtual), ref.update(real, virtual)
    assert m_f["minibatch_updates"] == m_r["minibatch_updates"] == 320
    assert _same_streams(fused, ref) and _max_diff(fused, ref) < 1e-5
    for key, value in m_r.items():
        assert m_f[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_checkpoints_cross_between_engines():
    """Adam's state is kept in torch.optim.Adam's format: a checkpoint of one engine resumes
    in the other (to float32 rounding)."""
    fused, ref = _pair(0.3, mode="adaptive")
    fused.update(real_batch(), virtual_batch())
    ref.load_state_dict(fused.state_dict())
    assert _max_diff(fused, ref) == 0.0
    m_f = fused.update(real_batch(seed=1), virtual_batch(seed=1))
    m_r = ref.update(real_batch(seed=1), virtual_batch(seed=1))
    assert _max_diff(fused, ref) < 1e-5 and _same_streams(fused, ref)
    assert m_f["loss/value"] == pytest.approx(m_r["loss/value"], rel=1e-4)
    back = _pair(0.3, mode="adaptive")[0]
    back.load_state_dict(ref.state_dict())
    assert _max_diff(back, ref) == 0.0 and math.isclose(back.rho, ref.rho)


# ---- PO-MPC's KL prior on the fused engine ----------------------------------------------
KL_GRID = [(d, lam) for d in ("reverse", "forward") for lam in (0.1, 9.0)]


def _kl_pair(kl: KLPriorConfig, rho=0.3, **rho_kwargs) -> tuple[PPOLearner, PPOLearner]:
    make = lambda engine: PPOLearner(
        NOBS, NA, SMALL, NETS, InfluenceRatioConfig(rho0=rho, **rho_kwargs), seed=0,
        engine=engine, kl=kl,
    )  # fmt: skip
    return make("fused"), make("autograd")


@pytest.mark.parametrize(("direction", "lam"), KL_GRID)
def test_one_step_with_a_kl_prior_equals_autograd(direction, lam):
    """With PO-MPC's KL term, a fused step's gradient is autograd's of ``minibatch_loss +
    λ · mean KL`` over the real columns, and the step gives the same weights and KL."""
    fused, ref = _kl_pair(KLPriorConfig("planner", kl_lambda=lam, kl_direction=direction))
    for lrn in (fused, ref):
        lrn.update(kl_real_batch(), virtual_batch())  # away from the initialisation
    real = kl_real_batch(seed=3)
    anchor, _ = ref.kl_prior.anchor(real, ref.policy, ref.values.scale.std)
    train, _, _ = ref._real_targets(real, anchor)
    virt, _ = ref._virtual_targets(virtual_batch(seed=4))
    mb, vmb = train.index(torch.arange(16)), virt.index(torch.arange(40, 88))
    # the policy's mean sits away from the prior's and σ differs from σ_p: every term counts
    assert float((ref.policy(mb.batch.obs) - mb.anchor[:, :NA]).abs().min().detach()) > 1e-3
    loss, _, _ = minibatch_loss(ref.policy, ref.values, mb, vmb, 0.3, ref.config)
    kl = ref.kl_prior.policy_kl(ref.policy, mb.batch.obs, mb.anchor)
    loss = loss + lam * kl.mean()
    grads = _reference_step(ref, loss)

    engine = fused.engine
    engine.nets.pack()
    columns = torch.cat((engine._columns(mb, True), engine._columns(vmb, True))).t().contiguous()
    steps = engine.steps
    steps.begin(1)
    backward, seen = steps.backward, {}

    def keep_gradient(*args):
        backward(*args)
        seen["grad"] = steps.grad.clone()

    steps.backward = keep_gradient
    steps.step(steps.columns(columns, anchor=True), 16, 48, 0.3, 0)
    engine.nets.unpack()
    for k, g in enumerate(grads):
        torch.testing.assert_close(engine.nets.view(seen["grad"], k), g, rtol=1e-5, atol=1e-6)
    assert _max_diff(fused, ref) < 1e-6
    torch.testing.assert_close(steps.kl_means[0], kl.mean().detach(), rtol=1e-5, atol=1e-6)


KL_CASES = {
    **{f"planner, {d}, λ = {lam:g}": dict(kl=("planner", lam, d)) for d, lam in KL_GRID},
    "rho 0 (virtual metrics only), reverse, λ = 9": dict(kl=("planner", 9.0, "reverse"), rho=0.0),
    "intermediate, forward, λ = 0.1, adaptive per minibatch": dict(
        kl=("intermediate", 0.1, "forward"), mode="adaptive", update_every="minibatch"
    ),
    "intermediate, reverse, λ = 9, KL critic": dict(kl=("intermediate", 9.0, "reverse", True)),
}


@pytest.mark.parametrize("case", sorted(KL_CASES))
def test_fused_updates_with_a_kl_prior_equal_the_autograd_engines(case):
    """PO-MPC's KL prior on both engines (both directions, λ ∈ {0.1, 9}): same batches, same
    seed, the same weights and metrics (``loss/kl``, ``loss/total`` with λ·KL) to float32
    rounding, and the same random streams."""
    args = dict(KL_CASES[case])
    prior, lam, direction, *critic = args.pop("kl")
    kl = KLPriorConfig(prior, kl_lambda=lam, kl_direction=direction, kl_critic=bool(critic))
    fused, ref = _kl_pair(kl, **args)
    for it in range(3):
        real, virt = kl_real_batch(seed=it), virtual_batch(seed=10 + it)
        m_f, m_r = fused.update(real, virt), ref.update(real, virt)
        assert _same_streams(fused, ref)
        assert _max_diff(fused, ref) < 1e-5, case
        assert m_f.keys() == m_r.keys() and "loss/kl" in m_f
        for key, value in m_r.items():
            assert m_f[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (case, key)


def test_bench_update_counts_the_same_arithmetic_for_both_engines():
    """The floor's inputs: the profiler's FLOP count of one update is the update's maths, so
    both engines count the same within their bookkeeping (10 %), and the floor is positive."""
    from rlmpc.bench.update import main

    fused = main(["--iters", "1", "--engines", "fused"])
    auto = main(["--iters", "1", "--engines", "autograd"])
    assert fused["learner_gflop"] > 1.0
    assert auto["learner_gflop"] == pytest.approx(fused["learner_gflop"], rel=0.1)
    assert fused["learner_sigmoid_M"] > 0.0 and fused["learner_activation_backward_M"] > 0.0
    assert fused["gemm_ref_gflops"] > 0.0 and "autograd_over_floor" in auto
    assert 0.0 < fused["learner_floor_s"] < auto["learner_update_autograd_cpu_s"]
    assert "learner_floor_s" not in main(["--iters", "1", "--engines", "fused", "--no-floor"])
