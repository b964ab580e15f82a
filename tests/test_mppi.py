"""Batched MPPI (planners/mppi.py): pytorch-mppi equivalence, known answers, bad input.

The toy is a planar double integrator (x = [px, py, vx, vy], u = [ax, ay]) whose cost pulls
the position to the candidate's target, so every answer is known by hand.
"""

from __future__ import annotations

import pytest
import torch

from planners.mppi import (
    MPPI,
    PlannedControls,
    PlanResult,
    make_planner,
    mppi_update,
    mppi_weights,
    path_cost,
    rollout,
    sample_rollout,
    shift_warm_start,
)

DT = 0.1
H, K = 8, 64


def dynamics(x, u):
    p, v = x[..., :2], x[..., 2:]
    return torch.cat([p + DT * v, v + DT * u], -1)


def cost(x, u, target):
    e = x[..., :2] - target
    return (e * e).sum(-1) + 0.1 * (x[..., 2:] ** 2).sum(-1) + 0.01 * (u * u).sum(-1)


def terminal(x, target):
    e = x[..., :2] - target
    return 10.0 * (e * e).sum(-1)


def toy(backend="batched", **overrides) -> MPPI:
    options = dict(
        terminal_cost=terminal, num_samples=K, horizon=H, lambda_temp=0.5,
        noise_sigma=[[0.5, 0.1], [0.1, 0.3]], u_min=-1.0, u_max=[1.0, 0.6],
    )  # fmt: skip
    options.update(overrides)
    return make_planner(dynamics, cost, 2, backend=backend, **options)


def toy_inputs(B=3, M=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 4, generator=g, dtype=dtype)
    a = 2 * torch.randn(B, M, 2, generator=g, dtype=dtype)
    warm = 0.3 * torch.randn(B, H, 2, generator=g, dtype=dtype)
    return x, a, warm


def assert_same_plan(p: PlanResult, q: PlanResult, **tol) -> None:
    for name in PlanResult._fields:
        torch.testing.assert_close(getattr(p, name), getattr(q, name), msg=name, **tol)


# --- equivalence with pytorch-mppi ------------------------------------------------------


@pytest.mark.parametrize("with_terminal", [True, False])
def test_matches_pytorch_mppi_candidate_by_candidate(with_terminal):
    extra = {} if with_terminal else {"terminal_cost": None}
    batched, oracle = toy(**extra), toy("pytorch_mppi", **extra)
    x, a, warm = toy_inputs()
    noise = batched.sample_noise(3, x, torch.Generator().manual_seed(1))
    p = batched.plan(x, a, warm, noise=noise)
    q = oracle.plan(x, a, warm, noise=noise)
    assert_same_plan(p, q, rtol=1e-10, atol=1e-10)
    # the bounds were active for some samples, so the "ε recomputed after bounding" path ran
    perturbed = warm.unsqueeze(1) + noise
    assert (perturbed.abs() > 1.0).any()


def test_backends_share_the_generator_path():
    x, a, warm = toy_inputs(B=2, M=2)
    p = toy().plan(x, a, warm, generator=torch.Generator().manual_seed(5))
    q = toy("pytorch_mppi").plan(x, a, warm, generator=torch.Generator().manual_seed(5))
    assert_same_plan(p, q, rtol=1e-10, atol=1e-10)


def test_weights_and_update_match_a_plain_loop():
    """Eq. (3) twins on random costs, with one non-finite sample."""
    g = torch.Generator().manual_seed(2)
    B, M, lam = 2, 3, 0.7
    costs = 50 * torch.rand(B, M, K, generator=g, dtype=torch.float64) + 1e4
    costs[0, 1, 3] = torch.nan
    eps = torch.randn(B, K, H, 2, generator=g, dtype=torch.float64)
    warm = torch.randn(B, H, 2, generator=g, dtype=torch.float64)
    w = mppi_weights(costs, lam)
    U = mppi_update(warm, eps, w)
    for b in range(B):
        for m in range(M):
            finite = [k for k in range(K) if torch.isfinite(costs[b, m, k])]
            beta = min(float(costs[b, m, k]) for k in finite)
            raw = [
                float(torch.exp(-(costs[b, m, k] - beta) / lam)) if k in finite else 0.0
                for k in range(K)
            ]
            ref = torch.tensor(raw, dtype=torch.float64) / sum(raw)
            torch.testing.assert_close(w[b, m], ref)
            ref_u = warm[b] + sum(ref[k] * eps[b, k] for k in range(K))
            torch.testing.assert_close(U[b, m], ref_u)
    assert w[0, 1, 3] == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_weights_of_samples_far_above_the_best(dtype):
    """Weights that underflow are 0 (not computed); the others are eq. (3)'s, to rounding."""
    costs = torch.tensor([[0.0, 1.0, 50.0, 80.0, 86.0, 100.0, 800.0, 1e4, torch.inf]], dtype=dtype)
    w = mppi_weights(costs, 1.0)
    ref = torch.exp(-costs.double())
    ref = ref / ref.sum()
    torch.testing.assert_close(w.double(), ref, rtol=1e-6, atol=3 * torch.finfo(dtype).tiny)
    assert w.dtype == dtype and (w[0, -3:] == 0).all() and (w[0, :5] > 0).all()


