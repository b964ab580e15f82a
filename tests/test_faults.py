"""Faults injected on purpose (`envs.faults`): each costs its episode, never the run.

The worker tests force one fault at a known step (the injector's ``schedule``) in one env of
a toy-env worker and compare it with a twin worker without the fault: the other envs act
exactly as the twin's, the faulted env as the twin's up to the fault, and exactly one episode
is dropped and counted under its kind. No Ray starts here.
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.faults import KINDS, FaultInjector, InjectedFault, parse_rates


def test_parse_rates_takes_kind_prob_entries_and_refuses_the_rest():
    assert parse_rates(["raise=0.5", "stall=1"]) == {"raise": 0.5, "stall": 1.0}
    assert parse_rates([]) == {}
    for bad in ["raise=0", "raise=1.5", "raise=nan", "raise", "bogus=0.1", "=0.1"]:
        with pytest.raises(ValueError, match="KIND=PROB"):
            parse_rates([bad])
    with pytest.raises(ValueError, match="twice"):
        parse_rates(["nan_obs=0.1", "nan_obs=0.2"])


def _steps(env: gym.Env, n: int, seed: int = 5) -> list[tuple[np.ndarray, float]]:
    env.reset(seed=seed)
    u = np.zeros(env.action_space.shape, env.action_space.dtype)
    return [env.step(u)[:2] for _ in range(n)]


def test_injector_draws_its_own_stream_and_leaves_the_env_untouched():
    """Same seed, same faults; the env steps exactly as unwrapped, rewards aside where hit."""
    make = lambda seed: FaultInjector(envs.make("acrobot"), {"nan_reward": 0.2}, seed)
    a, b, c = (_steps(make(seed), 60) for seed in (1, 1, 2))
    clean = _steps(envs.make("acrobot"), 60)
    hit = lambda run: [not np.isfinite(r) for _, r in run]
    assert hit(a) == hit(b) != hit(c) and 3 < sum(hit(a)) < 30
    for (o, r), (o_ref, r_ref), h in zip(a, clean, hit(a), strict=True):
        np.testing.assert_array_equal(o, o_ref)
        assert h or r == r_ref


@pytest.mark.parametrize("kind", KINDS)
def test_a_scheduled_fault_fires_at_its_step(kind):
    env = FaultInjector(envs.make("acrobot"), schedule={3: kind}, stall_seconds=0.02)
    env.reset(seed=0)
    u = np.zeros(env.action_space.shape, env.action_space.dtype)
    for _ in range(3):
        o, r, *_ = env.step(u)
        assert np.isfinite(o).all() and np.isfinite(r)
    if kind == "raise":
        with pytest.raises(InjectedFault):
            env.step(u)
        return
    start = time.perf_counter()
    o, r, *_ = env.step(u)
    took = time.perf_counter() - start
    assert np.isfinite(o).all() == (kind != "nan_obs")
    assert np.isfinite(r) == (kind != "nan_reward")
    assert (took >= 0.02) == (kind == "stall")
    assert np.isfinite(env.step(u)[1])  # once
