"""The Gaussian policy and the stacked value ensemble."""

from __future__ import annotations

import math

import pytest
import torch

from learners.policy import (
    GaussianPolicy,
    NetworkConfig,
    ValueEnsemble,
    build_networks,
    fast_tanh,
)


def _obs(B, nobs=3, seed=0):
    return torch.randn(B, nobs, generator=torch.Generator().manual_seed(seed))


def test_sample_shapes_and_log_probs_match_torch_normal():
    torch.manual_seed(0)
    pi = GaussianPolicy(3, 2, log_std_init=-0.5)
    obs = _obs(5)
    actions, logp = pi.sample(obs, 4, generator=torch.Generator().manual_seed(1))
    assert actions.shape == (5, 4, 2) and logp.shape == (5, 4)
    mean = pi.mean(obs)
    ref = torch.distributions.Normal(mean[:, None], torch.exp(pi.log_std)).log_prob(actions).sum(-1)
    torch.testing.assert_close(logp, ref)
    flat = pi.log_prob(obs[:, None].expand(5, 4, 3), actions)
    torch.testing.assert_close(flat, ref)
    ent = torch.distributions.Normal(mean, torch.exp(pi.log_std)).entropy().sum(-1)
    torch.testing.assert_close(pi.entropy(obs), ent)


def test_sampling_is_seeded_and_has_the_policy_moments():
    torch.manual_seed(0)
    pi = GaussianPolicy(3, 2, log_std_init=math.log(0.5))
    obs = _obs(2)
    a1, _ = pi.sample(obs, 3, generator=torch.Generator().manual_seed(5))
    a2, _ = pi.sample(obs, 3, generator=torch.Generator().manual_seed(5))
    a3, _ = pi.sample(obs, 3, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)
    big, _ = pi.sample(obs, 20000, generator=torch.Generator().manual_seed(7))
    # mean of 20000 draws of σ = 0.5: standard error 0.0035; 5 SE = 0.018
    torch.testing.assert_close(big.mean(1), pi.mean(obs), atol=0.018, rtol=0)
    torch.testing.assert_close(big.std(1), torch.full((2, 2), 0.5), atol=0.02, rtol=0)


def test_out_of_range_samples_are_kept_unclipped_with_their_own_log_prob():
    torch.manual_seed(0)
    pi = GaussianPolicy(3, 1, log_std_init=1.0)  # σ ≈ 2.7: most draws leave [-1, 1]
    obs = _obs(1)
    actions, logp = pi.sample(obs, 200, generator=torch.Generator().manual_seed(0))
    assert (actions.abs() > 1.0).float().mean() > 0.5
    torch.testing.assert_close(pi.log_prob(obs.expand(200, 3), actions[0]), logp[0])


def test_policy_checks_shapes():
    pi = GaussianPolicy(3, 2)
    with pytest.raises(ValueError, match="nobs=3"):
        pi.sample(torch.zeros(4, 5), 2)
    with pytest.raises(ValueError, match="M"):
        pi.sample(torch.zeros(4, 3), 0)
    with pytest.raises(ValueError, match="actions"):
        pi.log_prob(torch.zeros(4, 3), torch.zeros(4, 3))


def _head_reference(ens: ValueEnsemble, obs: torch.Tensor, d: int) -> torch.Tensor:
    """Head d evaluated alone with explicit matmuls: the twin of the batched forward."""
    out = []
    for net in (ens.heads, ens.prior):
        h = obs
        for i in range(net.num_layers):
            h = h @ getattr(net, f"w{i}")[d] + getattr(net, f"b{i}")[d, 0]
            if i < net.num_layers - 1:
                h = torch.tanh(h)
        out.append(h[:, 0])
    return out[0] + ens.prior_scale * out[1]


def test_value_ensemble_matches_per_head_reference_and_any_leading_dims():
    torch.manual_seed(0)
    ens = ValueEnsemble(3, ensemble_size=4, hidden_sizes=(8, 8), prior_scale=0.7)
    obs = _obs(6)
    v = ens.values(obs)
    assert v.shape == (6, 4)
    for d in range(4):
        torch.testing.assert_close(v[:, d], _head_reference(ens, obs, d))
    grid = obs.reshape(2, 3, 3)
    torch.testing.assert_close(ens(grid), v.reshape(2, 3, 4))
    torch.testing.assert_close(ens.mean(obs), v.mean(-1))


def test_heads_start_different_and_priors_are_fixed_buffers():
    torch.manual_seed(0)
    ens = ValueEnsemble(3, ensemble_size=5, hidden_sizes=(8,), prior_scale=1.0)
    v = ens(_obs(32))
    assert v.std(-1).min() > 1e-3  # independent initialisation: no two heads alike
    names = {n for n, _ in ens.named_parameters()}
    assert names and all(n.startswith("heads.") for n in names)
    assert {"prior.w0", "prior.w1"} <= set(ens.state_dict())
    prior = {k: t.clone() for k, t in ens.prior.state_dict().items()}
    opt = torch.optim.SGD(ens.parameters(), lr=0.1)
    ens(_obs(8)).square().mean().backward()
    opt.step()
    for k, t in ens.prior.state_dict().items():
        assert torch.equal(t, prior[k])


