"""Evaluate any low-level policy ``act(obs)`` with the project's protocol and columns.

The protocol is the one `rlmpc.system.worker.RolloutWorker.evaluate` follows for PPO-MPPI:
episode ``i`` of ``N`` starts from ``env.reset(seed=seed + i)``, runs until ``terminated or
truncated``, and its figures are kept by `rlmpc.system.episodes.EpisodeTracker` (return,
length, success, steps in the danger zone, the env's own end-of-episode figures) and
summarised by `rlmpc.system.records.summarize` (mean and std of each column). ``act`` should
be deterministic (the policy's mean) for a table; the episodes then depend on ``seed`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

import envs
from rlmpc.system.episodes import EpisodeTracker
from rlmpc.system.records import summarize


def first_eval_seed(seed: int) -> int:
    """The first evaluation episode's seed of a run with ``seed`` (as `rlmpc.run.config`)."""
    return 1_000_000 + 10_000 * seed


def evaluate_policy(env: str, act: Callable[[np.ndarray], np.ndarray], episodes: int,
                    seed: int) -> dict[str, Any]:  # fmt: skip
    """``episodes`` episodes (reset seeds ``seed``, ``seed + 1``...) of ``act`` on ``env``.

    ``act`` maps one observation ``[nobs]`` to one low-level action ``[nu]``, clipped here
    to the action space (the envs refuse actions outside it; RLlib clips its training
    actions the same way). Returns `summarize`'s dict:
    ``env``, ``episodes``, and ``{"mean", "std"}`` of ``success_rate``, ``steps``,
    ``reward``, ``danger_steps`` and the env's own columns.
    """
    if env not in envs.names():
        raise ValueError(f"env must be one of {sorted(envs.names())}, got {env!r}")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    e = envs.spec(env).make()
    space = e.action_space
    tracker = EpisodeTracker(1, env)
    try:
        for i in range(episodes):
            obs, _ = e.reset(seed=seed + i)
            while True:
                a = np.asarray(act(obs), dtype=space.dtype).reshape(space.shape)
                if isinstance(space, gym.spaces.Box):
                    a = np.clip(a, space.low, space.high)
                obs, reward, terminated, truncated, info = e.step(a)
                tracker.step(0, float(reward), info)
                if terminated or truncated:
                    tracker.end(0, info)
                    break
    finally:
        e.close()
    return summarize(env, tracker.pop())
