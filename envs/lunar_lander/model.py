"""Lunar Lander's planner model: App. B.2's "simplified rigid-body model with fixed constants".

The lander and its two legs as one rigid body (legs held at their joint limit), the engines'
mean impulses, gravity, and the pad as ground (`envs.lunar_lander.body`); the reward model is
gymnasium's shaping difference and fuel, as the env (`envs.lunar_lander.env`) pays them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.error import ResetNeeded
from torch import Tensor

from envs.base import PlannerModel, check_last
from envs.lunar_lander.airframe import body_state
from envs.lunar_lander.body import (
    PAD_HALF_WIDTH,
    body_step,
    body_step_rows,
    engine_powers,
    engine_powers_rows,
    hull_clearance,
)

ZONE_PENALTY = 5.0  #: subtracted per step that ends with the lander inside the zone
#: x*(a) = VELOCITY_SCALE·a in obs units. Free-flight speeds stay below ~0.5 (the start push
#: gives |ẋ| <= 0.83, |ẏ| <= 0.55; a safe touchdown needs |ẏ| <~ 0.1), and the main engine
#: changes ẏ by up to 0.047 per step (0.02 net of gravity), so ±0.5 spans hover to a brisk
#: traverse that the engines can reach or undo in about a second.
VELOCITY_SCALE = 0.5
#: Touching down faster than this (obs ẏ, ~3.7 m/s) crashes: over 126 noisy heuristic
#: landings, 11 of the 12 faster touchdowns crashed and 6 of the 114 slower ones.
CRASH_SPEED = 0.5


class LunarLanderModel(PlannerModel):
    """Approximate model of `LunarLanderDZEnv` (App. B.2): fixed-constant rigid body, no Box2D.

    Planner state (observation units, module docstring) ``x = [x, y, ẋ, ẏ, φ, φ̇, leg_0,
    leg_1, cx, cy, w, h]``, nx = 12, exactly the observation (ψ is the identity). ``leg_0``
    is gymnasium's first leg, the one on the lander's +x side. Control ``u = [u_main, u_lat]``;
    high-level action ``a ∈ [-1, 1]^2`` → target velocities ``[ẋ*, ẏ*] = 0.5·a``.

    One step (`envs.lunar_lander.body.AIRFRAME` derives every constant from gymnasium's
    source): the main engine (``u_main > 0``, power ``(1 + u_main)/2``) and side engines
    (``|u_lat| > 0.5``, power ``|u_lat|``) give their mean impulses (the random dispersion
    averaged out) to lander + legs as one rigid body; gravity; Box2D's semi-implicit Euler.
    Ground: the pad (between the flags) at its exact height; a leg tip that reaches it is
    stopped, the leg folding in under more than its motor's torque and unfolding at the
    motor's speed (`envs.lunar_lander.body.leg_impulses`). Off the pad the terrain is
    unknown: only a leg that is already down finds ground, under its tip. Not modelled: that
    terrain, the engines' random dispersion, the legs' hard stop when the lander heels far
    over, and Box2D's sleep (coming to rest).
    """

    nx, nu, na, nobs, nt = 12, 2, 2, 12, 2
    u_low, u_high = (-1.0, -1.0), (1.0, 1.0)
    zone_slice = slice(8, 12)

    def __init__(self, gravity: float = -10.0):
        if not -12.0 < gravity < 0.0:
            raise ValueError(f"gravity must be in (-12, 0), got {gravity!r}")
        self.gravity = float(gravity)

    def dynamics(self, x: Tensor, u: Tensor) -> Tensor:
        return self._step(x, u)[0]

    def _step(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(next state ``[..., nx]``, main and side engine powers ``[...]``) of x and u."""
        x, u, shape = self.step_rows(x, u)
        main, side = engine_powers(u.to(x.dtype))
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
        out[:, 8:] = x[:, 8:]
        body_step(x, main, side, self.gravity, out=out)
        return out.view(*shape, self.nx), main.view(shape), side.view(shape)

    def rollout_component_major(self, x: Tensor, u: Tensor) -> Tensor:
        """`planners.mppi.sample_rollout` of this model's `dynamics`, stepping the rows in place.

        ``x [..., nx]`` (broadcast over ``u``'s leading dims), ``u [..., H, nu]`` -> states
        ``[..., H+1, nx]`` stored component-major (memory ``[nx, H+1, ...]``), the values of
        ``H`` calls of `dynamics`, bit for bit. Each step reads its state's rows where they
        lie and writes the next state's rows in place (`envs.lunar_lander.body.body_step_rows`),
        and the engines' powers of all H steps are computed at once: no transposes between
        the generic ``[..., nx]`` layout and the rows that `body_step` computes on. With the
        planner's B = 64, K = 100 this halves a model step's copies (measured in the
        commit that added it)."""
        check_last(x, self.nx, "x")
        check_last(u, self.nu, "u")
        lead, horizon = u.shape[:-2], u.shape[-2]
        n = lead.numel()
        store = x.new_empty(self.nx, horizon + 1, *lead)
        rows = store.view(self.nx, horizon + 1, n)
        # x's body at step 0 and its zone at every step, each one broadcast copy
        x_rows = x.expand(*lead, self.nx).movedim(-1, 0)  # [nx, *lead], a view
        store[:8, 0] = x_rows[:8]
        store[8:] = x_rows[8:].unsqueeze(1)
        # [nu, H, n]: each step's controls as contiguous rows
        u_rows = u.reshape(n, horizon, self.nu).to(x.dtype).permute(2, 1, 0)
        main, side = engine_powers_rows(u_rows)
        for t in range(horizon):
            body_step_rows(rows[:8, t], main[t], side[t], self.gravity, out=rows[:8, t + 1])
        return store.permute(*range(2, 2 + len(lead)), 1, 0)

    def reward(self, x: Tensor, u: Tensor) -> Tensor:
        """r̂(x_t, u_t): gymnasium's dense reward, no ±100 terminal terms (App. B.2).

        ``shaping(x_{t+1}) - shaping(x_t) - 0.3·main power - 0.03·side power``, and ``-5``
        if ``x_{t+1}`` is inside the zone.
        """
        return self._reward(x, *self._step(x, u))

    def _reward(self, x: Tensor, x1: Tensor, main: Tensor, side: Tensor) -> Tensor:
        """`reward` of the step ``x -> x1`` under the engine powers ``main, side``."""
        danger = ZONE_PENALTY * self.in_danger(x1).to(x1.dtype)
        fuel = torch.add(main * 0.3, side.abs(), alpha=0.03).add_(danger)
        return (shaping(x1) - shaping(x)).sub_(fuel)

    def path_reward(self, states: Tensor, controls: Tensor) -> Tensor:
        """`reward` along a planned path ``[..., H]``: ``states [..., H+1, nx]``, the model's own
        steps under ``controls [..., H, nu]`` (`planners.reward_cost.path_rewards`).

        Each step's ``x_{k+1}`` is read off the path instead of stepping the model again
        (`reward` would repeat the path's `dynamics`, the contact solver included): the same
        values, for half the model steps of the virtual data."""
        check_last(states, self.nx, "states")
        check_last(controls, self.nu, "u")
        x1, shape = states[..., 1:, :], states.shape[:-2] + (controls.shape[-2],)
        main, side = engine_powers(controls.reshape(-1, self.nu).to(x1.dtype))
        return self._reward(states[..., :-1, :], x1, main.view(shape), side.view(shape))

    def observe(self, x: Tensor) -> Tensor:
        """ψ: the observation is the planner state."""
        check_last(x, self.nx, "x")
        return x.clone()

    def planner_state(self, env: Any) -> np.ndarray:
        base = env.unwrapped
        if base.lander_env.lander is None:
            raise ResetNeeded("call env.reset() before reading its planner state")
        kept = getattr(base, "planner_x", None)  # what the env's last reset or step read
        if kept is not None:
            return kept.copy()
        return np.concatenate([body_state(base.lander_env), base.zone.as_tuple()])

    def position(self, x: Tensor) -> Tensor:
        return x[..., 0:2]

    def target(self, a: Tensor) -> Tensor:
        """x*(a) = ``[ẋ*, ẏ*] = VELOCITY_SCALE · clip(a, -1, 1)`` (eq. 39)."""
        check_last(a, self.na, "a")
        return VELOCITY_SCALE * a.clamp(-1.0, 1.0)

    def tracked(self, x: Tensor) -> Tensor:
        return x[..., 2:4]

    def tracking_error_parts(self, x: Tensor, target: Tensor) -> tuple[Tensor, ...]:
        """``ẋ - ẋ*, ẏ - ẏ*`` ``[...]`` each (`envs.base.PlannerModel.tracking_error_parts`)."""
        return x[..., 2] - target[..., 0], x[..., 3] - target[..., 1]

    def scripted_action(self, obs: Tensor) -> Tensor:
        """A hand-written high-level policy ``[..., na]`` for checking the planner alone (App. E).

        From observations ``[..., nobs]``: head for the pad at ``|ẋ*| <= 0.3``, descending
        at ``ẏ* = -clip(0.35·y, 0.04, 0.25)``; while the zone lies below and within 0.12 of
        the lander's column, aim beside it instead and hold the height in the last 0.15
        above it; once a leg is down, ask for a gentle ``ẏ* = -0.05``.
        """
        x, y = obs[..., 0], obs[..., 1]
        cx, cy, w, h = obs[..., 8], obs[..., 9], obs[..., 10], obs[..., 11]
        margin = 0.12
        zone_below = (y > cy - h / 2) & ((x - cx).abs() < w / 2 + margin) & (y < cy + h / 2 + 0.4)
        side = torch.where(x >= cx, 1.0, -1.0)
        aim = torch.where(zone_below, cx + side * (w / 2 + margin + 0.05), torch.zeros_like(x))
        vx = (aim - x).clamp(-0.3, 0.3)
        vy = -(0.35 * y).clamp(0.04, 0.25)
        vy = torch.where(zone_below & (y < cy + h / 2 + 0.15), torch.zeros_like(vy), vy)
        vy = torch.where((obs[..., 6] > 0.5) | (obs[..., 7] > 0.5), torch.full_like(vy, -0.05), vy)
        return (torch.stack((vx, vy), -1) / VELOCITY_SCALE).clamp(-1.0, 1.0)

    def draw(self, ax: Any) -> None:
        """The pad (y = 0 between the flags at x = ±0.2) and the viewport's sides."""
        ax.plot([-PAD_HALF_WIDTH, PAD_HALF_WIDTH], [0.0, 0.0], color="gold", lw=3)
        for flag in (-PAD_HALF_WIDTH, PAD_HALF_WIDTH):
            ax.plot([flag, flag], [0.0, 0.08], color="0.3", lw=1)
        ax.axvline(-1.0, color="0.7", lw=0.8)
        ax.axvline(1.0, color="0.7", lw=0.8)

    def attitude(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The tilt φ (rad) and its rate φ̇ (observation units: 0.4 rad/s), ``[...]`` each."""
        return x[..., 4], x[..., 5]

    def control_effort(self, u: Tensor) -> Tensor:
        """``p_main² + p_side²`` ``[...]``: the squared engine powers that ``u [..., nu]`` fires
        (`envs.lunar_lander.body.engine_powers`; an engine that is off costs 0)."""
        check_last(u, self.nu, "u")
        main, side = engine_powers(u.reshape(-1, self.nu))
        return torch.addcmul(main * main, side, side).view(u.shape[:-1])

    def terminal_reward(self, x: Tensor) -> Tensor:
        """gymnasium's -100 where the model sees a crash or the lander out of view (`terminated`).

        The +100 of coming to rest is not predicted (the model has no Box2D sleep)."""
        return self.terminated(x).to(x.dtype) * -100.0

    def terminated(self, x: Tensor) -> Tensor:
        """Out of the viewport (``|x| >= 1``) or crashed, as far as the model can tell.

        Crash: a vertex of the hull touches the ground (within Box2D's skins of the pad's
        surface; off the pad the terrain is unknown and taken as level with it), or a leg
        is down while descending faster than `CRASH_SPEED`. Coming to rest is not predicted.
        """
        flat = x.reshape(-1, self.nx)
        clearance = hull_clearance(flat[:, 1], flat[:, 4]).view(x.shape[:-1])
        touching = (x[..., 6] > 0.5) | (x[..., 7] > 0.5)
        hard = touching & (x[..., 3] < -CRASH_SPEED)
        return (x[..., 0].abs() >= 1.0) | (clearance <= 0.0) | hard


def shaping(x: Tensor) -> Tensor:
    """gymnasium's potential ``[...]``: ``-100·|(x, y)| - 100·|(ẋ, ẏ)| - 100·|φ| + 10·legs``."""
    distance = torch.hypot(x[..., 0], x[..., 1]).add_(torch.hypot(x[..., 2], x[..., 3]))
    distance.add_(x[..., 4].abs())
    return torch.add(x[..., 6], x[..., 7]).mul_(10.0).sub_(distance, alpha=100.0)
