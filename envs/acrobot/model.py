"""Acrobot's physics and its exact planner model (paper App. B.1).

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
from typing import Any

import numpy as np
import torch
from gymnasium.error import ResetNeeded
from torch import Tensor

from envs.base import PlannerModel, check_last

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
        x, u, shape = self.step_rows(x, u)
        torque = u.reshape(-1).clamp(-MAX_TORQUE, MAX_TORQUE)
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
        check_last(x, self.nx, "x")
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
        check_last(a, self.na, "a")
        return math.pi * a.clamp(-1.0, 1.0)

    def tracked(self, x: Tensor) -> Tensor:
        return x[..., :2]

    def tracking_error(self, x: Tensor, target: Tensor) -> Tensor:
        """Angle difference ``θ - θ*`` wrapped into ``[-π, π)``."""
        return torch.remainder(self.tracked(x) - target + math.pi, 2 * math.pi) - math.pi

    def terminated(self, x: Tensor) -> Tensor:
        """Goal height reached: ``-cos θ1 - cos(θ1 + θ2) > 1``."""
        return self.position(x)[..., 1] > GOAL_HEIGHT
