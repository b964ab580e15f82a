"""Faults injected on purpose (``--inject-faults``), to exercise a run's own recovery.

`FaultInjector` wraps one env; each kind fires on a step with its own probability:

| kind | what the step does | what the rollout worker makes of it |
|---|---|---|
| ``raise`` | raises `InjectedFault` (the env is not stepped) | a step that raised |
| ``nan_obs`` | steps, then one entry of the observation is NaN, +inf or -inf | a non-finite step |
| ``nan_reward`` | steps, then the reward is NaN, +inf or -inf | a non-finite step |
| ``stall`` | sleeps ``stall_seconds``, then steps | a step past ``env_step_timeout`` |

Each costs its episode, never the learner's state nor the run: the worker
(`rlmpc.system.worker.RolloutWorker`) records the step as a truncation with reward 0 and
the step's start observation, resets the env, leaves the episode out of the returns and
counts it as faulted by kind (``raise``, ``nan``, ``stall``); the coordinator logs the
counts (``episodes_faulted``, ``faults/*``) and an event line.

The draws come from the wrapper's own generator, seeded by the caller: a run with faults
is reproducible, and the env's and the worker's random streams are the same as without them.
Tests force a fault at a given step with ``schedule`` (step index → kind).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np

#: the kinds of fault, in the order their draws are taken each step
KINDS = ("raise", "nan_obs", "nan_reward", "stall")
#: a stall sleeps this many times the worker's env step timeout
STALL_PAST_TIMEOUT = 1.5

_NON_FINITE = (np.nan, np.inf, -np.inf)


class InjectedFault(RuntimeError):
    """The error a ``raise`` fault raises from ``step``."""


def parse_rates(entries: Iterable[str]) -> dict[str, float]:
    """``KIND=PROB`` entries → {kind: probability per step}; ValueError naming a bad entry."""
    rates: dict[str, float] = {}
    for item in entries:
        kind, sep, prob = item.partition("=")
        try:
            p = float(prob)
        except ValueError:
            p = float("nan")
        if not sep or kind not in KINDS or not 0 < p <= 1:
            raise ValueError(
                f"entries must be KIND=PROB with KIND one of {', '.join(KINDS)} and "
                f"0 < PROB <= 1, got {item!r}"
            )
        if kind in rates:
            raise ValueError(f"{kind} is given twice")
        rates[kind] = p
    return rates


class FaultInjector(gym.Wrapper):
    """``env`` whose steps fail now and then (module docstring).

    ``rates``: kind → probability per step, drawn independently each step from a generator
    seeded with ``seed``; ``schedule``: step index (counted over the wrapper's life, from 0)
    → kind, fired whatever the draws say. A step where several kinds fire stalls first, then
    raises or returns the corrupted result.
    """

    def __init__(
        self, env: gym.Env, rates: Mapping[str, float] | None = None, seed: int = 0,
        stall_seconds: float = 0.0, schedule: Mapping[int, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(env)
        rates, schedule = dict(rates or {}), dict(schedule or {})
        unknown = (set(rates) | set(schedule.values())) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kind(s) {sorted(unknown)}; known: {KINDS}")
        self.rates = np.array([rates.get(k, 0.0) for k in KINDS])
        self.schedule = schedule
        self.stall_seconds = stall_seconds
        self.rng = np.random.default_rng(seed)
        self.steps = 0

    def get_state(self) -> dict[str, Any]:
        """The wrapper's own state (its draws, its step count) as plain data (checkpoints)."""
        return {"rng": self.rng.bit_generator.state, "steps": self.steps}

    def set_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state, self.steps = state["rng"], int(state["steps"])

    def _firing(self) -> set[str]:
        hits = self.rng.random(len(KINDS)) < self.rates
        fire = {k for k, hit in zip(KINDS, hits, strict=True) if hit}
        scheduled = self.schedule.get(self.steps)
        self.steps += 1
        return (fire | {scheduled}) if scheduled else fire

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        fire = self._firing()
        if "stall" in fire:
            time.sleep(self.stall_seconds)
        if "raise" in fire:
            raise InjectedFault(f"fault injected at step {self.steps - 1}")
        obs, reward, terminated, truncated, info = self.env.step(action)
        if "nan_obs" in fire:
            obs = np.array(obs, dtype=np.result_type(obs, np.float32))  # a copy
            obs.flat[self.rng.integers(obs.size)] = self.rng.choice(_NON_FINITE)
        if "nan_reward" in fire:
            reward = float(self.rng.choice(_NON_FINITE))
        return obs, reward, terminated, truncated, info
