"""Lunar Lander with a danger zone (paper App. B.2) and its approximate planner model.

The true system is gymnasium's continuous ``LunarLander`` (Box2D), untouched: same physics,
terrain, dense reward, ±100 terminal rewards and termination. This module adds a rectangular
danger zone to the observation, ``-5`` per step that ends with the lander inside it, and the
1000-step truncation.

Frame (gymnasium's observation frame, used for the zone and by the model): ``x`` is the
lander's horizontal offset from the pad centre in half-viewport widths (10 m), ``y`` its
height above the resting height on the pad in half-viewport heights (6.67 m); the flags
stand at ``x = ±0.2``, the viewport spans ``x ∈ [-1, 1]``, the lander starts near
``(0, 1.41)``. Velocities are gymnasium's scaled ones (``ẋ = 0.2·v_x``, ``ẏ = 0.133·v_y``
with ``v`` in m/s), ``φ̇ = 0.4·ω``.

`LunarLanderModel` is App. B.2's "simplified rigid-body model with fixed constants": the
lander and its two legs as one rigid body (legs held at their joint limit), the engines'
mean impulses, gravity, and a flat ground at the pad's height (see `LunarLanderModel`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.envs.box2d import lunar_lander as ll
from gymnasium.error import ResetNeeded
from torch import Tensor

from envs.base import PlannerModel, check_action
from envs.danger import DangerZone


# --------------------------------------------------------------------------------------
# The rigid body, derived from gymnasium's source (lunar_lander.py constants and reset()).
# --------------------------------------------------------------------------------------
DT = 1.0 / ll.FPS
HALF_W = ll.VIEWPORT_W / ll.SCALE / 2  #: m per obs x unit (10)
HALF_H = ll.VIEWPORT_H / ll.SCALE / 2  #: m per obs y unit (6.67)
VX_OBS, VY_OBS, W_OBS = HALF_W / ll.FPS, HALF_H / ll.FPS, 20.0 / ll.FPS  #: obs per m/s, rad/s
LEG_DOWN = ll.LEG_DOWN / ll.SCALE  #: the obs origin sits this far (m) above the pad
#: joint angle of each leg in flight: its motor holds it at the joint limit nearest the
#: hull (reset(): limits ±[0.4, 0.9], reference angle ∓0.05), so leg i sits at ∓0.35 rad
LEG_FLIGHT_ANGLE = 0.4 - 0.05
LANDER_DENSITY, LEG_DENSITY = 5.0, 1.0  #: reset()'s fixture densities


@dataclass(frozen=True)
class Airframe:
    """Mass properties and mean engine effects of lander + legs as one rigid body (SI units).

    Body frame: the lander's origin, y along its axis. A test checks the masses against
    Box2D's, and the engine effects against a least-squares fit on real flight steps.
    """

    mass: float  #: hull + two legs (kg)
    inertia: float  #: about the joint centre of mass (kg m^2)
    hull_com: float  #: the hull's centre of mass above the origin (m); Box2D reports its velocity
    com: float  #: the joint centre of mass above the origin (m)
    main_dv: float  #: Δv along the axis per step at main power 1 (m/s)
    side_dv: float  #: Δv across the axis per step at side power 1 (m/s)
    side_dw_sin2: float  #: Δω = -σ·(side_dw_sin2·sin²φ + side_dw_cos2·cos²φ) (rad/s)
    side_dw_cos2: float
    leg_points: tuple  #: [2 legs][2 corners] (x, y): the legs' bottom corners (m)
    hull_points: tuple  #: the hull polygon (m)


def _polygon_mass(points: np.ndarray, density: float) -> tuple[float, np.ndarray, float]:
    """Box2D's polygon mass: (mass, centroid [2], inertia about the centroid)."""
    p0, p1 = points, np.roll(points, -1, axis=0)
    cross = p0[:, 0] * p1[:, 1] - p0[:, 1] * p1[:, 0]
    area = cross.sum() / 2
    centroid = (cross[:, None] * (p0 + p1)).sum(0) / (6 * area)
    second = (cross * ((p0**2).sum(1) + (p0 * p1).sum(1) + (p1**2).sum(1))).sum() / 12
    return density * area, centroid, density * (second - area * centroid @ centroid)


