"""Cost terms of App. C (planners/costs.py) on the real env models, with hand-worked values."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

import envs
from envs import planner_config
from envs.acrobot.planner import AcrobotPlannerConfig
from envs.lunar_lander.planner import LunarLanderPlannerConfig, lunar_lander_other_cost
from envs.racing.planner import (
    RacingPlannerConfig,
    StadiumRacingPlannerConfig,
    boundary_cost,
    collision_cost,
    racing_other_cost,
)
from planners.costs import (
    CompositeCost,
    ValueTerminalCost,
    build_planner,
    danger_cost,
    quadratic_cost,
    running_cost,
    tracking_cost,
)
from planners.mppi import MPPI
from planners.pytorch_mppi_backend import PytorchMPPIPlanner

F64 = torch.float64


def model_and_state(name: str, seed: int = 0):
    env = envs.make(name)
    model = env.unwrapped.planner_model()
    env.reset(seed=seed)
    return model, torch.as_tensor(model.planner_state(env), dtype=F64)


def test_table5_presets():
    for name, cls in (("acrobot", AcrobotPlannerConfig), ("lunarlander", LunarLanderPlannerConfig),
                      ("racing", RacingPlannerConfig)):  # fmt: skip
        c = planner_config(name)
        assert type(c) is cls
        assert (c.horizon, c.num_samples, c.lambda_temp, c.noise_sigma) == (10, 100, 1.0, 0.5)
        assert c.rl_term == "track" and c.backend == "batched"
    a, ll, r = planner_config("acrobot"), planner_config("lunarlander"), planner_config("racing")
    assert (a.w_rl, a.w_danger, a.horizon_qp) == (50.0, 50.0, 3)
    assert (ll.w_rl, ll.w_danger, ll.w_y, ll.horizon_qp) == (50.0, 400.0, 10.0, 3)
    # the documented departures from Table 5 (LunarLanderPlannerConfig's docstring)
    assert (ll.w_act, ll.effort, ll.w_attitude, ll.attitude_rate) == (0.5, "power", 50.0, 0.1)
    assert (r.w_rl, r.w_danger, r.w_bound, r.w_coll, r.horizon_qp) == (1.0, 300.0, 500.0, 300.0, 2)
    # Racing: eq. (45) and App. B.3's r̂ as written; the stadium keeps its two departures
    assert (r.boundary_margin, r.reward_terminal) == (0.0, False)
    stadium = planner_config("racing-stadium")
    assert type(stadium) is StadiumRacingPlannerConfig
    assert (stadium.boundary_margin, stadium.reward_terminal) == (0.9, True)
    assert planner_config("racing", rl_term="quad").planning_horizon == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [("horizon", 0), ("num_samples", -3), ("lambda_temp", 0.0), ("noise_sigma", float("inf")),
     ("w_rl", -1.0), ("w_danger", float("nan")), ("rl_term", "cubic"), ("backend", "jax"), ("w_y", -2),
     ("effort", "fuel"), ("w_attitude", -1.0)],
)  # fmt: skip
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        LunarLanderPlannerConfig(**{field: value})
    with pytest.raises(ValueError, match="env"):
        planner_config("cartpole")


def test_tracking_cost_wraps_acrobot_angles():
    """Eq. (39) on Acrobot: θ = (π − 0.1, 0.3) against θ* = (−π + 0.1, 0) is 0.2 and 0.3 away."""
    model, x = model_and_state("acrobot")
    x = x.clone()
    x[0], x[1] = math.pi - 0.1, 0.3
    target = torch.tensor([-math.pi + 0.1, 0.0], dtype=F64)
    torch.testing.assert_close(
        tracking_cost(model, x, target), torch.tensor(math.hypot(0.2, 0.3), dtype=F64)
    )


def test_quadratic_cost_is_eq40_in_x_u_coordinates():
    """On Lunar Lander (tracked = S x, linear), q||Sx − x*||² + r||u||² = zᵀQz + pᵀz + q||x*||²."""
    model, x0 = model_and_state("lunarlander")
    g = torch.Generator().manual_seed(0)
    x = x0 + 0.3 * torch.randn(5, model.nx, generator=g, dtype=F64)
    u = torch.rand(5, model.nu, generator=g, dtype=F64) * 2 - 1
    target = model.target(torch.rand(5, model.na, generator=g, dtype=F64) * 2 - 1)
    q, r = 2.0, 0.5
    S = torch.zeros(model.nt, model.nx, dtype=F64)
    S[0, 2] = S[1, 3] = 1.0  # tracked(x) = (ẋ, ẏ)
    torch.testing.assert_close(model.tracked(x), x @ S.T)
    Q = torch.block_diag(q * S.T @ S, r * torch.eye(model.nu, dtype=F64))
    z = torch.cat([x, u], -1)
    p = torch.cat([-2 * q * target @ S, torch.zeros(5, model.nu, dtype=F64)], -1)
    literal = torch.einsum("ni,ij,nj->n", z, Q, z) + (p * z).sum(-1) + q * (target * target).sum(-1)
    torch.testing.assert_close(quadratic_cost(model, x, u, target, q, r), literal)


def test_value_terminal_cost_is_minus_v():
    value = lambda x: x[..., 0] * 2.0 + 1.0
    x = torch.tensor([[1.0, 0.0], [-2.0, 5.0]], dtype=F64)
    torch.testing.assert_close(
        ValueTerminalCost(value)(x, torch.zeros(2, 1)), torch.tensor([-3.0, 3.0], dtype=F64)
    )


def test_danger_and_lunar_lander_terms():
    """Eq. (42) inside/outside the zone carried in x; eq. (43) by hand."""
    model, x = model_and_state("lunarlander")
    cx, cy, w, h = x[model.zone_slice].tolist()
    inside, outside = x.clone(), x.clone()
    inside[0], inside[1] = cx + 0.4 * w, cy - 0.4 * h
    outside[0], outside[1] = cx + 0.6 * w, cy
    both = torch.stack([inside, outside])
    torch.testing.assert_close(danger_cost(model, both), torch.tensor([1.0, 0.0], dtype=F64))
    x = x.clone()
    x[1] = 0.5
    u = torch.tensor([1.0, -0.5], dtype=F64)
    # 10 · 0.5² + 20 · (1 + 0.25) = 2.5 + 25
    torch.testing.assert_close(
        lunar_lander_other_cost(model, x, u, 10.0, 20.0), torch.tensor(27.5, dtype=F64)
    )
    # on engine power: main at 1 fires at power 1, |u_lat| = 0.5 leaves the side engines off
    torch.testing.assert_close(
        lunar_lander_other_cost(model, x, u, 10.0, 20.0, effort="power"),
        torch.tensor(2.5 + 20.0, dtype=F64),
    )
    # + 50 (φ² + 0.1 φ̇²) with φ = 0.2, φ̇ = -1: 50 · (0.04 + 0.1) = 7
    x[4], x[5] = 0.2, -1.0
    torch.testing.assert_close(
        lunar_lander_other_cost(model, x, u, 10.0, 20.0, 50.0, 0.1, effort="power"),
        torch.tensor(2.5 + 20.0 + 7.0, dtype=F64),
    )


def test_lunar_lander_effort_on_power_is_free_when_the_engines_are_off():
    """An idle throttle (u_main <= 0, |u_lat| <= 0.5) costs nothing; gymnasium's map otherwise."""
    model, _ = model_and_state("lunarlander")
    u = torch.tensor([[-0.7, 0.4], [0.0, -0.5], [0.2, 0.0], [-1.0, 0.8], [0.6, -0.9]], dtype=F64)
    expected = torch.tensor([0.0, 0.0, 0.6**2, 0.8**2, 0.8**2 + 0.9**2], dtype=F64)
    torch.testing.assert_close(model.control_effort(u), expected)
    torch.testing.assert_close(model.control_effort(u.view(5, 1, 2)), expected.view(5, 1))


