"""Value targets: GAE and virtual path λ-returns against plain loops and hand-worked cases."""

from __future__ import annotations

import pytest
import torch

from learners.targets import gae, reverse_linear_scan, virtual_lambda_return


def gae_loop(rewards, values, next_values, terminated, truncated, gamma, lam):
    """Reference twin: SB3/CleanRL-style GAE, one scalar at a time."""
    T, B = rewards.shape
    adv = torch.zeros(T, B, dtype=torch.float64)
    for b in range(B):
        last = 0.0
        for t in reversed(range(T)):
            term, trunc = bool(terminated[t, b]), bool(truncated[t, b])
            bootstrap = 0.0 if term else float(next_values[t, b])
            delta = float(rewards[t, b]) + gamma * bootstrap - float(values[t, b])
            last = delta + (0.0 if (term or trunc) else gamma * lam * last)
            adv[t, b] = last
    return adv, adv + values


def virtual_loop(path_rewards, path_values, path_terminated, gamma, lam):
    """Reference twin: GAE along each path (with V_0), target V_0 + A_0."""
    N, H = path_rewards.shape
    out = torch.zeros(N, dtype=torch.float64)
    for n in range(N):
        adv = 0.0
        for k in reversed(range(H)):
            live = 0.0 if bool(path_terminated[n, k]) else 1.0
            v0, v1 = float(path_values[n, k]), float(path_values[n, k + 1])
            delta = float(path_rewards[n, k]) + gamma * live * v1 - v0
            adv = delta + gamma * lam * live * adv
        out[n] = adv + float(path_values[n, 0])
    return out


def _random_real(T, B, seed, p_end=0.15):
    g = torch.Generator().manual_seed(seed)
    r = lambda: torch.randn(T, B, generator=g, dtype=torch.float64)
    term = torch.rand(T, B, generator=g) < p_end
    trunc = (torch.rand(T, B, generator=g) < p_end) & ~term
    return r(), r(), r(), term, trunc


@pytest.mark.parametrize("T,B", [(1, 1), (2, 3), (7, 4), (33, 5), (64, 2)])
@pytest.mark.parametrize("seed", [0, 1])
def test_gae_matches_loop_on_random_grids(T, B, seed):
    rewards, values, next_values, term, trunc = _random_real(T, B, seed)
    g = torch.Generator().manual_seed(100 + seed)
    gamma, lam = 0.9 + 0.1 * float(torch.rand(1, generator=g)), float(torch.rand(1, generator=g))
    adv, ret = gae(rewards, values, next_values, term, trunc, gamma, lam)
    adv_ref, ret_ref = gae_loop(rewards, values, next_values, term, trunc, gamma, lam)
    torch.testing.assert_close(adv, adv_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ret, ret_ref, rtol=1e-10, atol=1e-10)


def test_gae_hand_worked():
    # γ = λ = 0.5, V = [1, 2, 3], r = 1 each step, true next values [2, 10, 4].
    # Step 1 is truncated, so it bootstraps from V(final obs) = 10 and stops the trace:
    #   δ0 = 1 + 0.5·2 - 1 = 1,  δ1 = 1 + 0.5·10 - 2 = 4,  δ2 = 1 + 0.5·4 - 3 = 0
    #   A2 = 0, A1 = δ1 = 4 (trace cut), A0 = δ0 + 0.25·A1 = 2;  R = A + V = [3, 6, 3]
    # Terminated instead: δ1 = 1 - 2 = -1, A1 = -1, A0 = 1 - 0.25 = 0.75; R = [1.75, 1, 3]
    col = lambda *x: torch.tensor(x, dtype=torch.float64)[:, None]
    r, v, nv = col(1, 1, 1), col(1, 2, 3), col(2, 10, 4)
    no, at1 = col(0, 0, 0).bool(), col(0, 1, 0).bool()
    adv, ret = gae(r, v, nv, no, at1, 0.5, 0.5)
    torch.testing.assert_close(adv, col(2, 4, 0))
    torch.testing.assert_close(ret, col(3, 6, 3))
    adv, ret = gae(r, v, nv, at1, no, 0.5, 0.5)
    torch.testing.assert_close(adv, col(0.75, -1, 0))
    torch.testing.assert_close(ret, col(1.75, 1, 3))