def _rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def derive_airframe() -> Airframe:
    """Lander + legs (legs at `LEG_FLIGHT_ANGLE`) from gymnasium's geometry and densities."""
    hull = np.array(ll.LANDER_POLY, float) / ll.SCALE
    m_h, c_h, i_h = _polygon_mass(hull, LANDER_DENSITY)
    w, h = ll.LEG_W / ll.SCALE, ll.LEG_H / ll.SCALE
    box = np.array([(-w, -h), (w, -h), (w, h), (-w, h)])
    m_l, _, i_l = _polygon_mass(box, LEG_DENSITY)
    centres, corners = [], []
    for i in (-1, +1):  # gymnasium's legs[0] (i = -1) hangs on the +x side
        rot = _rotation(-i * LEG_FLIGHT_ANGLE)
        centre = -rot @ (np.array([i * ll.LEG_AWAY, ll.LEG_DOWN]) / ll.SCALE)
        centres.append(centre)
        corners.append(tuple(tuple(centre + rot @ c) for c in box[:2]))
    mass = m_h + 2 * m_l
    com = (m_h * c_h + m_l * sum(centres)) / mass
    inertia = i_h + m_h * np.sum((c_h - com) ** 2)
    inertia += sum(i_l + m_l * np.sum((c - com) ** 2) for c in centres)
    k_side = ll.SIDE_ENGINE_POWER * ll.SIDE_ENGINE_AWAY / ll.SCALE  # mean impulse (N s)
    # side impulse point: 17 px up the axis in its sin part, SIDE_ENGINE_HEIGHT in its cos part
    lever_sin2, lever_cos2 = 17 / ll.SCALE - com[1], ll.SIDE_ENGINE_HEIGHT / ll.SCALE - com[1]
    return Airframe(
        mass=float(mass),
        inertia=float(inertia),
        hull_com=float(c_h[1]),
        com=float(com[1]),
        main_dv=float(ll.MAIN_ENGINE_POWER * ll.MAIN_ENGINE_Y_LOCATION / ll.SCALE / mass),
        side_dv=float(k_side / mass),
        side_dw_sin2=float(k_side * lever_sin2 / inertia),
        side_dw_cos2=float(k_side * lever_cos2 / inertia),
        leg_points=tuple(tuple((float(a), float(b)) for a, b in leg) for leg in corners),
        hull_points=tuple((float(a), float(b)) for a, b in hull),
    )


AIRFRAME = derive_airframe()


def body_state(lander_env: Any) -> np.ndarray:
    """gymnasium's 8 observation entries ``[8]`` in float64, read off the Box2D bodies."""
    body, legs = lander_env.lander, lander_env.legs
    pos, vel = body.position, body.linearVelocity
    return np.array(
        [
            (pos.x - HALF_W) / HALF_W,
            (pos.y - (lander_env.helipad_y + LEG_DOWN)) / HALF_H,
            vel.x * VX_OBS,
            vel.y * VY_OBS,
            body.angle,
            body.angularVelocity * W_OBS,
            float(legs[0].ground_contact),
            float(legs[1].ground_contact),
        ],
        dtype=np.float64,
    )


def flight_step(s: Tensor, powers: Tensor, gravity: float) -> Tensor:
    """One free-flight step ``[..., 6]`` of ``s = [x, y, ẋ, ẏ, φ, φ̇]`` (obs units).

    The hull's velocity (what Box2D reports) is moved to the joint centre of mass, kicked by
    the engines' mean impulses and gravity, moved back; then Box2D's semi-implicit Euler
    step of the hull's centre of mass, from which the hull origin (the observed position)
    follows. ``powers [..., 2]`` from `engine_powers`.
    """
    a = AIRFRAME
    x, y, vx, vy, phi, dphi = s.unbind(-1)
    main, side = powers.unbind(-1)
    sin, cos, w = torch.sin(phi), torch.cos(phi), dphi / W_OBS
    lever = a.hull_com - a.com  # ω × (hull com - joint com) = -ω·lever·(cos φ, sin φ)
    vx = vx / VX_OBS + w * lever * cos + a.main_dv * main * -sin + a.side_dv * side * cos
    vy = vy / VY_OBS + w * lever * sin + a.main_dv * main * cos + a.side_dv * side * sin
    vy = vy + gravity * DT
    w = w - side * (a.side_dw_sin2 * sin**2 + a.side_dw_cos2 * cos**2)
    phi1 = phi + DT * w
    sin1, cos1 = torch.sin(phi1), torch.cos(phi1)
    vx, vy = vx - w * lever * cos1, vy - w * lever * sin1
    x = x + (DT * vx + a.hull_com * (sin1 - sin)) / HALF_W
    y = y + (DT * vy - a.hull_com * (cos1 - cos)) / HALF_H
    return torch.stack([x, y, vx * VX_OBS, vy * VY_OBS, phi1, w * W_OBS], -1)


