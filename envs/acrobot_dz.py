"""Acrobot with a danger zone (paper App. B.1) and its exact planner model.

The physics is gymnasium's ``Acrobot-v1`` ("book" equations, RK4 over ``dt = 0.2``, angles
wrapped to ``[-π, π]``, velocities clipped to ``±4π``, ``±9π``) with a continuous torque.
`rk4_step` holds the equations once; it is written with arithmetic operators and the ``cos``
and ``sin`` it is handed, so the env steps it on Python floats (``math``) and
`AcrobotModel` on batched torch tensors: one implementation, two number types.

Frame of the tip and the danger zones: pivot at the origin, ``x`` to the right, ``y`` up;
the hanging tip sits at ``(0, -2)``, the goal is ``y > 1``. A link angle θ1 > 0 swings the
first link to the right: tip ``= (sin θ1 + sin(θ1+θ2), -cos θ1 - cos(θ1+θ2))``.

Reward and termination look at the state *after* the step: ``r(x_t, u_t)`` tests
``x_{t+1}`` against the zone, exactly as ``AcrobotModel.reward`` does.
"""

from __future__ import annotations

import math
import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.envs.classic_control.acrobot import bound, wrap
from gymnasium.error import ResetNeeded
from torch import Tensor

from envs.base import PlannerModel, check_action
from envs.danger import DangerZone

# gymnasium's Acrobot constants (SI units)
LINK_LENGTH_1 = 1.0
LINK_LENGTH_2 = 1.0
LINK_MASS_1 = 1.0
LINK_MASS_2 = 1.0
LINK_COM_POS_1 = 0.5
LINK_COM_POS_2 = 0.5
LINK_MOI = 1.0
GRAVITY = 9.8
DT = 0.2
MAX_VEL_1 = 4 * math.pi
MAX_VEL_2 = 9 * math.pi
MAX_TORQUE = 1.0

GOAL_HEIGHT = 1.0  #: terminated when the tip's y exceeds this
STEP_REWARD = -1.0  #: every step, the terminal one included
DANGER_REWARD = -50.0  #: added per step that ends with the tip inside the zone
MAX_EPISODE_STEPS = 500
REACH = LINK_LENGTH_1 + LINK_LENGTH_2 + 0.2  #: |cx|, |cy| and s of a zone are at most this

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


# gymnasium's book equations, constants grouped (m1, m2, l1, lc1, lc2, I1, I2 above):
#   d1 = D1 + D1_COS·cos θ2, d2 = D2 + D2_COS·cos θ2, the Coriolis and centripetal terms
#   carry CORIOLIS·sin θ2, gravity GRAVITY_1·cos(θ1 - π/2) and GRAVITY_2·cos(θ1 + θ2 - π/2)
D1 = LINK_MASS_1 * LINK_COM_POS_1**2 + LINK_MASS_2 * (LINK_LENGTH_1**2 + LINK_COM_POS_2**2)
D1 += LINK_MOI + LINK_MOI
D1_COS = LINK_MASS_2 * 2 * LINK_LENGTH_1 * LINK_COM_POS_2
D2 = LINK_MASS_2 * LINK_COM_POS_2**2 + LINK_MOI
D2_COS = LINK_MASS_2 * LINK_LENGTH_1 * LINK_COM_POS_2
CORIOLIS = LINK_MASS_2 * LINK_LENGTH_1 * LINK_COM_POS_2
GRAVITY_1 = (LINK_MASS_1 * LINK_COM_POS_1 + LINK_MASS_2 * LINK_LENGTH_1) * GRAVITY
GRAVITY_2 = LINK_MASS_2 * LINK_COM_POS_2 * GRAVITY


def dsdt(th1: Any, th2: Any, dth1: Any, dth2: Any, torque: Any, cos: Any, sin: Any) -> tuple:
    """Time derivative of ``(θ1, θ2, θ̇1, θ̇2)``: gymnasium's "book" equations.

    Term for term up to float round-off: the constants are grouped, ``cos θ2`` and ``sin θ2``
    computed once, ``cos(a - π/2)`` written ``sin a`` and ``d2²/d1`` as ``(d2/d1)·d2``.
    """
    c2, coriolis = cos(th2), CORIOLIS * sin(th2)
    d1, d2 = D1 + D1_COS * c2, D2 + D2_COS * c2
    phi2 = GRAVITY_2 * sin(th1 + th2)
    phi1 = GRAVITY_1 * sin(th1) + phi2 - coriolis * dth2 * (dth2 + 2 * dth1)
    ratio = d2 / d1
    ddth2 = (torque + ratio * phi1 - coriolis * dth1 * dth1 - phi2) / (D2 - ratio * d2)
    ddth1 = -(d2 * ddth2 + phi1) / d1
    return dth1, dth2, ddth1, ddth2


def rk4_step(s: tuple, torque: Any, cos: Any, sin: Any) -> tuple:
    """One RK4 step of `dsdt` over `DT` (gymnasium's ``rk4``), before wrapping and clipping."""
    dt2 = DT / 2.0
    k1 = dsdt(*s, torque, cos, sin)
    k2 = dsdt(*(y + dt2 * k for y, k in zip(s, k1, strict=True)), torque, cos, sin)
    k3 = dsdt(*(y + dt2 * k for y, k in zip(s, k2, strict=True)), torque, cos, sin)
    k4 = dsdt(*(y + DT * k for y, k in zip(s, k3, strict=True)), torque, cos, sin)
    return tuple(
        y + DT / 6.0 * (a + 2 * b + 2 * c + d)
        for y, a, b, c, d in zip(s, k1, k2, k3, k4, strict=True)
    )


