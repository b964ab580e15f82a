"""RacingModel, the racing planner's kinematic bicycle, as ``racing-stadium`` plans with it
(`STADIUM_MODEL`): ψ, conventions, batching, reward, mismatch (helpers: `tests.test_racing_dz`;
the circuit's world-frame targets and constant-velocity opponent: `tests.test_racing_circuit`)."""

from __future__ import annotations

import dataclasses
import math
import pickle

import numpy as np
import pytest
import torch

import envs
from envs.racing import task as rt
from envs.racing.env import StadiumRacingDZEnv
from envs.racing.model import STADIUM_MODEL, RacingModel
from envs.racing.track import TrackParams
from rlmpc.bench.model_error import one_step_errors
from tests.test_racing_dz import HW, TRACK, P, placed_env, pure_pursuit

# --- planner model --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live():
    """(env, model, planner states [T, nx], observations [T, nobs]) along a pure-pursuit drive."""
    env = envs.make("racing-stadium")
    model = env.unwrapped.planner_model()
    obs, _ = env.reset(seed=2)
    xs, obs_list = [], []
    for t in range(60):
        xs.append(model.planner_state(env))
        obs_list.append(obs)
        steer = 0.6 * math.sin(0.3 * t)  # weave, to excite the lateral dynamics
        u = np.clip(pure_pursuit(env, 16.0) + np.array([steer, 0.0], np.float32), -1, 1)
        obs, *_ = env.step(u)
    return env, model, np.stack(xs), np.stack(obs_list)


def test_observe_rebuilds_the_env_observation(live):
    _, model, xs, obs = live
    assert xs.shape[1] == model.nx and obs.shape[1] == model.nobs
    rebuilt = model.observe(torch.as_tensor(xs)).numpy()
    np.testing.assert_allclose(rebuilt, obs, rtol=1e-5, atol=1e-4)


def test_model_mismatch_is_visible_but_bounded(live):
    env, model, xs, _ = live
    # re-run the same transitions: x_t, u_t -> env x_{t+1} vs model prediction
    e = env.unwrapped
    errors = []
    for x in xs[:40]:
        e.place(rt.VehicleState(*x[:6]), x[6], x[7], x[8], x[9], e.opp_v)
        u = np.array([0.8, 0.5], np.float32)
        env.step(u)
        pred = model.dynamics(torch.as_tensor(x), torch.as_tensor(u, dtype=torch.float64))
        errors.append(np.hypot(*(pred[:2].numpy() - (e.state.x, e.state.y))))
    errors = np.array(errors)
    assert 0.02 < errors.mean() < 1.0  # metres per 0.1 s step at ~16 m/s, hard steering
    rel = one_step_errors("racing-stadium", steps=300, seed=0, policy="random").relative
    assert 0.05 < rel < 1.0