def test_diagonal_noise_is_the_cholesky_product():
    planner = toy(noise_sigma=[0.5, 0.2])
    assert planner.diagonal_sigma and not toy().diagonal_sigma
    x = toy_inputs()[0]
    noise = planner.sample_noise(3, x, torch.Generator().manual_seed(13))
    z = torch.randn(3, K, H, 2, generator=torch.Generator().manual_seed(13), dtype=x.dtype)
    chol = torch.linalg.cholesky(planner.sigma)
    torch.testing.assert_close(noise, z @ chol.T, rtol=0, atol=0)


def test_sample_rollout_is_rollout_stored_component_major():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 1, 4, generator=g, dtype=torch.float64)
    u = torch.randn(3, 5, H, 2, generator=g, dtype=torch.float64)
    states = sample_rollout(dynamics, x, u)
    torch.testing.assert_close(states, rollout(dynamics, x.expand(3, 5, 4), u), rtol=0, atol=0)
    assert states.permute(3, 2, 0, 1).is_contiguous()  # memory [nx, H+1, B, K]


@pytest.mark.parametrize("backend", ["batched", "pytorch_mppi"])
def test_plan_controls_and_paths_are_the_parts_of_plan(backend):
    planner = toy(backend)
    x, a, warm = toy_inputs()
    full = planner.plan(x, a, warm, generator=torch.Generator().manual_seed(12))
    part = planner.plan_controls(x, a, warm, generator=torch.Generator().manual_seed(12))
    for name in PlannedControls._fields:
        torch.testing.assert_close(getattr(part, name), getattr(full, name), rtol=0, atol=0)
    paths = planner.paths(x.unsqueeze(1).expand(3, 4, 4), part.controls)
    torch.testing.assert_close(paths, full.paths, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["acrobot", "lunarlander", "racing"])
@pytest.mark.parametrize("rl_term", ["track", "quad"])
def test_path_cost_with_horizon_sum_is_the_summed_running_cost(name, rl_term):
    """`CompositeCost.horizon_sum` (weights applied after the sum over H) is Σ_t of eq. (38)."""
    import envs
    from envs import planner_config
    from planners.costs import running_cost

    env = envs.make(name)
    model = env.unwrapped.planner_model()
    env.reset(seed=0)
    x = torch.as_tensor(model.planner_state(env), dtype=torch.float64)
    g = torch.Generator().manual_seed(14)
    u = 2 * torch.rand(2, 1, 5, H, model.nu, generator=g, dtype=torch.float64) - 1
    states = rollout(model.dynamics, x.expand(2, 1, 5, model.nx), u)
    target = model.target(2 * torch.rand(2, 3, 1, model.na, generator=g, dtype=torch.float64) - 1)
    cost = running_cost(model, planner_config(name, rl_term=rl_term))
    assert hasattr(cost, "horizon_sum")
    per_step = lambda s, c, t: cost(s, c, t)  # the plain running cost: no horizon_sum
    summed = path_cost(cost, None, states, u, target)
    assert summed.shape == (2, 3, 5)
    torch.testing.assert_close(summed, path_cost(per_step, None, states, u, target))


# --- known answers on the linear-quadratic toy -------------------------------------------


def test_first_control_points_toward_each_candidates_target():
    x = torch.zeros(1, 4, dtype=torch.float64)
    targets = torch.tensor(
        [[[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0], [0.0, -2.0]]], dtype=torch.float64
    )
    plan = toy(num_samples=256).plan(x, targets, torch.zeros(1, H, 2, dtype=torch.float64),
                                     generator=torch.Generator().manual_seed(0))  # fmt: skip
    first = plan.first[0]
    assert first[0, 0] > 0.1 and first[1, 0] < -0.1
    assert first[2, 1] > 0.1 and first[3, 1] < -0.1


