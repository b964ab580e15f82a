"""A toy task registered from the test suite: a point mass steered to a goal past a danger zone.

Everything an env declares to the system is here (`SPEC`): the gymnasium env, its planner
model, its planner preset, run presets small enough for seconds, its own end-of-episode
figure and table columns. `register()` adds it to `envs`; nothing under `rlmpc/` knows it.

| | |
|---|---|
| state | ``[px, py, vx, vy]`` (m, m/s), start at the origin at rest, goal at ``(3, 0)`` |
| action | acceleration ``[ax, ay] ∈ [-1, 1]²``, dt = 0.1 s |
| reward | ``-|p - goal|`` per step, -1 more inside the zone |
| terminated | within 0.3 m of the goal (success); truncated after 40 steps |
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

import envs
from envs.base import PlannerModel, check_action
from planners.costs import PlannerConfig

GOAL, DT, REACH, STEPS = (3.0, 0.0), 0.1, 0.3, 40
ZONE = (1.5, 0.8, 0.6, 0.6)  # cx, cy, w, h


class ToyModel(PlannerModel):
    """The exact model: x = [px, py, vx, vy, cx, cy, w, h]; targets are velocities."""

    nx, nu, na, nt, nobs = 8, 2, 2, 2, 4
    u_low, u_high = (-1.0, -1.0), (1.0, 1.0)
    zone_slice = slice(4, 8)

    def dynamics(self, x: Tensor, u: Tensor) -> Tensor:
        u = u.clamp(-1.0, 1.0).to(x.dtype)
        v = x[..., 2:4] + DT * u
        return torch.cat([x[..., 0:2] + DT * v, v, x[..., 4:8].expand(*v.shape[:-1], 4)], -1)

    def reward(self, x: Tensor, u: Tensor) -> Tensor:
        x1 = self.dynamics(x, u)
        goal = x1.new_tensor(GOAL)
        return -(x1[..., 0:2] - goal).norm(dim=-1) - self.in_danger(x1).to(x1.dtype)

    def observe(self, x: Tensor) -> Tensor:
        return x[..., 0:4]

    def planner_state(self, env: Any) -> np.ndarray:
        return np.concatenate([env.unwrapped.state, ZONE]).astype(np.float64)

    def position(self, x: Tensor) -> Tensor:
        return x[..., 0:2]

    def target(self, a: Tensor) -> Tensor:
        return a.clamp(-1.0, 1.0)

    def tracked(self, x: Tensor) -> Tensor:
        return x[..., 2:4]


class ToyEnv(gym.Env):
    """Renders 64 × 48 ``rgb_array`` frames of the plane x ∈ [-1, 4], y ∈ [-2, 2] (the zone red,
    the goal green, the point blue) and maps that plane onto them (`envs.base.Pixels`)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    FRAME = (48, 64)  # rows, columns
    PIXELS_PER_M = 12.0

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
        self.state = np.zeros(4)

    def planner_model(self) -> ToyModel:
        return ToyModel()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.state, self.steps = np.zeros(4), 0
        self.state[0:2] = self.np_random.uniform(-0.2, 0.2, 2)
        return self.state.astype(np.float32), {"in_danger": False, "is_success": False}

    def step(self, action):
        u = check_action(action, (2,), self.action_space.low, self.action_space.high)
        x = torch.as_tensor(self.planner_state(), dtype=torch.float64)
        model = ToyModel()
        reward = float(model.reward(x, torch.as_tensor(u)))
        x1 = model.dynamics(x, torch.as_tensor(u))
        self.state, self.steps = x1[0:4].numpy(), self.steps + 1
        distance = float(np.hypot(self.state[0] - GOAL[0], self.state[1] - GOAL[1]))
        terminated = distance < REACH
        info = {"in_danger": bool(model.in_danger(x1)), "is_success": terminated,
                "distance": distance}  # fmt: skip
        return (
            self.state.astype(np.float32),
            reward,
            terminated,
            self.steps >= STEPS and not terminated,
            info,
        )

    def planner_state(self) -> np.ndarray:
        return ToyModel().planner_state(self)

    def pixels(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        k = self.PIXELS_PER_M
        return np.stack([(p[..., 0] + 1.0) * k, self.FRAME[0] / 2 - p[..., 1] * k], -1)

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        frame = np.full((*self.FRAME, 3), 255, np.uint8)

        def fill(lo: tuple[float, float], hi: tuple[float, float], colour: tuple) -> None:
            (c0, r1), (c1, r0) = self.pixels(np.array([lo, hi])).round().astype(int)
            frame[max(r0, 0) : max(r1, 0) + 1, max(c0, 0) : max(c1, 0) + 1] = colour

        cx, cy, w, h = ZONE
        fill((cx - w / 2, cy - h / 2), (cx + w / 2, cy + h / 2), (230, 40, 40))
        fill((GOAL[0] - 0.1, GOAL[1] - 0.1), (GOAL[0] + 0.1, GOAL[1] + 0.1), (40, 180, 40))
        px, py = self.state[0:2]
        fill((px - 0.1, py - 0.1), (px + 0.1, py + 0.1), (40, 40, 230))
        return frame

    def get_state(self) -> dict[str, Any]:
        """The episode as plain data (`envs.base.EnvState`): exact resumption holds here too."""
        return {"rng": self.np_random.bit_generator.state, "state": self.state.tolist(),
                "steps": int(getattr(self, "steps", 0))}  # fmt: skip

    def set_state(self, state: dict[str, Any]) -> None:
        self.np_random.bit_generator.state = state["rng"]
        self.state, self.steps = np.array(state["state"], dtype=np.float64), int(state["steps"])


@dataclass(frozen=True)
class ToyPlannerConfig(PlannerConfig):
    """A small, quick planner."""

    num_samples: int = 16
    horizon: int = 5
    w_danger: float = 10.0


SPEC = envs.EnvSpec(
    "toy-point", "rlmpc-tests/ToyPoint-v0", ToyEnv, ToyPlannerConfig,
    summary="a point mass to a goal (test suite)",
    presets={
        "run": {"total_env_steps": 64, "envs_per_actor": 4, "eval_every": 1,
                "eval_episodes": 2, "final_eval_episodes": 2, "checkpoint_every": 1},
        "ppo": {"n_steps": 32, "batch_size": 16, "n_epochs": 2},
        "networks": {"hidden_sizes": (16,)},
    },
    episode_metrics=lambda info: {"final_distance": float(info["distance"])},
    columns=(("success_rate", "success"), ("final_distance", "distance to goal")),
)  # fmt: skip


def register() -> envs.EnvSpec:
    return envs.register(SPEC)


def unregister() -> None:
    """Leave the registry as the other tests expect it."""
    envs.registry._REGISTRY.pop(SPEC.name, None)
    envs.registry.ENV_IDS.pop(SPEC.name, None)


class NoModelEnv(ToyEnv):
    """The toy env without a planner model (a contract the registry must refuse)."""

    planner_model = None  # type: ignore[assignment]


#: a user's env that forgot its planner model (`tests/test_custom_env.py`)
NO_MODEL = dataclasses.replace(SPEC, name="toy-no-model", id="rlmpc-tests/ToyNoModel-v0",
                               entry_point=NoModelEnv)  # fmt: skip
