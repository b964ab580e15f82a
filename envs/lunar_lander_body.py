"""The lander's rigid-body model for the planner: constants derived from gymnasium's source.

Everything here is in gymnasium's observation units (see `envs.lunar_lander_dz`) at the
boundary and SI units inside. `AIRFRAME` holds the mass properties of hull + legs, computed
from ``lunar_lander.py``'s polygons and densities exactly as Box2D does, and the engines'
mean impulses (the random dispersion averaged out: it is zero-mean and enters linearly).
`body_step` is one step of the model; `body_state` reads the same quantities off a live
Box2D world in float64.

How good is it: ``python -m envs.model_error --env lunarlander`` (figures in the tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium.envs.box2d import lunar_lander as ll
from torch import Tensor

# --------------------------------------------------------------------------------------
# The rigid body, derived from gymnasium's source (lunar_lander.py constants and reset()).
# --------------------------------------------------------------------------------------
DT = 1.0 / ll.FPS
HALF_W = ll.VIEWPORT_W / ll.SCALE / 2  #: m per obs x unit (10)
HALF_H = ll.VIEWPORT_H / ll.SCALE / 2  #: m per obs y unit (6.67)
VX_OBS, VY_OBS, W_OBS = HALF_W / ll.FPS, HALF_H / ll.FPS, 20.0 / ll.FPS  #: obs per m/s, rad/s
LEG_DOWN = ll.LEG_DOWN / ll.SCALE  #: the obs origin sits this far (m) above the pad
PAD_HALF_WIDTH = 0.2  #: the flags (helipad_x1, x2 = 8 m, 12 m) stand at obs x = ∓0.2
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
#: a level lander's leg tip (its inner bottom corner) lies this far out from the hull origin (m)
LEG_LEVER = min(abs(px) for leg in AIRFRAME.leg_points for px, _ in leg)
#: the pad's surface (m above the pad height): its edges lie at 0.99·helipad_y, since
#: reset() smooths chunk heights with 0.33, not 1/3
PAD_SURFACE = -0.01 * ll.VIEWPORT_H / ll.SCALE / 4
PAD_CONTACT = PAD_SURFACE + 2 * 0.01  #: shapes touch 2·b2_polygonRadius apart (their skins)
LEG_RELEASE = 0.02  #: contact flags' hysteresis (m), fitted on landings: 2 skins
CONTACT_BAND = 0.005  #: b2_linearSlop: tips within this of the ground are left alone (m)
LEG_EXTEND_RATE = 0.2  #: b2_baumgarte: the share of a fold taken out per step
CONTACT_ITERATIONS = 8  #: sequential-impulse sweeps over the two legs
LEG_MOTOR_SPEED = 0.3  #: reset()'s motorSpeed (rad/s): how fast a folded leg unfolds
#: the most the ground pushes a tip up per step: the motor's torque over the level lever
LEG_MAX_IMPULSE = ll.LEG_SPRING_TORQUE / LEG_LEVER * DT
FRICTION = math.sqrt(0.1 * 0.2)  #: Box2D mixes the terrain's 0.1 and the legs' default 0.2


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


def body_step(s: Tensor, powers: Tensor, gravity: float) -> Tensor:
    """One step ``[..., 8]`` of ``s = [x, y, ẋ, ẏ, φ, φ̇, leg_0, leg_1]`` (obs units).

    1. The hull's velocity (what Box2D reports) is moved to the joint centre of mass and
       kicked by the engines' mean impulses (``powers [..., 2]`` from `engine_powers`) and
       gravity.
    2. Legs: `leg_impulses` (ground contact, from the pose at the start of the step, as
       Box2D's contact solver).
    3. Box2D's semi-implicit Euler step of the hull's centre of mass; the hull origin (the
       observed position) and its velocity follow from the joint centre of mass.
    4. Leg flags, with a hysteresis of `LEG_RELEASE`: a leg comes down when its tip ends
       the step at or below the ground it knows (having started it less than `LEG_RELEASE`
       below), and stays down until its tip rises `LEG_RELEASE` above that ground.
    """
    a = AIRFRAME
    x, y, vx, vy, phi, dphi, leg0, leg1 = s.unbind(-1)
    main, side = powers.unbind(-1)
    sin, cos, w = torch.sin(phi), torch.cos(phi), dphi / W_OBS
    lever = a.hull_com - a.com  # ω × (hull com - joint com) = -ω·lever·(cos φ, sin φ)
    vx = vx / VX_OBS + w * lever * cos + a.main_dv * main * -sin + a.side_dv * side * cos
    vy = vy / VY_OBS + w * lever * sin + a.main_dv * main * cos + a.side_dv * side * sin
    vy = vy + gravity * DT
    w = w - side * (a.side_dw_sin2 * sin**2 + a.side_dw_cos2 * cos**2)
    tx, ty, h0 = leg_tips(y, phi)
    flags = torch.stack([leg0, leg1], -1) > 0.5
    ground = leg_ground(x, phi, tx, ty, h0, flags)
    vx, vy, w = leg_impulses(vx, vy, w, sin, cos, h0 - ground, tx, ty)
    phi1 = phi + DT * w
    sin1, cos1 = torch.sin(phi1), torch.cos(phi1)
    vx, vy = vx - w * lever * cos1, vy - w * lever * sin1
    x = x + (DT * vx + a.hull_com * (sin1 - sin)) / HALF_W
    y = y + (DT * vy - a.hull_com * (cos1 - cos)) / HALF_H
    h1 = leg_tips(y, phi1)[2]
    near = flags | (h0 > ground - LEG_RELEASE)  # deeper: a folded leg, whose flag stays put
    down = ((h1 <= ground + LEG_RELEASE * flags) & near).to(s.dtype)
    out = [x, y, vx * VX_OBS, vy * VY_OBS, phi1, w * W_OBS, down[..., 0], down[..., 1]]
    return torch.stack(torch.broadcast_tensors(*out), -1)


def leg_tips(y: Tensor, phi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Each leg's lowest corner: body-frame ``x, y`` (m) and height above the pad, ``[..., 2]`` each."""
    corners = torch.tensor(AIRFRAME.leg_points, dtype=y.dtype, device=y.device)  # [2, 2, 2]
    heights = point_heights(y, phi, corners.reshape(4, 2)).unflatten(-1, (2, 2))
    outer = heights[..., 1] < heights[..., 0]  # [..., 2]: the second corner is the lower
    tx = torch.where(outer, corners[:, 1, 0], corners[:, 0, 0])
    ty = torch.where(outer, corners[:, 1, 1], corners[:, 0, 1])
    return tx, ty, heights.amin(-1)


def leg_ground(
    x: Tensor, phi: Tensor, tx: Tensor, ty: Tensor, heights: Tensor, flags: Tensor
) -> Tensor:
    """The ground height (m above the pad) each leg tip can touch ``[..., 2]``.

    Over the pad (between the flags) the model knows it: `PAD_CONTACT`. Elsewhere the
    terrain is unknown; a leg that is down is taken to stand on ground at its tip's current
    height, a leg that is up meets no ground (``-inf``).
    """
    sin, cos = torch.sin(phi)[..., None], torch.cos(phi)[..., None]
    over_pad = (x[..., None] + (tx * cos - ty * sin) / HALF_W).abs() <= PAD_HALF_WIDTH
    off_pad = torch.where(flags, heights, torch.full_like(heights, -math.inf))
    return torch.where(over_pad, torch.full_like(heights, PAD_CONTACT), off_pad)


def leg_impulses(
    vx: Tensor, vy: Tensor, w: Tensor, sin: Tensor, cos: Tensor, gap: Tensor, tx: Tensor, ty: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Ground reaction at the two leg tips on the joint body's velocity (m/s, rad/s).

    A leg is held out by its joint motor, which gives way when the ground folds the leg in:
    the ground pushes a tip up by at most `LEG_MAX_IMPULSE` per step, enough to stop its
    fall (a tip ``gap`` m above the ground may fall by ``gap`` this step) or to unfold a
    folded leg (``gap < 0``) at the motor's speed; plus Coulomb friction. ``gap, tx, ty
    [..., 2]``; dead band `CONTACT_BAND`; `CONTACT_ITERATIONS` sweeps of sequential
    impulses, as Box2D. Left out: the joint limit's rigid stop when a lander heeled far over
    lands on a leg (its timing is unpredictable; modelling it raised the one-step error).
    """
    a = AIRFRAME
    r, k_n, k_t, target, p_n, p_t = [], [], [], [], [], []
    for i in range(2):
        px, py = tx[..., i], ty[..., i] - a.com  # tip from the joint com, body frame
        rx, ry = px * cos - py * sin, px * sin + py * cos
        r.append((rx, ry))
        k_n.append(1.0 / (1.0 / a.mass + rx**2 / a.inertia))
        k_t.append(1.0 / (1.0 / a.mass + ry**2 / a.inertia))
        g = gap[..., i]
        fall = -(g - CONTACT_BAND).clamp(min=0.0) / DT
        rise = (-g - CONTACT_BAND).clamp(min=0.0) * LEG_EXTEND_RATE / DT
        rise = rise.clamp(max=LEG_MOTOR_SPEED * LEG_LEVER)
        target.append(torch.where(torch.isfinite(g), fall + rise, -math.inf))
        p_n.append(torch.zeros_like(g))
        p_t.append(torch.zeros_like(g))
    for _ in range(CONTACT_ITERATIONS):
        for i in range(2):
            rx, ry = r[i]
            v_n = vy + w * rx
            new = (p_n[i] + k_n[i] * (target[i] - v_n)).clamp(0.0, LEG_MAX_IMPULSE)
            d, p_n[i] = new - p_n[i], new
            vy, w = vy + d / a.mass, w + rx * d / a.inertia
            v_t = vx - w * ry
            new = p_t[i] - k_t[i] * v_t
            new = torch.maximum(torch.minimum(new, FRICTION * p_n[i]), -FRICTION * p_n[i])
            d, p_t[i] = new - p_t[i], new
            vx, w = vx + d / a.mass, w - ry * d / a.inertia
    return vx, vy, w


def point_heights(y: Tensor, phi: Tensor, points: Tensor) -> Tensor:
    """Heights above the pad (m) ``[..., P]`` of body-frame ``points [P, 2]`` at obs ``y``, ``φ``."""
    sin, cos = torch.sin(phi)[..., None], torch.cos(phi)[..., None]
    base = (y * HALF_H + LEG_DOWN)[..., None]
    return base + points[:, 0] * sin + points[:, 1] * cos


def engine_powers(u: Tensor) -> Tensor:
    """gymnasium's throttle map ``[..., 2]``: main power in ``{0} ∪ [0.5, 1]``, signed side power.

    Main: ``u_main <= 0`` off, else ``(1 + u_main)/2``. Side: ``|u_lat| <= 0.5`` off, else
    ``sign(u_lat)·|u_lat|`` (positive fires the engine that pushes the lander to +x).
    """
    main = torch.where(u[..., 0] > 0, (u[..., 0].clamp(0.0, 1.0) + 1.0) * 0.5, 0.0)
    side = torch.where(u[..., 1].abs() > 0.5, u[..., 1].clamp(-1.0, 1.0), 0.0)
    return torch.stack(torch.broadcast_tensors(main, side), -1)
