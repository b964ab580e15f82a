"""The contract every env keeps (`envs.base.PlannerModel`, docs/architecture.md), checked on each."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs
from envs.base import PlannerModel


def _rollout(env: gym.Env, seed: int, steps: int = 40) -> tuple[np.ndarray, np.ndarray]:
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    observations, rewards = [obs], []
    for _ in range(steps):
        action = rng.uniform(env.action_space.low, env.action_space.high).astype(
            env.action_space.dtype
        )
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            break
    return np.stack(observations), np.asarray(rewards)


def test_registered_and_checker_passes(env_name):
    env = envs.make(env_name)
    assert env.spec.id == envs.ENV_IDS[env_name]
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_same_seed_same_rollout(env_name):
    a, ra = _rollout(envs.make(env_name), seed=3)
    b, rb = _rollout(envs.make(env_name), seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ra, rb)
    c, _ = _rollout(envs.make(env_name), seed=4)
    assert c.shape != a.shape or not np.array_equal(a, c)


def test_pickles_and_replays(env_name):
    env = envs.make(env_name)
    env.reset(seed=5)
    clone = pickle.loads(pickle.dumps(env))
    a, ra = _rollout(env, seed=7)
    b, rb = _rollout(clone, seed=7)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ra, rb)


def test_state_is_plain_data_and_another_env_goes_on_exactly(env_name, tmp_path):
    """`envs.base.EnvState`: through a weights_only file into an env that lived another episode,
    the same steps and the same next (unseeded) episode; None where it cannot be captured."""
    env = envs.make(env_name)
    _rollout(env, seed=5, steps=7)
    state = env.unwrapped.get_state()
    if state is None:
        assert env_name == "lunarlander"  # Box2D's world: the episode restarts on restore
        return
    torch.save(state, tmp_path / "state.pt")
    other = envs.make(env_name)
    _rollout(other, seed=9, steps=20)
    other.unwrapped.set_state(torch.load(tmp_path / "state.pt", weights_only=True))
    rng = np.random.default_rng(0)
    for _ in range(15):
        action = rng.uniform(env.action_space.low, env.action_space.high)
        a, b = (e.step(action.astype(env.action_space.dtype)) for e in (env, other))
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:4] == b[1:4]
    np.testing.assert_array_equal(env.reset()[0], other.reset()[0])


@pytest.mark.parametrize(
    "bad",
    ["wrong_shape", "nan", "inf", "too_high", "too_low"],
)
def test_bad_action_is_refused(env_name, bad):
    env = envs.make(env_name)
    env.reset(seed=0)
    space = env.action_space
    action = np.zeros(space.shape, dtype=space.dtype)
    if bad == "wrong_shape":
        action = np.zeros(space.shape[0] + 1, dtype=space.dtype)
    elif bad == "nan":
        action[0] = np.nan
    elif bad == "inf":
        action[0] = np.inf
    elif bad == "too_high":
        action[0] = space.high[0] + 0.5
    else:
        action[0] = space.low[0] - 0.5
    with pytest.raises(ValueError, match="action"):
        env.step(action)


def test_psi_of_planner_state_is_the_observation(env_name):
    """ψ(x_t) rebuilds the env's observation s_t (eq. 6 relies on it for virtual data)."""
    env = envs.make(env_name)
    model = env.unwrapped.planner_model()
    assert isinstance(model, PlannerModel)
    obs, _ = env.reset(seed=11)
    rng = np.random.default_rng(0)
    for _ in range(25):
        x = torch.as_tensor(model.planner_state(env), dtype=torch.float64)
        assert x.shape == (model.nx,)
        psi = model.observe(x).numpy()
        assert psi.shape == env.observation_space.shape == (model.nobs,)
        np.testing.assert_allclose(psi, obs, atol=1e-4, rtol=1e-4)
        action = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset(seed=12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_model_is_batched_and_keeps_dtype(env_name, dtype):
    env = envs.make(env_name)
    model = env.unwrapped.planner_model()
    env.reset(seed=1)
    x0 = torch.as_tensor(model.planner_state(env), dtype=dtype)
    B, K = 3, 5
    x = x0.expand(B, K, model.nx).clone()
    u = torch.rand(B, K, model.nu, dtype=dtype) * 2 - 1
    x1 = model.dynamics(x, u)
    assert x1.shape == (B, K, model.nx) and x1.dtype == dtype
    assert model.reward(x, u).shape == (B, K)
    assert model.observe(x1).shape == (B, K, model.nobs)
    assert model.position(x1).shape == (B, K, 2)
    assert model.in_danger(x1).shape == (B, K) and model.in_danger(x1).dtype == torch.bool
    assert model.terminated(x1).shape == (B, K)
    a = torch.rand(B, 4, model.na, dtype=dtype) * 2 - 1
    assert model.target(a).shape == (B, 4, model.nt)
    assert model.tracking_error(x1, model.target(a[:, :1])).shape == (B, K, model.nt)
    # constants of the episode (the danger zone) stay constant under the dynamics
    torch.testing.assert_close(x1[..., model.zone_slice], x[..., model.zone_slice])
    # row independence: one row's result doesn't depend on the others
    torch.testing.assert_close(model.dynamics(x[1:2, 2:3], u[1:2, 2:3]), x1[1:2, 2:3])


def test_rgb_render(env_name):
    env = envs.make(env_name, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.std() > 0  # something is drawn
    env.close()
