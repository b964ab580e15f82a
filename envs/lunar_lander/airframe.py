"""The lander's rigid body, derived from gymnasium's source: mass properties, engines, contacts.

`AIRFRAME` holds the mass properties of hull + legs, computed from ``lunar_lander.py``'s
polygons and densities exactly as Box2D does, and the engines' mean impulses (the random
dispersion averaged out: it is zero-mean and enters linearly); the module's constants are
Box2D's and gymnasium's, with the units between observation and SI. `body_state` reads the
observation's quantities off a live Box2D world in float64. The planner's step on them is
`envs.lunar_lander.body`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium.envs.box2d import lunar_lander as ll

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
#: the farthest a leg corner lies from the joint centre of mass (m)
TIP_REACH = max(math.hypot(px, py - AIRFRAME.com) for leg in AIRFRAME.leg_points for px, py in leg)


def body_state(lander_env: Any, extra: tuple[float, ...] = ()) -> np.ndarray:
    """gymnasium's 8 observation entries ``[8]`` in float64, read off the Box2D bodies, then
    ``extra`` (the planner state's zone: one array, no concatenation, per env step)."""
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
            *extra,
        ],
        dtype=np.float64,
    )
