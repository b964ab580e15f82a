"""``rlmpc/AcrobotDZ-v0``: Acrobot with a danger zone (paper App. B.1).

The physics, the frame of the tip and the zones, and the reward's timing are
`envs.acrobot.model`'s (the env and its exact planner model share `rk4_step`).
"""

from __future__ import annotations

import math
import os
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.acrobot import bound, wrap
from gymnasium.error import ResetNeeded

from envs.acrobot.model import (
    DANGER_REWARD,
    GOAL_HEIGHT,
    LINK_LENGTH_1,
    MAX_EPISODE_STEPS,
    MAX_TORQUE,
    MAX_VEL_1,
    MAX_VEL_2,
    REACH,
    STEP_REWARD,
    AcrobotModel,
    rk4_step,
    tip_position,
)
from envs.base import check_action
from envs.danger import DangerZone

#: The fixed set of square zones ``(cx, cy, s)``, one drawn per episode. Each blocks one
#: way up (a side of the swing, or the folded low arc) and leaves the others open; none
#: touches the hanging start (tip within ~0.3 of ``(0, -2)``).
ZONES: tuple[DangerZone, ...] = tuple(
    DangerZone(cx, cy, s, s)
    for cx, cy, s in (
        (1.3, -0.3, 0.7),  # right flank: no wide swing up on the right
        (-1.3, -0.3, 0.7),  # left flank
        (0.9, 0.8, 0.6),  # upper right, across the goal line
        (-0.9, 0.8, 0.6),  # upper left
        (0.0, -1.0, 0.5),  # below the pivot: no tight folded pumping
    )
)