def test_prior_scale_zero_removes_the_prior():
    torch.manual_seed(0)
    ens = ValueEnsemble(3, ensemble_size=3, hidden_sizes=(8,), prior_scale=0.0)
    obs = _obs(4)
    torch.testing.assert_close(ens(obs), ens.heads(obs).squeeze(-1).T)


def test_trained_heads_agree_on_data_and_disagree_off_it():
    # All heads fit the same targets on s ∈ [-1, 1]; the priors keep them apart on s ∈ [3, 5],
    # which is what Alg. 2 needs: variance where the critic has seen no data.
    torch.manual_seed(0)
    ens = ValueEnsemble(1, ensemble_size=5, hidden_sizes=(32, 32), prior_scale=1.0)
    g = torch.Generator().manual_seed(0)
    s = torch.rand(256, 1, generator=g) * 2 - 1
    target = torch.sin(3 * s[:, 0])
    opt = torch.optim.Adam(ens.parameters(), lr=3e-3)
    for _ in range(400):
        opt.zero_grad()
        (ens(s) - target[:, None]).square().mean().backward()
        opt.step()
    with torch.no_grad():
        on = ens(torch.linspace(-1, 1, 50)[:, None]).var(-1, correction=0).mean()
        off = ens(torch.linspace(3, 5, 50)[:, None]).var(-1, correction=0).mean()
    assert on < 0.01
    assert off > 20 * on


def test_fast_tanh_is_tanh_to_float32_rounding_with_tanh_gradient():
    x = torch.cat((torch.linspace(-12, 12, 20001), _obs(1000, 1)[:, 0] * 1e-3, torch.zeros(1)))
    ref = torch.tanh(x.double())
    y = fast_tanh(x)
    assert float((y.double() - ref).abs().max()) <= 2.5e-7  # torch.tanh: 3e-8; the formula: 2e-7
    assert y[-1] == 0.0 and float(fast_tanh(torch.tensor(40.0))) == 1.0
    xg = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(fast_tanh(xg), xg, torch.ones_like(x))
    torch.testing.assert_close(g.double(), 1 - ref.square(), atol=1e-6, rtol=0)
    z = x.clone()
    with torch.no_grad():
        out = fast_tanh(z, inplace=True)
    assert out.data_ptr() == z.data_ptr() and torch.equal(out, y)
    torch.testing.assert_close(fast_tanh(x.double()), ref, atol=1e-15, rtol=0)


def test_value_ensemble_takes_a_precomputed_prior_and_chunks_large_batches():
    torch.manual_seed(0)
    ens = ValueEnsemble(3, ensemble_size=4, hidden_sizes=(8, 8), prior_scale=0.7)
    obs = _obs(50)
    prior = ens.prior_values(obs)
    assert prior.shape == (50, 4) and not prior.requires_grad
    v = ens(obs)  # gradient tracked: one pass
    torch.testing.assert_close(ens(obs, prior), v)
    with pytest.raises(ValueError, match="prior must have shape"):
        ens(obs, prior[:10])
    ens.heads.chunk_rows = ens.prior.chunk_rows = 7  # 50 rows: 7 full chunks and one of 1
    with torch.no_grad():
        torch.testing.assert_close(ens(obs), v)
    for d in range(4):
        torch.testing.assert_close(v[:, d], _head_reference(ens, obs, d))
    flat = ValueEnsemble(3, ensemble_size=2, hidden_sizes=(8,), prior_scale=0.0)
    assert torch.equal(flat.prior_values(obs), torch.zeros(50, 2))


def test_network_config_and_builder():
    policy, values = build_networks(4, 2, NetworkConfig(hidden_sizes=(16,), ensemble_size=3))
    assert values(torch.zeros(7, 4)).shape == (7, 3)
    assert policy.sample(torch.zeros(7, 4), 5)[0].shape == (7, 5, 2)
    for kwargs, field in (
        ({"hidden_sizes": ()}, "hidden_sizes"),
        ({"hidden_sizes": (0, 4)}, "hidden_sizes"),
        ({"ensemble_size": 0}, "ensemble_size"),
        ({"prior_scale": -1.0}, "prior_scale"),
        ({"log_std_init": float("inf")}, "log_std_init"),
    ):
        with pytest.raises(ValueError, match=f"NetworkConfig.{field}"):
            NetworkConfig(**kwargs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_networks_follow_the_device():
    policy, values = build_networks(3, 2, NetworkConfig())
    policy, values = policy.cuda(), values.cuda()
    obs = _obs(4).cuda()
    a, logp = policy.sample(obs, 3, generator=torch.Generator(device="cuda").manual_seed(0))
    assert a.is_cuda and logp.is_cuda and values(obs).is_cuda