def test_gae_bootstraps_truncation_not_termination():
    rewards, values, next_values, _, _ = _random_real(6, 1, 3)
    ends = torch.zeros(6, 1, dtype=torch.bool)
    ends[2] = True
    bumped = next_values.clone()
    bumped[2] += 100.0
    none = torch.zeros_like(ends)
    base_term = gae(rewards, values, next_values, ends, none, 0.99, 0.95)[1]
    base_trunc = gae(rewards, values, next_values, none, ends, 0.99, 0.95)[1]
    assert torch.equal(gae(rewards, values, bumped, ends, none, 0.99, 0.95)[1], base_term)
    moved = gae(rewards, values, bumped, none, ends, 0.99, 0.95)[1] - base_trunc
    # the truncated step's return moves by γ·100; steps before it by (γλ)^k γ·100; after: 0
    expected = torch.zeros(6, 1, dtype=torch.float64)
    for t in range(3):
        expected[t] = (0.99 * 0.95) ** (2 - t) * 0.99 * 100.0
    torch.testing.assert_close(moved, expected)


@pytest.mark.parametrize("N,H", [(1, 1), (5, 2), (17, 10), (9, 13)])
@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
def test_virtual_lambda_return_matches_loop(N, H, lam):
    g = torch.Generator().manual_seed(N * 100 + H)
    rewards = torch.randn(N, H, generator=g, dtype=torch.float64)
    values = torch.randn(N, H + 1, generator=g, dtype=torch.float64)
    term = torch.rand(N, H, generator=g) < 0.2
    out = virtual_lambda_return(rewards, values, term, 0.97, lam)
    assert out.shape == (N,)
    torch.testing.assert_close(out, virtual_loop(rewards, values, term, 0.97, lam))


def test_virtual_lambda_return_special_cases():
    g = torch.Generator().manual_seed(7)
    N, H, gamma = 4, 6, 0.9
    r = torch.randn(N, H, generator=g, dtype=torch.float64)
    v = torch.randn(N, H + 1, generator=g, dtype=torch.float64)
    none = torch.zeros(N, H, dtype=torch.bool)
    disc = gamma ** torch.arange(H, dtype=torch.float64)
    # λ = 1: the H-step truncated return of eq. (14)
    eq14 = (r * disc).sum(1) + gamma**H * v[:, H]
    torch.testing.assert_close(virtual_lambda_return(r, v, none, gamma, 1.0), eq14)
    # λ = 0: the one-step target of the eq. (6) tuple
    torch.testing.assert_close(
        virtual_lambda_return(r, v, none, gamma, 0.0), r[:, 0] + gamma * v[:, 1]
    )
    # a terminal state at step 2 makes everything after it irrelevant
    term = none.clone()
    term[:, 2] = True
    base = virtual_lambda_return(r, v, term, gamma, 0.8)
    r2, v2 = r.clone(), v.clone()
    r2[:, 3:] += 50.0
    v2[:, 3:] -= 50.0
    torch.testing.assert_close(virtual_lambda_return(r2, v2, term, gamma, 0.8), base)
    # V_0 never enters the target
    v3 = v.clone()
    v3[:, 0] += 1e3
    torch.testing.assert_close(virtual_lambda_return(r, v3, none, gamma, 0.8),
                               virtual_lambda_return(r, v, none, gamma, 0.8))  # fmt: skip


@pytest.mark.parametrize("T", [1, 2, 3, 5, 8, 17, 100])
def test_reverse_linear_scan_matches_loop(T):
    g = torch.Generator().manual_seed(T)
    x = torch.randn(T, 3, generator=g, dtype=torch.float64)
    c = torch.rand(T, 3, generator=g, dtype=torch.float64)
    y, ref = torch.zeros(3, dtype=torch.float64), torch.zeros(T, 3, dtype=torch.float64)
    for t in reversed(range(T)):
        y = x[t] + c[t] * y
        ref[t] = y
    torch.testing.assert_close(reverse_linear_scan(x, c), ref)


def test_bad_inputs_are_refused():
    r = torch.zeros(4, 2)
    b = torch.zeros(4, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="gamma"):
        gae(r, r, r, b, b, 1.5, 0.95)
    with pytest.raises(ValueError, match="lam"):
        gae(r, r, r, b, b, 0.99, -0.1)
    with pytest.raises(ValueError, match="next_values"):
        gae(r, r, torch.zeros(4, 3), b, b, 0.99, 0.95)
    with pytest.raises(ValueError, match="path_values"):
        virtual_lambda_return(
            torch.zeros(3, 5), torch.zeros(3, 5), torch.zeros(3, 5).bool(), 0.9, 0.9
        )
    with pytest.raises(ValueError, match="path_terminated"):
        virtual_lambda_return(
            torch.zeros(3, 5), torch.zeros(3, 6), torch.zeros(3, 4).bool(), 0.9, 0.9
        )