def test_model_dynamics_conventions(live):
    _, model, xs, _ = live
    x = torch.as_tensor(xs[10])
    x1 = model.dynamics(x, torch.tensor([0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(x1[10:], x[10:])  # opponent speed and zone constant
    assert x1[9] == pytest.approx(float(x[9] + x[10] * P.dt))  # opponent along its line
    assert x1[6] > x[6]  # the ego moves forward
    clipped = model.dynamics(x, torch.tensor([5.0, -7.0], dtype=torch.float64))
    torch.testing.assert_close(
        clipped, model.dynamics(x, torch.tensor([1.0, -1.0], dtype=torch.float64))
    )
    # X, Y, psi stay consistent with the track coordinates the model integrates
    np.testing.assert_allclose(x1[:2].numpy(), TRACK.to_xy(float(x1[6]), float(x1[7])), atol=1e-9)


def test_model_batched_equals_per_row(live):
    _, model, xs, _ = live
    gen = torch.Generator().manual_seed(0)
    x = torch.as_tensor(xs[:12]).reshape(3, 4, -1)
    u = torch.rand(3, 4, 2, generator=gen, dtype=torch.float64) * 2 - 1
    fns = {
        "dynamics": lambda x, u: model.dynamics(x, u),
        "reward": lambda x, u: model.reward(x, u),
        "observe": lambda x, u: model.observe(x),
        "terminated": lambda x, u: model.terminated(x),
        "bp": lambda x, u: model.boundary_proportion(x),
        "opp": lambda x, u: model.opponent_position(x),
        "tracked": lambda x, u: model.tracked(x),
        "target": lambda x, u: model.target(u),
        "danger": lambda x, u: model.in_danger(x),
    }
    for name, f in fns.items():
        batched = f(x, u)
        rows = torch.stack([torch.stack([f(x[i, j], u[i, j]) for j in range(4)]) for i in range(3)])
        torch.testing.assert_close(batched, rows, msg=name)
        f32 = f(x.float(), u.float())
        assert f32.dtype in (torch.float32, torch.bool), name
        if f32.dtype == torch.float32:
            torch.testing.assert_close(f32.double(), batched, rtol=1e-3, atol=1e-3, msg=name)


def test_model_reward_terms(live):
    _, model, xs, _ = live
    x = torch.as_tensor(xs[20]).clone()
    u = torch.tensor([0.0, 0.3], dtype=torch.float64)
    x1 = model.dynamics(x, u)
    base = model.reward(x, u)
    in_zone = x.clone()
    in_zone[15:19] = torch.tensor([float(x1[0]), float(x1[1]), 3.0, 3.0])
    assert model.reward(in_zone, u) - base == pytest.approx(-150.0)
    hit = x.clone()
    hit[9], hit[10] = x1[6] - x[10] * P.dt, x1[3]  # opponent lands on the ego, same speed
    assert model.terminated(model.dynamics(hit, u))
    assert model.reward(hit, u) > base - 50.0  # the collision's -1000 is a terminal reward
    assert float(model.terminal_reward(model.dynamics(hit, u))) == -1000.0
    assert float(model.terminal_reward(x1)) == 0.0
    at_goal = x.clone()
    at_goal[6] = model.goal_length - 0.5
    assert model.terminated(model.dynamics(at_goal, u))
    off = x.clone()
    off[7] = HW + 1.0
    assert model.terminated(off) and float(model.boundary_proportion(off)) == pytest.approx(7 / 6)
    assert model.contact_distance == pytest.approx(2.9)


def test_model_turns_with_at_most_half_the_grip(live):
    """Polack et al.'s bound: full steering at 20 m/s turns the path at a_max / v² (0.5 μ g),
    not at the kinematic tan δ / L; at 5 m/s, where a_max allows more, nothing changes."""
    env, model, xs, _ = live
    free = RacingModel(model.track, model.task, model.car,
                       dataclasses.replace(STADIUM_MODEL, lateral_limit=None))  # fmt: skip
    assert model.max_lateral_accel == pytest.approx(0.5 * 9.81) and free.max_lateral_accel is None
    x = torch.as_tensor(xs[0]).clone()
    x[6], x[8] = 40.0, 0.0  # mid-straight (κ = 0), along the track
    u = torch.tensor([1.0, 0.0], dtype=torch.float64)
    for speed, bounded in ((20.0, True), (5.0, False)):
        x[3], x[4] = speed, 0.0
        turn = lambda m: float(m.dynamics(x, u)[8] - x[8])  # heading change in one step
        if bounded:
            # v² κ ≤ a_max: eψ changes by about v·κ·dt = a_max/v·dt
            assert turn(model) == pytest.approx(0.5 * 9.81 / speed * model.task.dt, rel=0.05)
            assert turn(free) > 3 * turn(model)
        else:
            assert turn(model) == pytest.approx(turn(free), rel=1e-9)


def test_model_targets_are_track_frame_velocities(live):
    _, model, xs, _ = live
    a = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0], [3.0, -3.0]])
    np.testing.assert_allclose(model.target(a).numpy(), [[0, -4], [30, 4], [15, 0], [30, -4]])
    x = torch.as_tensor(xs[0]).clone()
    x[3], x[4], x[8] = 12.0, 0.0, 0.1  # heading 0.1 rad left of the track
    v_t, v_n = model.tracked(x).tolist()
    assert v_t == pytest.approx(12 * math.cos(0.1)) and v_n == pytest.approx(12 * math.sin(0.1))
    assert model.tracking_error(x, model.target(torch.zeros(2, dtype=torch.float64))).shape == (2,)


def test_model_pickles_and_matches_env_parameters():
    env = StadiumRacingDZEnv(track=TrackParams(radius=40.0))
    model = env.planner_model()
    model.observe(torch.zeros(model.nx))  # fill the table cache
    clone = pickle.loads(pickle.dumps(model))
    assert clone.track.length == pytest.approx(env.track.length) != TRACK.length


@pytest.mark.parametrize("s", [40.0, TRACK.length - 0.5])  # a plain step; crossing the goal
def test_model_reward_is_the_env_reward_without_the_goal_bonus(s):
    env = placed_env(s, 1.0, 12.0, s + 60.0)
    model = env.planner_model()
    x = torch.as_tensor(model.planner_state(env))
    u = np.array([0.1, 0.3], np.float32)
    r_hat = float(model.reward(x, torch.as_tensor(u, dtype=torch.float64)))
    _, r, term, _, info = env.step(u)
    bonus = 1000.0 if info["is_success"] else 0.0
    assert term == (s > 300.0) and r_hat == pytest.approx(r - bonus, abs=2.0)  # mismatch only
