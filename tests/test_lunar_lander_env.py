"""LunarLanderDZ, the env: success, crash, truncation, zones, bad input, pickling, render
(helpers: `tests.test_lunar_lander_model`)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from gymnasium.error import ResetNeeded

import envs
from envs.lunar_lander.airframe import body_state
from envs.lunar_lander.env import LunarLanderDZEnv
from envs.lunar_lander.model import LunarLanderModel
from tests.test_lunar_lander_model import OUT_OF_THE_WAY, _heuristic_for

# ------------------------------------------------------------------------------ the env


def test_safe_landing_reports_success_and_distance():
    env = envs.make("lunarlander", danger_zone=OUT_OF_THE_WAY)
    policy = _heuristic_for(env)
    obs, info = env.reset(seed=0)
    assert info["success"] is False and info["distance_to_pad"] > 1.0
    for _ in range(1000):
        obs, reward, terminated, truncated, info = env.step(
            np.asarray(policy(obs, None), np.float32)
        )
        if terminated or truncated:
            break
    assert terminated and not truncated
    assert info["success"] is True and info["is_success"] is True
    assert info["distance_to_pad"] < 0.1 and reward == 100.0
    assert obs[6] == 1.0 and obs[7] == 1.0


def test_crash_is_not_a_success():
    env = envs.make("lunarlander", danger_zone=OUT_OF_THE_WAY)
    env.reset(seed=0)
    for _ in range(1000):
        *_, reward, terminated, truncated, info = env.step(np.array([-1.0, 0.0], np.float32))
        if terminated or truncated:
            break
    assert terminated and reward == -100.0
    assert info["success"] is False and info["distance_to_pad"] > 0.0


def test_time_limit_truncates_not_terminates():
    assert envs.make("lunarlander").spec.max_episode_steps is None  # no TimeLimit wrapper
    assert LunarLanderDZEnv().max_episode_steps == 1000
    env = LunarLanderDZEnv(max_episode_steps=5)
    env.reset(seed=0)
    hover = np.array([0.3, 0.0], np.float32)
    ends = [env.step(hover)[2:4] for _ in range(5)]
    assert ends == [(False, False)] * 4 + [(False, True)]


def test_zones_are_random_valid_and_seeded():
    env = LunarLanderDZEnv()
    zones = []
    for seed in range(40):
        obs, _ = env.reset(seed=seed)
        cx, cy, w, h = (float(v) for v in obs[8:])
        assert -0.3 <= cx <= 0.3 and 0.55 <= cy <= 0.95 and 0.2 <= w <= 0.5 and 0.1 <= h <= 0.3
        assert cy - h / 2 > 0.2 and cy + h / 2 < 1.4  # above the pad, below the start
        zones.append((cx, cy, w, h))
    assert len(set(zones)) == 40
    np.testing.assert_array_equal(env.reset(seed=7)[0], env.reset(seed=7)[0])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"danger_zone": (0.0, 0.5, -0.2, 0.2)}, "danger_zone"),
        ({"danger_zone": (0.0, 0.5, 0.2)}, "danger_zone"),
        ({"danger_zone": (float("nan"), 0.5, 0.2, 0.2)}, "danger_zone"),
        ({"danger_zone": (0.0, 0.1, 0.2, 0.2)}, "danger_zone"),  # over the pad
        ({"danger_zone": (0.0, 1.4, 0.2, 0.2)}, "danger_zone"),  # over the start
        ({"danger_zone": (0.0, 0.6, 1.5, 0.2)}, "danger_zone"),  # no way around
        ({"zone_cx_range": (0.3, -0.3)}, "zone_cx_range"),
        ({"zone_cy_range": (0.5, float("inf"))}, "zone_cy_range"),
        ({"zone_w_range": (0.0, 0.3)}, "zone_w_range"),
        ({"zone_h_range": "big"}, "zone_h_range"),
        ({"zone_cy_range": (0.0, 0.5)}, "zone_cx/cy/w/h_range"),  # can reach the pad
        ({"max_episode_steps": 0}, "max_episode_steps"),
        ({"gravity": 1.0}, "gravity"),
        ({"render_mode": "human"}, "render_mode"),
    ],
)
def test_bad_constructor_arguments_are_refused(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LunarLanderDZEnv(**kwargs)


def test_bad_model_inputs_are_refused():
    model = LunarLanderModel()
    with pytest.raises(ValueError, match="x"):
        model.dynamics(torch.zeros(11), torch.zeros(2))
    with pytest.raises(ValueError, match="u"):
        model.dynamics(torch.zeros(12), torch.zeros(3))
    with pytest.raises(ValueError, match="a"):
        model.target(torch.zeros(3))
    with pytest.raises(ValueError, match="gravity"):
        LunarLanderModel(gravity=-20.0)
    env = LunarLanderDZEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(np.array([0.0, 1.5], np.float32))


def test_pickle_round_trip_then_reset_continues_the_stream():
    env = LunarLanderDZEnv(zone_w_range=(0.3, 0.4))
    env.reset(seed=3)
    for _ in range(10):
        env.step(np.array([0.5, 0.7], np.float32))
    clone = pickle.loads(pickle.dumps(env))
    assert clone.zone_ranges == env.zone_ranges
    with pytest.raises(ResetNeeded):
        clone.step(np.zeros(2, np.float32))
    a, b = env.reset()[0], clone.reset()[0]
    np.testing.assert_array_equal(a, b)
    for _ in range(20):
        u = np.array([0.6, -0.8], np.float32)
        np.testing.assert_array_equal(env.step(u)[0], clone.step(u)[0])


def test_planner_state_reads_wrapped_and_unwrapped_envs():
    env = envs.make("lunarlander")
    model = env.unwrapped.planner_model()
    with pytest.raises(ResetNeeded):
        model.planner_state(env)
    obs, _ = env.reset(seed=5)
    x = model.planner_state(env)
    np.testing.assert_array_equal(x, model.planner_state(env.unwrapped))
    assert x.dtype == np.float64 and x.shape == (12,)
    np.testing.assert_allclose(x[:8], body_state(env.unwrapped.lander_env))
    np.testing.assert_allclose(x, obs, atol=1e-6)


def test_render_draws_the_zone():
    env = LunarLanderDZEnv(render_mode="rgb_array", danger_zone=(-0.5, 0.8, 0.3, 0.2))
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (400, 600, 3) and frame.dtype == np.uint8
    # zone centre: x = 300 + cx·300 px, y = 400 - (118 + cy·200) px (pad at 100 + 18 px)
    r, g, b = frame[400 - 118 - 160, 150].astype(int)
    assert r > 2 * g and r > 2 * b
    plain = LunarLanderDZEnv(render_mode="rgb_array", danger_zone=(0.5, 0.8, 0.3, 0.2))
    plain.reset(seed=0)
    assert not np.array_equal(plain.render()[400 - 118 - 160, 150], frame[400 - 118 - 160, 150])
