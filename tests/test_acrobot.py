"""AcrobotDZ (App. B.1): the env against gymnasium's physics, the exact model against the env."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.acrobot import AcrobotEnv, wrap

import envs
from envs.acrobot.env import ZONES, AcrobotDZEnv
from envs.acrobot.model import AcrobotModel, wrap_angle

F64 = torch.float64


def t64(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def test_env_physics_is_gymnasium_acrobot():
    """With torques -1/0/+1 the env follows gymnasium's Acrobot-v1 (book dynamics, RK4, wrap, clip)."""
    env, ref = AcrobotDZEnv(), AcrobotEnv()
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    ref.reset(seed=0)
    diff = 0.0
    for _ in range(400):
        ref.state = env.state.copy()
        a = int(rng.integers(3))
        env.step(np.array([a - 1.0], np.float32))
        ref.step(a)
        diff = max(diff, float(np.abs(env.state - ref.state).max()))
    assert diff < 1e-12


def test_model_matches_env_over_200_random_steps():
    """Float64: one-step predictions and a 200-step open-loop rollout track the env; rewards equal."""
    env, model = AcrobotDZEnv(danger_zone=(0.0, -1.9, 0.6)), AcrobotModel()
    rng = np.random.default_rng(1)
    env.reset(seed=1)
    x_open = t64(model.planner_state(env))
    one_step, open_loop, rewards = 0.0, 0.0, set()
    for _ in range(200):
        x = t64(model.planner_state(env))
        u = rng.uniform(-1, 1, size=1).astype(np.float32)
        u64 = t64(u)
        x_pred, r_pred = model.dynamics(x, u64), model.reward(x, u64)
        x_open = model.dynamics(x_open, u64)
        _, r, terminated, truncated, _ = env.step(u)
        x_env = model.planner_state(env)
        one_step = max(one_step, float(np.abs(x_pred.numpy() - x_env).max()))
        open_loop = max(open_loop, float(np.abs(x_open.numpy() - x_env).max()))
        assert r_pred.item() == r
        assert bool(model.terminated(x_pred)) == terminated
        rewards.add(r)
        assert not truncated
    assert one_step < 1e-12
    assert open_loop < 1e-5
    assert rewards == {-1.0, -51.0}  # the zone was visited, so both branches were compared


def test_model_matches_env_on_states_across_the_space():
    """Next state and r̂(x, u) match the env on states over the whole circle and velocity range,
    the velocity limits included (the reward bit for bit)."""
    env, model = AcrobotDZEnv(danger_zone=(1.0, 0.0, 1.0)), AcrobotModel()
    rng = np.random.default_rng(2)
    vmax = np.array([4 * np.pi, 9 * np.pi])
    seen, clipped = set(), 0
    for i in range(300):
        state = np.concatenate([rng.uniform(-np.pi, np.pi, 2), rng.uniform(-vmax, vmax)])
        env.reset(seed=i, options={"state": state})
        u = rng.uniform(-1, 1, size=1).astype(np.float32)
        x = t64(model.planner_state(env))
        _, r, terminated, _, info = env.step(u)
        x_next = model.dynamics(x, t64(u))
        assert np.abs(x_next.numpy() - model.planner_state(env)).max() < 1e-12
        assert model.reward(x, t64(u)).item() == r
        assert bool(model.in_danger(x_next)) == info["in_danger"]
        assert bool(model.terminated(x_next)) == terminated
        seen.add(r)
        clipped += int(np.any(np.abs(env.state[2:]) == vmax))
    assert seen == {-1.0, -51.0}
    assert clipped > 10  # the velocity limits were exercised


def test_tip_frame():
    """Pivot at the origin, x right, y up: hanging tip at (0, -2), θ1 = π/2 puts it at (2, 0)."""
    model = AcrobotModel()
    x = t64([[0, 0, 0, 0, 0, 0, 1, 1], [np.pi / 2, 0, 0, 0, 0, 0, 1, 1]])
    assert torch.allclose(model.position(x), t64([[0.0, -2.0], [2.0, 0.0]]), atol=1e-12)


def _next_tip(state, u=0.0):
    model = AcrobotModel()
    x = t64([*state, 0, 0, 1, 1])
    return model.position(model.dynamics(x, t64([u]))).numpy()


