"""Evaluate any low-level policy ``act(obs)`` with the project's protocol and columns.

The protocol is the one `rlmpc.system.worker.RolloutWorker.evaluate` follows for PPO-MPPI:
episode ``i`` of ``N`` starts from ``env.reset(seed=seed + i)``, runs until ``terminated or
truncated``, and its figures are kept by `rlmpc.system.episodes.EpisodeTracker` (return,
length, success, steps in the danger zone, the env's own end-of-episode figures) and
summarised by `rlmpc.system.records.summarize` (mean and std of each column). ``act`` should
be deterministic (the policy's mean) for a table; the episodes then depend on ``seed`` only.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import envs
from common.checks import SEED_MAX, episode_seeds_problem, int_in, seed_arg, writable_dir
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


def baseline_parser(library: str, algos: Sequence[str]) -> argparse.ArgumentParser:
    """The options every baseline library's command takes (``python -m rlmpc.baselines.rllib``,
    ``... .sb3``); a library adds its own before `parse_baseline_args`."""
    p = argparse.ArgumentParser(description=f"Train and evaluate a {library} baseline (Table 1).")
    p.add_argument("--algo", choices=list(algos), required=True)
    p.add_argument("--env", type=envs.registry.env_arg, required=True)
    p.add_argument("--env-steps", type=int_in(1), required=True, help="env steps to train on, >= 1")
    p.add_argument("--seed", type=seed_arg, default=0, help=f"run seed, 0..{SEED_MAX}")
    p.add_argument("--eval-episodes", type=int_in(1, 10_000), default=50, help="1..10000")
    p.add_argument("--eval-seed", type=seed_arg, default=None,
                   help="first evaluation seed (default 1,000,000 + 10,000 * seed)")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="work directory (continued if present)")
    return p


def parse_baseline_args(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``argv`` parsed by a `baseline_parser` and checked as a whole before anything trains:
    the evaluation episodes' seeds within range, the work directory writable (exit 2)."""
    a = p.parse_args(argv)
    first = first_eval_seed(a.seed) if a.eval_seed is None else a.eval_seed
    if problem := episode_seeds_problem(first, a.eval_episodes):
        p.error(f"argument --eval-seed/--seed: {problem}")
    if problem := writable_dir(a.out):
        p.error(f"argument --out: {problem}")
    return a


def write_baseline_record(out_dir: Path, out: dict[str, Any]) -> None:
    """A baseline command's ``eval.json`` (evaluation, config, wall time); the evaluation printed."""
    record = {k: out[k] for k in ("eval", "config", "wall_time_s")}
    (out_dir / "eval.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(out["eval"], indent=2))