def tip_position(th1: Any, th2: Any, cos: Any, sin: Any) -> tuple[Any, Any]:
    """The free end ``(x, y)`` in the zone frame (pivot at the origin, y up)."""
    return (
        LINK_LENGTH_1 * sin(th1) + LINK_LENGTH_2 * sin(th1 + th2),
        -LINK_LENGTH_1 * cos(th1) - LINK_LENGTH_2 * cos(th1 + th2),
    )


def wrap_angle(x: Tensor) -> Tensor:
    """gymnasium's ``wrap(x, -π, π)`` on tensors: whole turns of 2π off, ``±π`` kept."""
    up = torch.ceil((-math.pi - x) / (2 * math.pi)).clamp_(min=0.0)  # turns to add below -π
    down = torch.ceil((x - math.pi) / (2 * math.pi)).clamp_(min=0.0)  # to take off above π
    return x - (down - up) * (2 * math.pi)


class AcrobotModel(PlannerModel):
    """The exact model of `AcrobotDZEnv` (App. B.1: same dynamics, same reward).

    Planner state ``x = [θ1, θ2, θ̇1, θ̇2, cx, cy, w, h]`` (zone square: ``w = h = s``);
    control ``u = [torque]``; high-level action ``a ∈ [-1, 1]^2`` → target angles ``π·a``.
    """

    nx, nu, na, nobs, nt = 8, 1, 2, 9, 2
    u_low, u_high = (-MAX_TORQUE,), (MAX_TORQUE,)
    zone_slice = slice(4, 8)

    def dynamics(self, x: Tensor, u: Tensor) -> Tensor:
        _check_last(x, self.nx, "x")
        _check_last(u, self.nu, "u")
        shape = x.shape[:-1]
        if u.shape[:-1] != shape:
            shape = torch.broadcast_tensors(x[..., 0], u[..., 0])[0].shape
            x, u = x.expand(*shape, self.nx), u.expand(*shape, self.nu)
        x, torque = x.reshape(-1, self.nx), u.reshape(-1).clamp(-MAX_TORQUE, MAX_TORQUE)
        state = x.new_empty(4, x.shape[0]).copy_(x[:, :4].t())  # contiguous rows
        th1, th2, dth1, dth2 = rk4_step(tuple(state), torque, torch.cos, torch.sin)
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
        out[:, 0], out[:, 1] = wrap_angle(th1), wrap_angle(th2)
        torch.clamp(dth1, -MAX_VEL_1, MAX_VEL_1, out=out[:, 2])
        torch.clamp(dth2, -MAX_VEL_2, MAX_VEL_2, out=out[:, 3])
        out[:, 4:] = x[:, 4:]
        return out.view(*shape, self.nx)

    def reward(self, x: Tensor, u: Tensor) -> Tensor:
        """r̂(x_t, u_t): ``-1``, and ``-50`` more if the tip of ``x_{t+1}`` is in the zone."""
        return self.reward_after(self.dynamics(x, u))

    def reward_after(self, x_next: Tensor) -> Tensor:
        """The step reward ``[...]`` read off the state the step ended in."""
        return STEP_REWARD + DANGER_REWARD * self.in_danger(x_next).to(x_next.dtype)

    def observe(self, x: Tensor) -> Tensor:
        """ψ: ``[cos θ1, sin θ1, cos θ2, sin θ2, θ̇1, θ̇2, x_D, y_D, s_D]``."""
        _check_last(x, self.nx, "x")
        th1, th2 = x[..., 0], x[..., 1]
        trig = (torch.cos(th1), torch.sin(th1), torch.cos(th2), torch.sin(th2))
        return torch.cat([torch.stack(trig, -1), x[..., 2:7]], -1)

    def planner_state(self, env: Any) -> np.ndarray:
        base = env.unwrapped
        if base.state is None:
            raise ResetNeeded("call env.reset() before reading its planner state")
        z = base.zone
        return np.array([*base.state, z.cx, z.cy, z.w, z.h], dtype=np.float64)

    def position(self, x: Tensor) -> Tensor:
        return torch.stack(tip_position(x[..., 0], x[..., 1], torch.cos, torch.sin), -1)

    def target(self, a: Tensor) -> Tensor:
        """x*(a) = ``[θ1*, θ2*] = π · clip(a, -1, 1)`` (eq. 39)."""
        _check_last(a, self.na, "a")
        return math.pi * a.clamp(-1.0, 1.0)

    def tracked(self, x: Tensor) -> Tensor:
        return x[..., :2]

    def tracking_error(self, x: Tensor, target: Tensor) -> Tensor:
        """Angle difference ``θ - θ*`` wrapped into ``[-π, π)``."""
        return torch.remainder(self.tracked(x) - target + math.pi, 2 * math.pi) - math.pi

    def terminated(self, x: Tensor) -> Tensor:
        """Goal height reached: ``-cos θ1 - cos(θ1 + θ2) > 1``."""
        return self.position(x)[..., 1] > GOAL_HEIGHT


def _check_last(t: Tensor, n: int, name: str) -> None:
    if t.shape[-1:] != (n,):
        raise ValueError(f"{name} must have shape [..., {n}], got {tuple(t.shape)}")


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
        to_px = lambda x, y: (dim / 2 + x * scale, dim / 2 - y * scale)
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