def point_heights(y: Tensor, phi: Tensor, points: Tensor) -> Tensor:
    """Heights above the pad (m) ``[..., P]`` of body-frame ``points [P, 2]`` at obs ``y``, ``φ``."""
    sin, cos = torch.sin(phi)[..., None], torch.cos(phi)[..., None]
    base = (y * HALF_H + LEG_DOWN)[..., None]
    return base + points[:, 0] * sin + points[:, 1] * cos

ZONE_PENALTY = 5.0  #: subtracted per step that ends with the lander inside the zone
MAX_EPISODE_STEPS = 1000
PAD_HALF_WIDTH = 0.2  #: the flags, helipad_x1,2 = 8 m, 12 m, at obs x = ∓0.2
START_Y = (ll.VIEWPORT_H / ll.SCALE * 0.75 - ll.LEG_DOWN / ll.SCALE) / (ll.VIEWPORT_H / ll.SCALE / 2)
PAD_CLEARANCE = 0.2  #: zones stay out of the box |x| <= PAD_HALF_WIDTH, y <= this (~1.3 m)
MAX_ZONE_WIDTH = 1.0  #: half the viewport width: a zone always leaves a way around it
#: x*(a) = VELOCITY_SCALE·a in obs units. Free-flight speeds stay below ~0.5 (the start push
#: gives |ẋ| <= 0.83, |ẏ| <= 0.55; a safe touchdown needs |ẏ| <~ 0.1), and the main engine
#: changes ẏ by ~0.03 per step net of gravity, so ±0.5 spans hover to a brisk traverse that
#: the engines can reach or undo in about a second.
VELOCITY_SCALE = 0.5
#: Touching down faster than this (obs ẏ, ~3.7 m/s) crashes: measured over 126 heuristic
#: landings, all touchdowns slower than 0.43 survived and most faster than 0.5 crashed.
CRASH_SPEED = 0.5
#: The default zone ranges: a zone between the start and the pad, always above the pad
#: clearance and below the start, at most 0.5 wide.
ZONE_RANGES = {
    "zone_cx_range": (-0.3, 0.3),
    "zone_cy_range": (0.55, 0.95),
    "zone_w_range": (0.2, 0.5),
    "zone_h_range": (0.1, 0.3),
}


