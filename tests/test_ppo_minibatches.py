"""PPO's minibatches, batches, devices and gradient clipping (helpers: `tests.test_ppo`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from learners import (
    InfluenceRatioConfig,
    PPOConfig,
    PPOLearner,
    RealBatch,
    TrainBatch,
    VirtualBatch,
    bernoulli_mix,
    mix_batches,
    weighted_loss,
)
from learners.ppo_loss import minibatch_loss, ppo_loss_terms, ppo_objective
from learners.targets import virtual_lambda_return
from tests.test_ppo import NA, NETS, NOBS, SMALL, H, learner, real_batch, same_state, virtual_batch


def test_one_pass_minibatch_loss_is_eq10_of_separate_passes():
    # For ρ > 0 the learner sends real and virtual minibatches through the networks together,
    # with the value priors computed once per iteration; the reference runs each buffer alone.
    lrn = learner(0.3)
    lrn.update(real_batch(), virtual_batch())  # networks away from their initialisation
    train, _, _ = lrn._real_targets(real_batch(seed=3))
    virt, _ = lrn._virtual_targets(virtual_batch(seed=4))
    mb, vmb = train.index(torch.arange(16)), virt.index(torch.arange(40, 88))
    for rho in (0.3, 0.0):
        loss, terms, vterms = minibatch_loss(lrn.policy, lrn.values, mb, vmb, rho, lrn.config)
        grads = torch.autograd.grad(loss, [*lrn.policy.parameters(), *lrn.values.parameters()])
        parts = [
            ppo_objective(ppo_loss_terms(lrn.policy, lrn.values, s.batch, 0.2), 0.5, 0.0).mean()
            for s in (mb, vmb)
        ]
        ref = weighted_loss(parts[0], parts[1], rho)
        torch.testing.assert_close(loss, ref)
        for g, r in zip(
            grads,
            torch.autograd.grad(ref, [*lrn.policy.parameters(), *lrn.values.parameters()]),
            strict=True,
        ):
            torch.testing.assert_close(g, r)
        assert terms.value.shape == (16,) and vterms.value.shape == (48,)


def test_virtual_targets_are_the_path_lambda_returns_of_the_current_critic():
    lrn = learner(0.3)
    virtual = virtual_batch()
    samples, _ = lrn._virtual_targets(virtual)
    with torch.no_grad():
        ref = virtual_lambda_return(
            virtual.path_rewards, lrn.values.mean(virtual.path_obs), virtual.path_terminated,
            0.99, 0.95,
        )  # fmt: skip
        torch.testing.assert_close(samples.batch.returns, ref)
        torch.testing.assert_close(samples.prior, lrn.values.prior_values(virtual.obs))


def test_loading_a_state_keeps_the_learners_adam_kernel():
    a = learner(0.3)
    a.update(real_batch(), virtual_batch())
    state = a.state_dict()
    for group in state["optimizer"]["param_groups"]:
        group["fused"] = None  # as saved by a plain (for-loop) Adam
    b = learner(0.3)
    b.load_state_dict(state)
    assert all(g["fused"] for g in b.optimizer.param_groups)
    assert same_state(a, b)
    m_a, m_b = (
        a.update(real_batch(seed=1), virtual_batch()),
        b.update(real_batch(seed=1), virtual_batch()),
    )
    assert m_a == m_b and same_state(a, b)


def test_virtual_minibatches_sweep_the_virtual_buffer():
    lrn = learner(0.3)
    chunks = lrn.draws.virtual_chunks(96, 2)  # default: ⌈96 / 2⌉ = 48 per real minibatch
    assert chunks.shape == (2, 48) and sorted(chunks.flatten().tolist()) == list(range(96))
    chunks = lrn.draws.virtual_chunks(10, 4)  # fewer than needed: every sample, some twice
    assert chunks.shape == (4, 3) and set(chunks.flatten().tolist()) == set(range(10))
    fixed = learner(0.3, config=PPOConfig(batch_size=16, virtual_batch_size=5))
    assert fixed.draws.virtual_chunks(96, 2).shape == (2, 5)


def test_bernoulli_mix_draws_and_mix_batches_fills():
    g = torch.Generator().manual_seed(0)
    z, idx = bernoulli_mix(10000, 0.3, 50000, g)
    assert abs(float(z.float().mean()) - 0.3) < 5 * math.sqrt(0.21 / 10000)
    assert len(set(idx[z].tolist())) == int(z.sum())  # without replacement
    assert not bernoulli_mix(100, 0.0, 5, g)[0].any() and bernoulli_mix(100, 1.0, 5, g)[0].all()
    with pytest.raises(ValueError, match="empty buffer"):
        bernoulli_mix(10, 1.0, 0, g)
    ones = lambda n, fill: TrainBatch(
        *(torch.full(s, fill) for s in ((n, 2), (n, 1), (n,), (n,), (n,), (n, 3)))
    )
    z = torch.tensor([True, False, True])
    mixed = mix_batches(ones(3, 0.0), ones(4, 1.0), z, torch.tensor([3, 0, 1]))
    assert mixed.returns.tolist() == [1.0, 0.0, 1.0] and mixed.obs[:, 0].tolist() == [1.0, 0.0, 1.0]


def test_batches_from_numpy_check_shapes_and_concat():
    real = real_batch(T=5, B=2)
    assert real.dims() == (5, 2, NOBS, NA) and real.obs.dtype == torch.float32
    assert real.terminated.dtype == torch.bool
    assert RealBatch.concat([real, real_batch(T=5, B=3)]).dims() == (5, 5, NOBS, NA)
    v = virtual_batch(N=7)
    assert v.dims() == (7, H, NOBS, NA) and VirtualBatch.concat([v, v]).size == 14
    arrays = {f: t.numpy() for f, t in real._asdict().items() if t is not None}
    arrays["logp"] = arrays["logp"][:, :1]
    with pytest.raises(ValueError, match=r"RealBatch.logp must have shape \[5, 2\]"):
        RealBatch.from_numpy(**arrays)
    with pytest.raises(ValueError, match="path_obs"):
        VirtualBatch.from_numpy(**{**v._asdict(), "path_obs": np.zeros((7, H, NOBS))})
    with pytest.raises(ValueError, match="nobs=4"):
        learner().update(real_batch(nobs=4))
    # float64 tensors built by hand are cast to the networks' dtype; bools stay bool
    doubled = RealBatch(*(t.double() if t.is_floating_point() else t for t in real_batch()[:7]))
    assert learner().update(doubled)["minibatch_updates"] == 4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_learner_follows_the_device_and_matches_cpu():
    cpu = learner(0.3, mode="adaptive")
    gpu = PPOLearner(NOBS, NA, SMALL, NETS, InfluenceRatioConfig(mode="adaptive"), device="cuda")
    m_c, m_g = cpu.update(real_batch(), virtual_batch()), gpu.update(real_batch(), virtual_batch())
    assert next(gpu.policy.parameters()).is_cuda
    assert all(t.device.type == "cpu" for t in gpu.get_weights()["policy"].values())
    assert m_g["rho"] == pytest.approx(m_c["rho"], rel=1e-5)
    assert m_g["loss/value"] == pytest.approx(m_c["loss/value"], rel=1e-3)


@pytest.mark.parametrize("per_network", [True, False])
def test_gradient_clipping_per_network_keeps_the_policy_step(per_network):
    """A value loss in the hundreds must not shrink the policy's step (per-network clip)."""
    learner = PPOLearner(4, 2, PPOConfig(clip_grad_per_network=per_network), engine="autograd")
    policy, values = learner.engine.groups
    for group, norm in ((policy, 0.3), (values, 100.0)):
        for p in group:
            p.grad = torch.ones_like(p)
        scale = norm / torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in group]))
        for p in group:
            p.grad *= scale
    total = learner.engine.clip_gradients()
    assert float(total) == pytest.approx((0.3**2 + 100.0**2) ** 0.5, rel=1e-5)
    after = lambda group: float(
        torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in group]))
    )
    if per_network:
        assert after(policy) == pytest.approx(0.3, rel=1e-4)
        assert after(values) == pytest.approx(0.5, rel=1e-4)
    else:  # SB3's joint clip: both shrink by the same factor 0.5 / 100.0004
        assert after(policy) == pytest.approx(0.3 * 0.5 / 100.00045, rel=1e-4)