@pytest.mark.parametrize("name", ["racing", "racing-stadium"])
def test_racing_collision_and_boundary_terms(name):
    """Eqs. (44)–(46): opponent on the ego's spot collides; 1.2 half-widths out costs 0.2²."""
    model, x = model_and_state(name)
    track, hw = model.track, model.track.half_width
    s = float(x[6])
    rows = []
    for ey, s_opp in (
        (0.0, s),
        (model.contact_distance + 0.5, s),
        (1.2 * hw, s + 40.0),
        (0.5 * hw, s + 40.0),
    ):
        row = x.clone()
        row[0:2] = torch.as_tensor(track.to_xy(s, ey), dtype=F64)
        row[7], row[9] = ey, s_opp
        row[11:13] = torch.as_tensor(track.centre(s_opp), dtype=F64)  # its point (racing)
        rows.append(row)
    xs = torch.stack(rows)
    torch.testing.assert_close(
        collision_cost(model, xs), torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=F64)
    )
    torch.testing.assert_close(
        boundary_cost(model, xs), torch.tensor([0.0, 0.0, 0.04, 0.0], dtype=F64)
    )
    torch.testing.assert_close(
        racing_other_cost(model, xs, None, 300.0, 500.0),
        torch.tensor([300.0, 0.0, 20.0, 0.0], dtype=F64),
    )