class LunarLanderModel(PlannerModel):
    """Approximate model of `LunarLanderDZEnv` (App. B.2): fixed-constant rigid body, no Box2D.

    Planner state (observation units, module docstring) ``x = [x, y, ẋ, ẏ, φ, φ̇, leg_0,
    leg_1, cx, cy, w, h]``, nx = 12, exactly the observation (ψ is the identity). ``leg_0``
    is gymnasium's first leg, the one on the lander's +x side. Control ``u = [u_main, u_lat]``;
    high-level action ``a ∈ [-1, 1]^2`` → target velocities ``[ẋ*, ẏ*] = 0.5·a``.

    One step (`envs.lunar_lander_body.AIRFRAME` derives every constant from gymnasium's
    source): the main engine (``u_main > 0``, power ``(1 + u_main)/2``) and side engines
    (``|u_lat| > 0.5``, power ``|u_lat|``) give their mean impulses (the random dispersion
    averaged out) to lander + legs as one rigid body; gravity; Box2D's semi-implicit Euler.
    Ground: flat at the pad's height; a leg touches when its tip reaches it, and the ground
    then stops the descent of that tip (`contact_step`). The terrain off the pad, the legs'
    springs and Box2D's sleep are not modelled.
    """

    nx, nu, na, nobs, nt = 12, 2, 2, 12, 2
    u_low, u_high = (-1.0, -1.0), (1.0, 1.0)
    zone_slice = slice(8, 12)

    def __init__(self, gravity: float = -10.0):
        if not -12.0 < gravity < 0.0:
            raise ValueError(f"gravity must be in (-12, 0), got {gravity!r}")
        self.gravity = float(gravity)

    def dynamics(self, x: Tensor, u: Tensor) -> Tensor:
        _check_last(x, self.nx, "x")
        _check_last(u, self.nu, "u")
        lo, hi = self.bounds(u)
        u = torch.minimum(torch.maximum(u, lo), hi)
        phys = contact_step(x[..., :8], engine_powers(u), self.gravity)
        zone = x[..., self.zone_slice].expand(*phys.shape[:-1], 4)
        return torch.cat([phys, zone], -1)

    def reward(self, x: Tensor, u: Tensor) -> Tensor:
        """r̂(x_t, u_t): gymnasium's dense reward, no ±100 terminal terms (App. B.2).

        ``shaping(x_{t+1}) - shaping(x_t) - 0.3·main power - 0.03·side power``, and ``-5``
        if ``x_{t+1}`` is inside the zone.
        """
        main, side = engine_powers(u.clamp(-1.0, 1.0)).unbind(-1)
        x1 = self.dynamics(x, u)
        fuel = 0.3 * main + 0.03 * side.abs()
        danger = ZONE_PENALTY * self.in_danger(x1).to(x.dtype)
        return shaping(x1) - shaping(x) - fuel - danger

    def observe(self, x: Tensor) -> Tensor:
        """ψ: the observation is the planner state."""
        _check_last(x, self.nx, "x")
        return x.clone()

    def planner_state(self, env: Any) -> np.ndarray:
        base = env.unwrapped
        if base.lander_env.lander is None:
            raise ResetNeeded("call env.reset() before reading its planner state")
        return np.concatenate([body_state(base.lander_env), base.zone.as_tuple()])

    def position(self, x: Tensor) -> Tensor:
        return x[..., 0:2]

    def target(self, a: Tensor) -> Tensor:
        """x*(a) = ``[ẋ*, ẏ*] = VELOCITY_SCALE · clip(a, -1, 1)`` (eq. 39)."""
        _check_last(a, self.na, "a")
        return VELOCITY_SCALE * a.clamp(-1.0, 1.0)

    def tracked(self, x: Tensor) -> Tensor:
        return x[..., 2:4]

    def terminated(self, x: Tensor) -> Tensor:
        """Out of the viewport (``|x| >= 1``) or crashed, as far as the model can tell.

        Crash: a vertex of the hull at or below the (flat) ground, or a leg down while
        descending faster than `CRASH_SPEED`. Coming to rest is not predicted.
        """
        legs, hull = leg_clearance(x[..., 1], x[..., 4])
        touching = (x[..., 6] > 0.5) | (x[..., 7] > 0.5)
        hard = touching & (x[..., 3] < -CRASH_SPEED)
        return (x[..., 0].abs() >= 1.0) | (hull <= 0.0) | hard


def engine_powers(u: Tensor) -> Tensor:
    """gymnasium's throttle map ``[..., 2]``: main power in ``{0} ∪ [0.5, 1]``, signed side power.

    Main: ``u_main <= 0`` off, else ``(1 + u_main)/2``. Side: ``|u_lat| <= 0.5`` off, else
    ``sign(u_lat)·|u_lat|`` (positive fires the engine that pushes the lander to +x).
    """
    main = torch.where(u[..., 0] > 0, (u[..., 0].clamp(0.0, 1.0) + 1.0) * 0.5, 0.0)
    side = torch.where(u[..., 1].abs() > 0.5, u[..., 1].clamp(-1.0, 1.0), 0.0)
    return torch.stack(torch.broadcast_tensors(main, side), -1)


def shaping(x: Tensor) -> Tensor:
    """gymnasium's potential ``[...]``: ``-100·|(x, y)| - 100·|(ẋ, ẏ)| - 100·|φ| + 10·legs``."""
    return (
        -100.0 * torch.hypot(x[..., 0], x[..., 1])
        - 100.0 * torch.hypot(x[..., 2], x[..., 3])
        - 100.0 * x[..., 4].abs()
        + 10.0 * (x[..., 6] + x[..., 7])
    )


def _check_last(t: Tensor, n: int, name: str) -> None:
    if t.shape[-1:] != (n,):
        raise ValueError(f"{name} must have shape [..., {n}], got {tuple(t.shape)}")