def test_tip_inside_zone_after_the_step_gives_minus_51():
    state = [np.pi / 2, 0.0, 2.0, 0.0]  # horizontal to the right, swinging up
    tip_before = np.array([2.0, 0.0])
    tip_after = _next_tip(state)
    assert np.linalg.norm(tip_after - tip_before) > 0.5
    env = AcrobotDZEnv(danger_zone=(*tip_after, 0.2))
    env.reset(seed=0, options={"state": state})
    _, r, terminated, truncated, info = env.step(np.zeros(1, np.float32))
    assert (r, terminated, truncated, info["in_danger"]) == (-51.0, False, False, True)
    env = AcrobotDZEnv(danger_zone=(*tip_before, 0.2))  # only the state before the step is inside
    env.reset(seed=0, options={"state": state})
    _, r, _, _, info = env.step(np.zeros(1, np.float32))
    assert (r, info["in_danger"]) == (-1.0, False)


def test_goal_height_terminates():
    env, model = AcrobotDZEnv(), AcrobotModel()
    env.reset(seed=0, options={"state": [np.pi, 0.0, 0.0, 0.0]})  # upright, tip at y = 2
    x = t64(model.planner_state(env))
    _, r, terminated, truncated, info = env.step(np.zeros(1, np.float32))
    assert (terminated, truncated, info["is_success"]) == (True, False, True)
    assert r == -1.0 and bool(model.terminated(model.dynamics(x, t64([0.0]))))
    straight = [[th, 0, 0, 0, 0, 0, 1, 1] for th in (np.arccos(-0.495), np.arccos(-0.505))]
    assert model.terminated(t64(straight)).tolist() == [False, True]  # tip y = 0.99, 1.01


def test_truncated_at_step_500_and_not_terminated():
    env = AcrobotDZEnv(danger_zone=(2.0, 2.0, 0.1))
    env.reset(seed=0, options={"state": [0.0, 0.0, 0.0, 0.0]})  # at rest, hanging: never terminates
    for step in range(1, 501):
        _, _, terminated, truncated, _ = env.step(np.zeros(1, np.float32))
        assert not terminated
        assert truncated == (step == 500)
    short = AcrobotDZEnv(max_episode_steps=3)
    short.reset(seed=0)
    ends = [short.step(np.zeros(1, np.float32))[3] for _ in range(3)]
    assert ends == [False, False, True]
    assert gym.make("rlmpc/AcrobotDZ-v0").spec.max_episode_steps is None  # no TimeLimit wrapper


def test_tracking_error_wraps_angles():
    model = AcrobotModel()
    x = t64([np.pi - 0.1, -np.pi + 0.2, 0, 0, 0, 0, 1, 1])
    err = model.tracking_error(x, t64([-np.pi + 0.1, np.pi - 0.1]))
    assert torch.allclose(err, t64([-0.2, 0.3]), atol=1e-12)
    d = torch.rand(1000, 2, dtype=F64, generator=torch.Generator().manual_seed(0)) * 12 - 6
    xs = torch.cat([d, torch.zeros(1000, 6, dtype=F64)], -1)
    err = model.tracking_error(xs, torch.zeros(1000, 2, dtype=F64))
    assert torch.allclose(err, torch.atan2(torch.sin(d), torch.cos(d)), atol=1e-12)
    assert bool((err.abs() <= np.pi).all())


def test_target_maps_and_clips_actions():
    model = AcrobotModel()
    a = t64([[1.0, -0.5], [3.0, -2.0]])
    assert torch.allclose(model.target(a), t64([[np.pi, -np.pi / 2], [np.pi, -np.pi]]))
    assert torch.equal(model.tracked(t64([0.1, 0.2, 3, 4, 0, 0, 1, 1])), t64([0.1, 0.2]))


