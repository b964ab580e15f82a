"""The Python API, for a notebook or a script: build a config, train, evaluate, load an agent.

    import rlmpc

    cfg = rlmpc.config("lunarlander", run={"total_env_steps": 50_000})  # the env's presets, then yours
    run_dir = rlmpc.train(cfg, serial=True)     # or on Ray (default), or ray_address="auto"
    summary = rlmpc.evaluate(run_dir, episodes=20)
    agent = rlmpc.load_agent(run_dir)           # the trained policy and its planner
    env = agent.make_env()
    obs, _ = env.reset(seed=0)
    agent.reset()
    obs, reward, terminated, truncated, info = env.step(agent.act(env))

`config` is `rlmpc.run.config.TrainConfig.for_env` (the command line builds the same config
from ``launch.py --env ENV [options]``); an env of your own is named ``"module:ATTRIBUTE"``
(docs/custom_env.md). `train` is what ``launch.py`` runs, with the same checks first.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

import envs
from envs import planner_config
from learners.policy import build_networks
from planners.costs import build_planner
from planners.mppi import MPPI, shift_warm_start
from rlmpc.run.config import TrainConfig
from rlmpc.system.checkpoint import load_checkpoint
from rlmpc.system.worker import WorkerSpec


def config(env: str, **sections: Mapping[str, Any]) -> TrainConfig:
    """A run's config for ``env``: each section's defaults, the env's presets, then
    ``sections`` (section -> field -> value); see `TrainConfig.for_env`."""
    return TrainConfig.for_env(env, **sections)


def train(cfg: TrainConfig, *, serial: bool = False, ray_address: str | None = None,
          resume: str | Path | None = None) -> Path:  # fmt: skip
    """Train a run (``serial``: in this process, without Ray); its run directory. The same
    checks as ``launch.py`` run first (`ValueError` naming the field)."""
    from rlmpc.run.train import train as run

    return run(cfg, resume=None if resume is None else Path(resume), ray_address=ray_address,
               serial=serial, argv=["<python>"])  # fmt: skip


def evaluate(checkpoint: str | Path, episodes: int = 50, seed: int | None = None,
             out: str | Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Evaluate a checkpoint file or a run directory's newest (``seed`` None: the run's own
    evaluation episodes); the summary ``eval.json`` holds (written to ``out``, default the
    run directory)."""
    from rlmpc.run.evaluate import evaluate_checkpoint

    return evaluate_checkpoint(checkpoint, episodes, out, seed)


class Agent:
    """A trained hierarchy: the policy's mean picks the high-level action, the planner turns
    it into the control (one planner call per step, warm-started from the last plan).

    ``spec`` is the run's `WorkerSpec`; ``policy`` and ``values`` the trained networks (eval
    mode), ``model`` the env's planner model, ``planner`` the run's MPPI.
    """

    def __init__(self, spec: WorkerSpec, weights: Any, seed: int = 0) -> None:
        self.spec = spec
        probe = envs.spec(spec.env)
        env = envs.make(probe.probe or probe.name)
        self.model = env.unwrapped.planner_model()
        env.close()
        self.policy, self.values = build_networks(self.model.nobs, self.model.na, spec.networks)
        self.policy.load_state_dict(weights.policy)
        if weights.values is not None:
            self.values.load_state_dict(weights.values)
        self.policy.eval()
        self.values.eval()
        value_fn = None
        if spec.planner.w_value > 0:
            value_fn = lambda x: self.values.mean(self.model.observe(x).float()).to(x.dtype)
        self.planner: MPPI = build_planner(self.model, spec.planner, value_fn=value_fn)
        self.generator = torch.Generator().manual_seed(seed)
        self.warm: torch.Tensor | None = None

    def make_env(self, **kwargs: Any) -> Any:
        """A new env of the run's task (``render_mode="rgb_array"`` to draw it)."""
        return envs.make(self.spec.env, **kwargs)

    def reset(self) -> None:
        """Forget the last plan (a new episode)."""
        self.warm = None

    @torch.no_grad()
    def act(self, env: Any) -> np.ndarray:
        """The control for ``env``'s current state: a = mean π(·|ψ(x)), then MPPI for x and a."""
        x = torch.as_tensor(self.model.planner_state(env), dtype=torch.float32)[None]
        a = self.policy.mean(self.model.observe(x))
        if self.warm is None:
            self.warm = torch.zeros(1, self.planner.horizon, self.model.nu)
        plan = self.planner.plan(x, a[:, None], self.warm, generator=self.generator)
        self.warm = shift_warm_start(plan.controls[:, 0])
        return plan.first[0, 0].numpy().astype(env.action_space.dtype)


def load_agent(checkpoint: str | Path, seed: int = 0) -> Agent:
    """The trained hierarchy of a checkpoint file or a run directory's newest checkpoint."""
    state = load_checkpoint(checkpoint)
    if state.worker is None:
        raise ValueError(f"{checkpoint}: the checkpoint holds no worker spec")
    return Agent(state.worker, state.weights, seed)


__all__ = ["Agent", "config", "evaluate", "load_agent", "planner_config", "train"]
