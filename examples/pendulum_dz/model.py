"""The pendulum's physics (gymnasium's ``Pendulum-v1``) and its exact planner model.

State ``[θ, θ̇]``, θ = 0 upright, gymnasium's semi-implicit Euler step over ``dt = 0.05``::

    θ̇' = clip(θ̇ + (3 g / 2 l · sin θ + 3 / (m l²) · u) dt, ±8),   θ' = θ + θ̇' dt

The tip of the (unit) pendulum is at ``(sin θ, cos θ)``; a danger zone is a square there.
`step` is written once with the ``sin`` it is handed, so the env steps it on floats and the
model on batched tensors.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from envs.base import PlannerModel

G, M, L, DT, MAX_SPEED, MAX_TORQUE = 10.0, 1.0, 1.0, 0.05, 8.0, 2.0
ZONE_PENALTY = 5.0  #: per step that ends with the tip inside the zone


def step(th: Any, thdot: Any, u: Any, sin: Any, clip: Any) -> tuple[Any, Any]:
    """One step of the pendulum (module docstring), on floats or tensors."""
    thdot = clip(thdot + (3 * G / (2 * L) * sin(th) + 3.0 / (M * L**2) * u) * DT, MAX_SPEED)
    return th + thdot * DT, thdot


def angle_normalize(th: Any) -> Any:
    """θ wrapped into [-π, π) (gymnasium's ``angle_normalize``)."""
    return ((th + math.pi) % (2 * math.pi)) - math.pi


def step_cost(th: Any, thdot: Any, u: Any) -> Any:
    """gymnasium's cost of a step, taken at the state it starts from."""
    return angle_normalize(th) ** 2 + 0.1 * thdot**2 + 0.001 * u**2


class PendulumModel(PlannerModel):
    """The exact model: ``x = [θ, θ̇, cx, cy, w, h]``, ``u = [torque]``, ψ(x) the env's
    observation ``[cos θ, sin θ, θ̇, cx, cy, s]``, target angle θ* = π·a (eq. 39)."""

    nx, nu, na, nt, nobs = 6, 1, 1, 1, 6
    u_low, u_high = (-MAX_TORQUE,), (MAX_TORQUE,)
    zone_slice = slice(2, 6)

    def dynamics(self, x: Tensor, u: Tensor) -> Tensor:
        x, u, shape = self.step_rows(x, u)
        torque = u[:, 0].to(x.dtype).clamp(-MAX_TORQUE, MAX_TORQUE)
        clip = lambda v, c: v.clamp(-c, c)
        th, thdot = step(x[:, 0], x[:, 1], torque, torch.sin, clip)
        return torch.cat([th[:, None], thdot[:, None], x[:, 2:]], 1).view(*shape, self.nx)

    def reward(self, x: Tensor, u: Tensor) -> Tensor:
        x1 = self.dynamics(x, u)
        torque = u[..., 0].to(x.dtype).clamp(-MAX_TORQUE, MAX_TORQUE)
        cost = step_cost(x[..., 0], x[..., 1], torque)
        return -cost - ZONE_PENALTY * self.danger_indicator(x1)

    def observe(self, x: Tensor) -> Tensor:
        th = x[..., 0:1]
        return torch.cat([torch.cos(th), torch.sin(th), x[..., 1:2], x[..., 2:5]], -1)

    def planner_state(self, env: Any) -> np.ndarray:
        e = env.unwrapped
        return np.array([*e.state, *e.zone], dtype=np.float64)

    def position(self, x: Tensor) -> Tensor:
        th = x[..., 0]
        return torch.stack([torch.sin(th), torch.cos(th)], -1)

    def target(self, a: Tensor) -> Tensor:
        return math.pi * a.clamp(-1.0, 1.0)

    def tracked(self, x: Tensor) -> Tensor:
        return x[..., 0:1]

    def tracking_error(self, x: Tensor, target: Tensor) -> Tensor:
        return angle_normalize(self.tracked(x) - target)

    def scripted_action(self, obs: Tensor) -> Tensor:
        """Upright (θ* = 0): the planner alone pumps towards it as far as its horizon sees."""
        return obs.new_zeros(*obs.shape[:-1], self.na)