@pytest.mark.parametrize("name", ["acrobot", "lunarlander", "racing"])
@pytest.mark.parametrize("rl_term", ["track", "quad"])
def test_eq38_broadcasts_like_a_loop_over_candidates(name, rl_term):
    """The planner's broadcast call ([B,1,K,H] states × [B,M,1,1] targets) = one call per candidate."""
    model, x0 = model_and_state(name)
    config = planner_config(name, rl_term=rl_term, r_control=0.3)
    cost = running_cost(model, config)
    g = torch.Generator().manual_seed(1)
    B, M, K, H = 2, 3, 4, 5
    x = x0 + 0.05 * torch.randn(B, 1, K, H, model.nx, generator=g, dtype=F64)
    x[..., model.zone_slice] = x0[model.zone_slice]
    u = torch.rand(B, 1, K, H, model.nu, generator=g, dtype=F64) * 2 - 1
    target = model.target(torch.rand(B, M, 1, 1, model.na, generator=g, dtype=F64) * 2 - 1)
    out = cost(x, u, target)
    assert torch.broadcast_shapes(out.shape, (B, M, K, H)) == (B, M, K, H)
    out = out.expand(B, M, K, H)
    for m in range(M):
        torch.testing.assert_close(
            out[:, m], cost(x[:, 0], u[:, 0], target[:, m].expand(B, K, H, model.nt))
        )
    # eq. (38)'s summand term by term
    rl = (
        tracking_cost(model, x, target)
        if rl_term == "track"
        else quadratic_cost(model, x, u, target, 1.0, 0.3)
    )
    other = config.other_cost(model)
    ref = config.w_danger * danger_cost(model, x) + config.w_rl * rl
    if other is not None:
        ref = ref + other(x, u)
    torch.testing.assert_close(out, ref.expand(B, M, K, H))


@pytest.mark.parametrize("name", ["acrobot", "lunarlander", "racing"])
def test_build_planner_plans_on_each_env(name):
    model, x0 = model_and_state(name)
    config = planner_config(name, num_samples=16)
    planner = build_planner(model, config)
    assert type(planner) is MPPI and isinstance(planner.running_cost, CompositeCost)
    assert type(build_planner(model, config, backend="pytorch_mppi")) is PytorchMPPIPlanner
    B, M = 2, 3
    x = x0.expand(B, model.nx).clone()
    a = torch.rand(B, M, model.na, generator=torch.Generator().manual_seed(2), dtype=F64) * 2 - 1
    warm = torch.zeros(B, 10, model.nu, dtype=F64)
    plan = planner.plan(x, a, warm, generator=torch.Generator().manual_seed(0))
    assert plan.paths.shape == (B, M, 11, model.nx) and plan.costs.shape == (B, M)
    lo, hi = model.bounds(x)
    assert (plan.controls >= lo).all() and (plan.controls <= hi).all()
    # picklable (an actor may build it once and ship it)
    clone = pickle.loads(pickle.dumps(planner))
    replan = clone.plan(x, a, warm, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(replan.controls, plan.controls)
    # eq. (41) as terminal cost: a value that rewards the first tracked feature shifts the plan
    quad = build_planner(model, planner_config(name, num_samples=16, rl_term="quad"))
    assert quad.horizon == config.horizon_qp
    with_v = build_planner(model, config, value_fn=lambda x: 1e3 * model.tracked(x)[..., 0])
    p = with_v.plan(x, a, warm, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(p.controls, plan.controls)