def test_wrap_angle_is_gymnasium_wrap():
    values = np.concatenate([np.linspace(-20, 20, 4001), [np.pi, -np.pi, 3 * np.pi, -3 * np.pi]])
    ours = wrap_angle(t64(values)).numpy()
    ref = np.array([wrap(v, -np.pi, np.pi) for v in values])
    assert np.abs(ours - ref).max() < 1e-12
    assert ours[-4] == np.pi and ours[-3] == -np.pi


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_batched_model_equals_per_row_calls(dtype):
    model = AcrobotModel()
    g = torch.Generator().manual_seed(3)
    B, K = 3, 5
    x = torch.cat(
        [
            (torch.rand(B, K, 2, generator=g) * 2 - 1) * math.pi,
            torch.randn(B, K, 2, generator=g) * 3,
            torch.stack([torch.tensor(z.as_tuple()) for z in ZONES[:B]])[:, None].expand(B, K, 4),
        ],
        -1,
    ).to(dtype)
    u = (torch.rand(B, K, 1, generator=g) * 4 - 2).to(dtype)  # beyond the bounds: clipped
    x_next, r, obs = model.dynamics(x, u), model.reward(x, u), model.observe(x)
    assert x_next.shape == (B, K, 8) and x_next.dtype == dtype and r.shape == (B, K)
    assert obs.shape == (B, K, 9)
    assert torch.equal(x_next[..., 4:], x[..., 4:])  # the zone rides along unchanged
    for b in range(B):
        for k in range(K):
            row = model.dynamics(x[b, k], u[b, k])
            assert torch.allclose(row, x_next[b, k], atol=1e-12 if dtype == F64 else 1e-5)
            assert torch.equal(model.reward(x[b, k], u[b, k]), r[b, k])
            assert torch.equal(model.observe(x[b, k]), obs[b, k])
    clipped = model.dynamics(x, u.clamp(-1, 1))
    assert torch.equal(clipped, x_next)
    # one state broadcast against K controls
    fan = model.dynamics(x[0, 0], u[0])
    assert fan.shape == (K, 8)
    assert torch.allclose(
        fan[2], model.dynamics(x[0, 0], u[0, 2]), atol=1e-12 if dtype == F64 else 1e-5
    )


def test_observe_rebuilds_the_env_observation_and_planner_state_on_wrapped_envs():
    env = envs.make("acrobot")
    model = env.unwrapped.planner_model()
    assert isinstance(model, AcrobotModel)
    obs, _ = env.reset(seed=4)
    for _ in range(20):
        x = model.planner_state(env)  # the wrapped env
        assert np.array_equal(x, model.planner_state(env.unwrapped))
        assert np.allclose(model.observe(t64(x)).numpy(), obs, atol=1e-6)
        assert env.observation_space.contains(obs)
        obs, *_ = env.step(env.action_space.sample())


def test_zone_drawn_from_the_seed():
    env = AcrobotDZEnv()
    zones = {}
    for seed in range(40):
        obs, _ = env.reset(seed=seed)
        zones[seed] = tuple(obs[6:9])
        assert env.zone in ZONES
    assert len(set(zones.values())) == len(ZONES)
    assert all(tuple(env.reset(seed=s)[0][6:9]) == zones[s] for s in range(5))


def test_render_draws_the_zone():
    env = AcrobotDZEnv(render_mode="rgb_array", danger_zone=(1.5, 1.5, 0.4))
    env.reset(seed=0, options={"state": [0.0, 0.0, 0.0, 0.0]})
    frame = env.render()
    assert frame.shape == (500, 500, 3) and frame.dtype == np.uint8
    scale = 500 / 4.4
    col, row = int(250 + 1.5 * scale), int(250 - 1.5 * scale)
    assert tuple(frame[row, col]) == (235, 120, 120)  # zone colour at its centre
    assert tuple(frame[int(250 + 2 * scale) - 2, 250]) != (255, 255, 255)  # the hanging tip
    env.close()


@pytest.mark.parametrize(
    "action", [np.zeros(2, np.float32), np.array([np.nan], np.float32), np.array([1.5]), 0.3]
)
def test_bad_actions_raise(action):
    env = AcrobotDZEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"danger_zone": (0.0, 1.0)}, "danger_zone"),
        ({"danger_zone": (0.0, np.inf, 0.5)}, "danger_zone"),
        ({"danger_zone": (0.0, 1.0, 0.0)}, "danger_zone"),
        ({"danger_zone": (5.0, 1.0, 0.5)}, "danger_zone"),
        ({"max_episode_steps": 0}, "max_episode_steps"),
        ({"max_episode_steps": 2.5}, "max_episode_steps"),
        ({"render_mode": "human"}, "render_mode"),
    ],
)
def test_bad_options_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        AcrobotDZEnv(**kwargs)


def test_bad_reset_options_and_model_inputs_raise():
    env, model = AcrobotDZEnv(), AcrobotModel()
    with pytest.raises(ValueError, match="state"):
        env.reset(options={"state": [0.0, 0.0]})
    with pytest.raises(ValueError, match="unknown"):
        env.reset(options={"low": -0.2})
    with pytest.raises(ValueError, match="x must"):
        model.dynamics(torch.zeros(6, dtype=F64), torch.zeros(1, dtype=F64))
    with pytest.raises(ValueError, match="u must"):
        model.dynamics(torch.zeros(8, dtype=F64), torch.zeros(2, dtype=F64))
    with pytest.raises(ValueError, match="a must"):
        model.target(torch.zeros(3, dtype=F64))