class AcrobotDZEnv(gym.Env):
    """Swing the acrobot's tip above ``y = 1`` with a continuous torque, avoiding a square zone.

    | Space | Shape | Entries |
    |---|---|---|
    | action | ``(1,)`` float32 | torque ``u ∈ [-1, 1]`` N m on the joint between the links |
    | observation | ``(9,)`` float32 | ``cos θ1, sin θ1, cos θ2, sin θ2`` in ``[-1, 1]``; ``θ̇1 ∈ [-4π, 4π]``, ``θ̇2 ∈ [-9π, 9π]``; zone ``x_D, y_D ∈ [-2.2, 2.2]``, ``s_D ∈ [0, 2.2]`` |

    θ1 is the first link's angle from hanging down, θ2 the second link's relative to the
    first; the zone is given in the tip frame of the module docstring.

    | Reward (per step, on the state the step ends in) | |
    |---|---|
    | every step, the terminal one included | ``-1`` |
    | tip inside the danger zone (eq. 42) | ``-50`` more |

    | Episode end | |
    |---|---|
    | terminated | goal height: ``-cos θ1 - cos(θ1 + θ2) > 1.0`` |
    | truncated | ``max_episode_steps`` (500) steps reached without terminating |

    Start: ``θ1, θ2, θ̇1, θ̇2 ~ U(-0.1, 0.1)`` (or ``reset(options={"state": [4 floats]})``);
    the zone is drawn from `ZONES` with ``env.np_random`` unless ``danger_zone`` fixes it.
    ``info`` holds ``in_danger`` (the tip is in the zone) and ``is_success`` (goal reached).

    Args:
        render_mode: ``None`` or ``"rgb_array"``.
        danger_zone: ``(cx, cy, s)`` to use in every episode instead of drawing from `ZONES`.
        max_episode_steps: steps after which an episode is truncated (>= 1).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}
    SCREEN_DIM = 500

    def __init__(
        self,
        render_mode: str | None = None,
        danger_zone: tuple[float, float, float] | None = None,
        max_episode_steps: int = MAX_EPISODE_STEPS,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if isinstance(max_episode_steps, bool) or not isinstance(
            max_episode_steps, int | np.integer
        ):
            raise ValueError(f"max_episode_steps must be an int >= 1, got {max_episode_steps!r}")
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be an int >= 1, got {max_episode_steps}")
        self.render_mode = render_mode
        self.fixed_zone = None if danger_zone is None else _square_zone(danger_zone)
        self.max_episode_steps = int(max_episode_steps)
        hi = np.array([1, 1, 1, 1, MAX_VEL_1, MAX_VEL_2, REACH, REACH, REACH], np.float32)
        lo = np.concatenate([-hi[:8], [0.0]]).astype(np.float32)
        self.observation_space = spaces.Box(lo, hi, dtype=np.float32)
        self.action_space = spaces.Box(-MAX_TORQUE, MAX_TORQUE, shape=(1,), dtype=np.float32)
        self.state: np.ndarray | None = None  # [θ1, θ2, θ̇1, θ̇2] float64
        self.zone = self.fixed_zone or ZONES[0]
        self.elapsed_steps = 0
        self.screen = None

    def planner_model(self) -> AcrobotModel:
        return AcrobotModel()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        state = options.pop("state", None)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; allowed: ['state']")
        if state is not None:
            state = np.array(state, dtype=np.float64)
            if state.shape != (4,) or not np.all(np.isfinite(state)):
                raise ValueError(f"reset option 'state' must be 4 finite floats, got {state!r}")
        if self.fixed_zone is None:
            self.zone = ZONES[int(self.np_random.integers(len(ZONES)))]
        else:
            self.zone = self.fixed_zone
        if state is None:
            state = self.np_random.uniform(-0.1, 0.1, size=4)
        self.state = state
        self.elapsed_steps = 0
        tip_x, tip_y = tip_position(self.state[0], self.state[1], math.cos, math.sin)
        return self._obs(), self._info(bool(self.zone.contains(tip_x, tip_y)), False)

    def step(self, action):
        if self.state is None:
            raise ResetNeeded("call env.reset() before env.step()")
        torque = float(check_action(action, (1,), self.action_space.low, self.action_space.high)[0])
        th1, th2, dth1, dth2 = rk4_step(tuple(self.state.tolist()), torque, math.cos, math.sin)
        self.state = np.array(
            [
                wrap(th1, -math.pi, math.pi),
                wrap(th2, -math.pi, math.pi),
                bound(dth1, -MAX_VEL_1, MAX_VEL_1),
                bound(dth2, -MAX_VEL_2, MAX_VEL_2),
            ],
            dtype=np.float64,
        )
        self.elapsed_steps += 1
        tip_x, tip_y = tip_position(self.state[0], self.state[1], math.cos, math.sin)
        danger = bool(self.zone.contains(tip_x, tip_y))
        terminated = bool(tip_y > GOAL_HEIGHT)
        truncated = not terminated and self.elapsed_steps >= self.max_episode_steps
        reward = STEP_REWARD + DANGER_REWARD * float(danger)
        return self._obs(), reward, terminated, truncated, self._info(danger, terminated)

    def _obs(self) -> np.ndarray:
        th1, th2, dth1, dth2 = self.state
        z = self.zone
        return np.array(
            [
                math.cos(th1),
                math.sin(th1),
                math.cos(th2),
                math.sin(th2),
                dth1,
                dth2,
                z.cx,
                z.cy,
                z.w,
            ],
            dtype=np.float32,
        )

    def _info(self, danger: bool, success: bool) -> dict:
        return {"in_danger": danger, "is_success": success}

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; build the env with 'rgb_array'")
            return None
        if self.state is None:
            return None
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        import pygame

        dim = self.SCREEN_DIM
        scale = dim / (2 * REACH)
        to_px = lambda x, y: tuple(self.pixels(np.array([x, y])).tolist())
        if self.screen is None:  # an off-screen surface: no pygame.init(), no display or audio
            self.screen = pygame.Surface((dim, dim))
        self.screen.fill((255, 255, 255))
        z = self.zone
        left, top = to_px(z.cx - z.w / 2, z.cy + z.h / 2)
        pygame.draw.rect(self.screen, (235, 120, 120), (left, top, z.w * scale, z.h * scale))
        pygame.draw.line(
            self.screen, (0, 0, 0), to_px(-REACH, GOAL_HEIGHT), to_px(REACH, GOAL_HEIGHT)
        )
        th1, th2 = self.state[:2]
        elbow = (LINK_LENGTH_1 * math.sin(th1), -LINK_LENGTH_1 * math.cos(th1))
        tip = tip_position(th1, th2, math.cos, math.sin)
        for a, b in (((0.0, 0.0), elbow), (elbow, tip)):
            pygame.draw.line(self.screen, (0, 204, 204), to_px(*a), to_px(*b), int(0.2 * scale))
            pygame.draw.circle(self.screen, (204, 204, 0), to_px(*a), int(0.1 * scale))
        return np.transpose(np.array(pygame.surfarray.pixels3d(self.screen)), axes=(1, 0, 2))

    def pixels(self, p: np.ndarray) -> np.ndarray:
        """``(column, row)`` ``[..., 2]`` of the tip-plane points ``p [..., 2]`` in `render`'s
        frame (`envs.base.Pixels`): the pivot at the centre, ``±REACH`` at the edges."""
        half, scale = self.SCREEN_DIM / 2, self.SCREEN_DIM / (2 * REACH)
        p = np.asarray(p, dtype=np.float64)
        return np.stack([half + p[..., 0] * scale, half - p[..., 1] * scale], -1)

    def close(self):
        self.screen = None

    def get_state(self) -> dict[str, Any]:
        """The episode as plain data (`envs.base.EnvState`): random stream, joint state, zone,
        step count."""
        return {
            "rng": self.np_random.bit_generator.state,
            "state": None if self.state is None else self.state.tolist(),
            "zone": list(self.zone.as_tuple()),
            "elapsed_steps": self.elapsed_steps,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from `get_state` (`envs.base.EnvState`)."""
        joints = state["state"]
        if joints is not None and len(joints) != 4:
            raise ValueError(f"acrobot state must hold 4 floats, got {joints!r}")
        self.np_random.bit_generator.state = state["rng"]
        self.state = None if joints is None else np.array(joints, dtype=np.float64)
        self.zone = DangerZone(*state["zone"])
        self.elapsed_steps = int(state["elapsed_steps"])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["screen"] = None  # pygame surfaces do not pickle; render() rebuilds it
        return state


def _square_zone(zone: Any) -> DangerZone:
    """Validate a ``danger_zone=(cx, cy, s)`` override into a square `DangerZone`."""
    try:
        cx, cy, s = (float(v) for v in zone)
    except (TypeError, ValueError):
        raise ValueError(f"danger_zone must be (cx, cy, s), got {zone!r}") from None
    if not all(math.isfinite(v) for v in (cx, cy, s)):
        raise ValueError(f"danger_zone must be finite, got {zone!r}")
    if max(abs(cx), abs(cy)) > REACH or not 0 < s <= REACH:
        raise ValueError(
            f"danger_zone needs |cx|, |cy| <= {REACH} and 0 < s <= {REACH}, got {zone!r}"
        )
    return DangerZone(cx, cy, s, s)