def test_planned_cost_is_below_the_nominals_and_paths_follow_controls():
    planner = toy()
    x, a, warm = toy_inputs()
    plan = planner.plan(x, a, warm, generator=torch.Generator().manual_seed(3))
    nominal = rollout(
        dynamics, x.unsqueeze(1).expand(3, 4, 4), warm.unsqueeze(1).expand(3, 4, H, 2)
    )
    nominal_cost = path_cost(cost, terminal, nominal, warm.unsqueeze(1), a)
    assert (plan.costs < nominal_cost).all()
    torch.testing.assert_close(plan.paths[:, :, 0], x.unsqueeze(1).expand(3, 4, 4))
    torch.testing.assert_close(plan.paths, rollout(dynamics, plan.paths[:, :, 0], plan.controls))
    torch.testing.assert_close(plan.costs, path_cost(cost, terminal, plan.paths, plan.controls, a))
    torch.testing.assert_close(plan.first, plan.controls[:, :, 0])


def test_weights_sum_to_one_and_bounds_hold():
    planner = toy(u_min=[-0.2, -0.1], u_max=[0.3, 0.1], noise_sigma=4.0)
    x, a, warm = toy_inputs()
    warm = warm.clamp(-0.1, 0.1)
    noise = planner.sample_noise(3, x, torch.Generator().manual_seed(4))
    plan = planner.plan(x, a, warm, noise=noise)
    assert plan.weights.shape == (3, 4, K)
    assert (plan.weights >= 0).all()
    torch.testing.assert_close(plan.weights.sum(-1), torch.ones(3, 4, dtype=torch.float64))
    lo = torch.tensor([-0.2, -0.1], dtype=torch.float64)
    hi = torch.tensor([0.3, 0.1], dtype=torch.float64)
    assert (plan.controls >= lo).all() and (plan.controls <= hi).all()
    # the bounds bind: the same weights on the unbounded noise would leave them
    unbounded = mppi_update(warm, noise, plan.weights)
    assert (unbounded > hi).any() and (unbounded < lo).any()


def test_batch_rows_are_independent():
    planner = toy()
    x, a, warm = toy_inputs()
    noise = planner.sample_noise(3, x, torch.Generator().manual_seed(6))
    p = planner.plan(x, a, warm, noise=noise)
    x2 = x.clone()
    x2[1] += 5.0
    q = planner.plan(x2, a, warm, noise=noise)
    for name in PlanResult._fields:
        torch.testing.assert_close(getattr(p, name)[[0, 2]], getattr(q, name)[[0, 2]])
    assert not torch.allclose(p.controls[1], q.controls[1])
    # one row alone plans as it does inside the batch
    solo = planner.plan(x[2:], a[2:], warm[2:], noise=noise[2:])
    torch.testing.assert_close(solo.controls[0], p.controls[2])


def test_candidates_share_the_noise_but_plan_apart():
    planner = toy()
    x, a, warm = toy_inputs(M=2)
    a[:, 1] = a[:, 0]
    plan = planner.plan(x, a, warm, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(plan.controls[:, 0], plan.controls[:, 1])  # same target, same plan
    a[:, 1] = a[:, 0] + 3.0
    plan = planner.plan(x, a, warm, generator=torch.Generator().manual_seed(7))
    assert not torch.allclose(plan.controls[:, 0], plan.controls[:, 1])


def test_same_seed_same_plan_other_seed_other_plan():
    planner = toy()
    x, a, warm = toy_inputs()
    p = planner.plan(x, a, warm, generator=torch.Generator().manual_seed(8))
    q = planner.plan(x, a, warm, generator=torch.Generator().manual_seed(8))
    r = planner.plan(x, a, warm, generator=torch.Generator().manual_seed(9))
    assert_same_plan(p, q, rtol=0, atol=0)
    assert not torch.allclose(p.controls, r.controls)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_the_state(dtype):
    x, a, warm = toy_inputs(dtype=torch.float64)
    plan = toy().plan(
        x.to(dtype), a.float(), warm.float(), generator=torch.Generator().manual_seed(0)
    )
    for name in PlanResult._fields:
        assert getattr(plan, name).dtype == dtype, name
    assert plan.paths.shape == (3, 4, H + 1, 4) and plan.costs.shape == (3, 4)


def test_shift_warm_start():
    controls = torch.arange(12.0).reshape(2, 3, 2)
    shifted = shift_warm_start(controls)
    torch.testing.assert_close(shifted[:, :2], controls[:, 1:])
    assert (shifted[:, 2] == 0).all() and controls[0, 0, 0] == 0  # input untouched
