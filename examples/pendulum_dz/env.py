"""``examples/PendulumDZ-v0``: swing the pendulum up and hold it there, avoiding a zone.

| | |
|---|---|
| start | hanging: ``θ ~ π + U(±0.3)``, ``θ̇ ~ U(±0.5)`` (gymnasium's is uniform over the circle) |
| action | torque ``u ∈ [-2, 2]`` |
| observation | ``[cos θ, sin θ, θ̇, x_D, y_D, s_D]`` float32 |
| danger zone | a square of side 0.4 at the tip's height 0.35, on the left or the right (drawn per episode): swinging up on that side crosses it |
| reward | gymnasium's ``-(θ² + 0.1 θ̇² + 0.001 u²)``, and ``-5`` per step that ends with the tip in the zone |
| episode | 200 steps (truncated); ``is_success`` when it ends with ``|θ| < 0.3`` (upright) |
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.pendulum import PendulumEnv

from envs.base import check_action
from envs.danger import in_zone
from examples.pendulum_dz.model import (
    MAX_SPEED,
    MAX_TORQUE,
    ZONE_PENALTY,
    PendulumModel,
    angle_normalize,
    step,
    step_cost,
)

STEPS = 200
ZONES = ((0.75, 0.35, 0.4, 0.4), (-0.75, 0.35, 0.4, 0.4))  #: (cx, cy, w, h), one per episode


class PendulumDZEnv(PendulumEnv):
    """gymnasium's pendulum with a danger zone, a swing-up start and a success (module doc)."""

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode)
        high = np.array([1.0, 1.0, MAX_SPEED, 1.2, 1.2, 0.4], np.float32)
        self.observation_space = spaces.Box(-high, high, dtype=np.float32)
        self.zone = ZONES[0]
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        self.state = np.array([np.pi + rng.uniform(-0.3, 0.3), rng.uniform(-0.5, 0.5)])
        self.zone = ZONES[int(rng.integers(len(ZONES)))]
        self.steps = 0
        return self._get_obs(), {"is_success": False, "in_danger": False}

    def step(self, action: Any):
        u = float(check_action(action, (1,), self.action_space.low, self.action_space.high)[0])
        u = min(max(u, -MAX_TORQUE), MAX_TORQUE)
        self.last_u = u  # for rendering
        th, thdot = self.state
        cost = step_cost(th, thdot, u)
        th, thdot = step(th, thdot, u, np.sin, lambda v, c: float(np.clip(v, -c, c)))
        self.state = np.array([th, thdot])
        inside = bool(in_zone(np.sin(th), np.cos(th), *self.zone))
        self.steps += 1
        truncated = self.steps >= STEPS
        success = truncated and abs(angle_normalize(th)) < 0.3
        reward = -cost - ZONE_PENALTY * inside
        return self._get_obs(), float(reward), False, truncated, {
            "is_success": bool(success), "in_danger": inside,
        }  # fmt: skip

    def _get_obs(self) -> np.ndarray:
        th, thdot = self.state
        return np.array([np.cos(th), np.sin(th), thdot, *self.zone[:3]], dtype=np.float32)

    def planner_model(self) -> PendulumModel:
        return PendulumModel()

    def pixels(self, p: np.ndarray) -> np.ndarray:
        """``(column, row)`` ``[..., 2]`` of tip-plane points ``p [..., 2]`` (the model's
        ``position``, ``(sin θ, cos θ)``) in `render`'s frame (`envs.base.Pixels`: films and
        ``rlmpc.enjoy`` draw the planner's paths and the zone with it). gymnasium's frame has
        the pivot at the centre and 2.2 to each edge, and draws the tip at ``-sin θ``: the
        column is mirrored."""
        half, scale = self.screen_dim / 2, self.screen_dim / (2 * 2.2)
        p = np.asarray(p, dtype=np.float64)
        return np.stack([half - p[..., 0] * scale, half - p[..., 1] * scale], -1)
