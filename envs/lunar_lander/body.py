"""The lander's rigid-body model for the planner: one step of hull + legs on the pad.

Everything here is in gymnasium's observation units (see `envs.lunar_lander.env`) at the
boundary and SI units inside. The constants (`AIRFRAME`: mass properties and the engines'
mean impulses, derived from gymnasium's source) and `body_state` (the same quantities read
off a live Box2D world) are `envs.lunar_lander.airframe`'s, re-exported here; `body_step` is
one step of the model.

How good is it: ``python -m rlmpc.bench.model_error --env lunarlander`` (figures in the tests).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from envs.lunar_lander.airframe import (
    AIRFRAME,
    CONTACT_BAND,
    CONTACT_ITERATIONS,
    DT,
    FRICTION,
    HALF_H,
    HALF_W,
    LEG_DOWN,
    LEG_EXTEND_RATE,
    LEG_LEVER,
    LEG_MAX_IMPULSE,
    LEG_MOTOR_SPEED,
    LEG_RELEASE,
    PAD_CONTACT,
    PAD_HALF_WIDTH,
    TIP_REACH,
    VX_OBS,
    VY_OBS,
    W_OBS,
)
from envs.lunar_lander.solver import contact_impulses

# --------------------------------------------------------------------------------------
# One step on a flat batch of N states, in float arithmetic on few, wide tensors: planar
# vectors are [2, N] (x and y along dim 0), per-leg ones [2, N] (leg along dim 0), the
# four leg corners [4, 2, N]. A tensor op costs ~1-2 µs at these sizes, most of it
# overhead, and ~3x that when it reads the [N, 12] rows' columns (strided); a bool mask,
# torch.where or masked_fill costs 5-20x a float op per element on CPU, so masks here are
# floats (1.0 / 0.0, from comparisons with a float ``out``) and the step keeps to few.
# --------------------------------------------------------------------------------------
#: the contact-space rows of `leg_impulses`: each leg's normal, then its tangent (to -x)
CONTACTS = ("normal_0", "tangent_0", "normal_1", "tangent_1")


class _Constants(NamedTuple):
    """The step's constant tensors on one device and dtype (``[2, 1]``: per x, y)."""

    obs_to_si: Tensor  #: obs velocity -> m/s [2, 1]
    si_to_obs: Tensor  #: m/s -> obs velocity [2, 1]
    metres: Tensor  #: obs position -> m [2, 1]
    origin: Tensor  #: the hull origin at obs (0, 0), m from the pad centre / `PAD_CONTACT` [2, 1]
    euler: Tensor  #: m/s -> obs position change per step [2, 1]
    hull_shift: Tensor  #: -hull_com/m -> obs position [2, 1]
    corners: tuple[Tensor, Tensor]  #: leg corners x, y from the joint com [4, 1, 1]: corner 0
    #: of legs 0 and 1, then corner 1 of both
    hull: tuple[Tensor, Tensor]  #: hull vertices x, y from the hull origin [6, 1]
    inverse_mass: Tensor  #: the linear part of the contact-space inverse mass [4, 4, 1]
    identity: Tensor  #: [4, 4, 1]
    units: Tensor  #: contact impulse units, `FRICTION` for the tangents (`leg_impulses`) [4, 1]
    unit_ratio: Tensor  #: units[X] / units[Y] [4, 4, 1]
    spin_cos2: Tensor  #: 0-d `Airframe.side_dw_cos2`
    lowest_tip: Tensor  #: 0-d: `touching`'s clearance at obs y = 0, at rest (m)


_CONSTANTS: dict[tuple[torch.device, torch.dtype], _Constants] = {}


def _constants(like: Tensor) -> _Constants:
    """`_Constants` on ``like``'s device and dtype, built once per pair."""
    key = (like.device, like.dtype)
    if key not in _CONSTANTS:
        a = AIRFRAME
        f64 = lambda v: torch.tensor(v, dtype=torch.float64)
        pair = lambda vx, vy: f64([[vx], [vy]])
        corners = f64(a.leg_points).transpose(0, 1).reshape(4, 2)  # [corner, leg] -> rows
        corners[:, 1] -= a.com
        hull = f64(a.hull_points)
        linear = f64([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]] * 2) / a.mass
        gap = LEG_DOWN - PAD_CONTACT
        units = f64([[1.0], [FRICTION], [1.0], [FRICTION]])
        tensors = _Constants(
            obs_to_si=pair(1.0 / VX_OBS, 1.0 / VY_OBS),
            si_to_obs=pair(VX_OBS, VY_OBS),
            metres=pair(HALF_W, HALF_H),
            origin=pair(0.0, gap),
            euler=pair(DT / HALF_W, DT / HALF_H),
            hull_shift=pair(-a.hull_com / HALF_W, -a.hull_com / HALF_H),
            corners=(corners[:, 0, None, None], corners[:, 1, None, None]),
            hull=(hull[:, 0, None], hull[:, 1, None]),
            inverse_mass=linear[..., None],
            identity=torch.eye(4, dtype=torch.float64)[..., None],
            units=units,
            unit_ratio=units[:, None] / units[None],
            spin_cos2=f64(a.side_dw_cos2),
            lowest_tip=f64(gap - abs(a.com) - TIP_REACH - CONTACT_BAND - 1e-3),  # 1 mm: round-off
        )
        move = lambda t: t.to(dtype=like.dtype, device=like.device)
        _CONSTANTS[key] = _Constants(
            *(tuple(map(move, t)) if isinstance(t, tuple) else move(t) for t in tensors)
        )
    return _CONSTANTS[key]


def body_step(
    s: Tensor, main: Tensor, side: Tensor, gravity: float, out: Tensor | None = None
) -> Tensor:
    """One step ``[N, 8]`` of ``s = [x, y, ẋ, ẏ, φ, φ̇, leg_0, leg_1]`` (obs units, ``s [N, >= 8]``).

    ``main, side [N]`` are the engines' powers (`engine_powers`); the result is written to
    ``out[:, :8]`` when given (``out [N, >= 8]``, not overlapping ``s``).

    1. `engine_kick`: the hull's velocity (what Box2D reports) is moved to the joint centre
       of mass and kicked by the engines' mean impulses and gravity.
    2. `leg_contacts`: ground contact, from the pose at the start of the step, as Box2D's
       contact solver, on the rows that may touch (`touching`).
    3. `euler_step`: Box2D's semi-implicit Euler step of the hull's centre of mass; the
       hull origin (the observed position) and its velocity follow from the joint com.
    4. `leg_flags`, with a hysteresis of `LEG_RELEASE`.
    """
    n = s.shape[0]
    state = s.new_empty(8, n).copy_(s[:, :8].t())  # one strided read, then contiguous rows
    result = body_step_rows(state, main, side, gravity, out=torch.empty_like(state))
    out = s.new_empty(n, 8) if out is None else out
    out[:, :8] = result.t()
    return out


def body_step_rows(
    state: Tensor, main: Tensor, side: Tensor, gravity: float, out: Tensor
) -> Tensor:
    """`body_step` on rows: ``state [8, N]`` (one row per component, each row contiguous: a
    view of component-major storage will do) to ``out [8, N]`` (likewise, not overlapping
    ``state``), which it returns. The same arithmetic as `body_step`, without its transposes."""
    n = state.shape[1]
    trig = rotation(state[4])
    # rows: the joint body's velocity (vx, vy in m/s, ω in rad/s), then the leg tips'
    # offsets from its centre of mass (rx, ry per leg, m) and their target speeds (m/s)
    work = state.new_empty(9, n)
    engine_kick(state, trig, main, side, gravity, out=work[0:3])
    rows = touching(state, work[0:3])
    if rows is None:  # everywhere airborne
        trig1 = euler_step(state, trig, work[0:3], out=out[0:6])
        out[6:8] = 0.0
    elif 2 * rows.numel() > n:  # most rows: gathering them would cost more than it saves
        legs = leg_contacts(state, trig, work)
        trig1 = euler_step(state, trig, work[0:3], out=out[0:6])
        leg_flags(out[1], trig1, *legs, out=out[6:8])
    else:  # the contacts on the rows that may touch; the others fly, legs up
        some = work.index_select(1, rows)
        legs = leg_contacts(state.index_select(1, rows), trig.index_select(1, rows), some)
        work[0:3].index_copy_(1, rows, some[0:3])
        trig1 = euler_step(state, trig, work[0:3], out=out[0:6])
        out[6:8] = 0.0
        y1, trig1 = out[1].index_select(0, rows), trig1.index_select(1, rows)
        flags = leg_flags(y1, trig1, *legs, out=some[3:5])
        out[6:8].index_copy_(1, rows, flags)
    return out


def engine_kick(
    state: Tensor, trig: Tensor, main: Tensor, side: Tensor, gravity: float, out: Tensor
) -> Tensor:
    """The joint body's velocity ``[3, N]`` (vx, vy in m/s, ω in rad/s) after the engines and gravity.

    ``state [8, N]`` (`body_step`'s rows), ``trig [4, N]`` (`rotation` of φ), ``main, side [N]``.
    """
    a, c = AIRFRAME, _constants(state)
    v, w = out[0:2], out[2]
    w0 = state[5] * (1.0 / W_OBS)
    lever = a.hull_com - a.com  # ω × (hull com - joint com) = -ω·lever·(cos φ, sin φ)
    across = torch.add(w0 * lever, side, alpha=a.side_dv)  # Δv along (cos φ, sin φ)
    torch.mul(state[2:4], c.obs_to_si, out=v).addcmul_(across, trig[0:2])
    v.addcmul_(main, trig[2:4], value=a.main_dv)[1].add_(gravity * DT)
    spin = torch.add(c.spin_cos2, trig[1] * trig[1], alpha=a.side_dw_sin2 - a.side_dw_cos2)
    torch.addcmul(w0, side, spin, value=-1.0, out=w)
    return out


def touching(state: Tensor, velocity: Tensor) -> Tensor | None:
    """The rows ``[n]`` (indices) where a leg is down or a tip may reach the pad's surface this
    step; None where there is none.

    The tips stay within `TIP_REACH` of the joint centre of mass, which sinks by at most
    ``DT·max(-vy, 0)`` (``velocity [3, N]`` from `engine_kick`) and, with them, turns them
    down at up to ``|ω|·TIP_REACH``. On the other rows `leg_contacts` would find no impulse
    and `leg_flags` no leg down, so `body_step_rows` skips them: this changes no result (a row's
    arithmetic is its own), and it saves the contact solver's ~100 ops on the rows in flight.
    """
    if state.shape[1] == 0:
        return None
    c = _constants(state)
    sink = torch.add(velocity[1].clamp(max=0.0), velocity[2].abs(), alpha=-TIP_REACH)
    clearance = torch.addcmul(c.lowest_tip, state[1], c.metres[1]).add_(sink, alpha=DT)
    # float masks: a row touches where clearance <= 0 or either flag is up (>= 0.5)
    low = torch.le(clearance, 0.0, out=torch.empty_like(clearance))
    down = torch.ge(state[6:8].amax(0), 0.5, out=torch.empty_like(clearance))
    rows = torch.maximum(low, down, out=low).nonzero()[:, 0]
    return rows if rows.numel() else None


def leg_contacts(state: Tensor, trig: Tensor, work: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Ground reaction (`leg_impulses`) on ``work[0:3]``, the velocity, on the rows that meet it.

    ``work [9, N]`` (`body_step`'s rows: the velocity from `engine_kick`, then rows that this
    fills in). Returns the legs' flags (1.0 down, 0.0 up), their tips' heights and ground
    heights (m above `PAD_CONTACT`), ``[2, N]`` each, for `leg_flags`.
    """
    a, c = AIRFRAME, _constants(state)
    n = state.shape[1]
    tips, targets = work[3:7].view(2, 2, n), work[7:9]
    flags = torch.gt(state[6:8], 0.5, out=state.new_empty(2, n))  # float masks, see below
    com = torch.addcmul(c.origin, state[0:2], c.metres).add_(trig[2:4], alpha=a.com)  # [2, N]
    tip = leg_tips(trig, out=tips) + com  # [leg, (x, y), N]: m from the pad centre / contact
    height = tip[:, 1]
    ground = leg_ground(tip[:, 0], height, flags)
    leg_targets(height - ground, out=targets)
    closing = torch.addcmul(work[1], work[2], tips[:, 0])  # the tips' vertical speed [2, N]
    rows = ((targets - closing).amax(0) > 0).nonzero()[:, 0]  # elsewhere no impulse lands
    if rows.numel():
        solved = work.index_select(1, rows)
        work[0:3].index_copy_(1, rows, leg_impulses(solved[0:3], solved[3:7], solved[7:9]))
    return flags, height, ground


def euler_step(state: Tensor, trig: Tensor, velocity: Tensor, out: Tensor) -> Tensor:
    """Writes ``[x, y, ẋ, ẏ, φ, φ̇]`` after the step (obs units) to ``out [6, N]``; returns `rotation` of φ.

    ``velocity [3, N]``: the joint body's, from `engine_kick` and `leg_contacts`.
    """
    a, c = AIRFRAME, _constants(state)
    v, w = velocity[0:2], velocity[2]
    phi1 = torch.add(state[4], w, alpha=DT, out=out[4])
    trig1 = rotation(phi1)
    v_hull = torch.addcmul(v, w, trig1[0:2], value=a.com - a.hull_com)
    torch.mul(v_hull, c.si_to_obs, out=out[2:4])
    pos1 = torch.addcmul(state[0:2], v_hull, c.euler, out=out[0:2])
    pos1.addcmul_(trig1[2:4] - trig[2:4], c.hull_shift)
    torch.mul(w, W_OBS, out=out[5])
    return trig1


def leg_flags(
    y1: Tensor, trig1: Tensor, flags: Tensor, height: Tensor, ground: Tensor, out: Tensor
) -> Tensor:
    """The legs' flags after the step ``[2, N]`` (1.0 down, 0.0 up) into ``out``, from
    `leg_contacts`' outputs.

    A leg comes down when its tip ends the step at or below the ground it knows (having
    started it less than `LEG_RELEASE` below), and stays down until its tip rises
    `LEG_RELEASE` above that ground. ``y1 [N]``, ``trig1 [4, N]``: the pose after the step.
    """
    c = _constants(y1)
    com_height1 = torch.addcmul(c.origin[1], y1, c.metres[1]).add_(trig1[3], alpha=AIRFRAME.com)
    height1 = leg_lowest(trig1, com_height1)
    # deeper: a folded leg, whose flag stays put
    near = torch.gt(height, ground - LEG_RELEASE, out=torch.empty_like(height))
    torch.maximum(near, flags, out=near)  # or
    limit = torch.add(ground, flags, alpha=LEG_RELEASE)
    return torch.le(height1, limit, out=out).mul_(near)  # and


def rotation(phi: Tensor) -> Tensor:
    """``[cos φ, sin φ, -sin φ, cos φ]`` ``[4, N]``: the rotation's columns, for ``φ [N]``."""
    trig = phi.new_empty(4, phi.shape[0])
    torch.cos(phi, out=trig[0])
    torch.sin(phi, out=trig[1])
    torch.neg(trig[1], out=trig[2])
    trig[3] = trig[0]
    return trig


def leg_tips(trig: Tensor, out: Tensor) -> Tensor:
    """Each leg's lowest corner: its world-frame offset (m) from the joint centre of mass.

    ``trig [4, N]`` from `rotation`; writes and returns ``out [leg, (x, y), N]``.
    """
    cx, cy = _constants(trig).corners
    corner = torch.mul(cx, trig[0:2]).addcmul_(cy, trig[2:4])  # [4, 2, N]
    second = (corner[0:2, 1] - corner[2:4, 1]).sign_().clamp_(min=0.0)  # 1: it is the lower
    return torch.lerp(corner[0:2], corner[2:4], second[:, None], out=out)


def leg_lowest(trig: Tensor, com_height: Tensor) -> Tensor:
    """The heights (m above `PAD_CONTACT`) ``[2, N]`` of each leg's lowest corner (`leg_tips`)."""
    cx, cy = _constants(trig).corners
    height = torch.mul(cx[..., 0], trig[1]).addcmul_(cy[..., 0], trig[3])  # [4, N]
    return torch.minimum(height[0:2], height[2:4]).add_(com_height)


def leg_ground(tip_x: Tensor, height: Tensor, flags: Tensor) -> Tensor:
    """The ground height (m above `PAD_CONTACT`) each leg tip can touch ``[2, N]``.

    Over the pad (between the flags) the model knows it: 0. Elsewhere the terrain is
    unknown; a leg that is down is taken to stand on ground at its tip's current height, a
    leg that is up meets no ground (``-inf``). ``tip_x, height, flags [2, N]``: the tips' x
    (m from the pad centre) and heights, the legs' flags (1.0 down, 0.0 up).

    With float masks f (flag) and p (over the pad) and ``m = max(f, p)`` that is
    ``h·f·(1-p) + (m - 1)/m``, exactly: ``0/1 = 0`` where some ground is known, ``-1/0 = -inf``
    where none is (``log m`` gives the same, at ~15x the cost: log of 0 takes a slow path).
    """
    over_pad = torch.le(tip_x.abs(), PAD_HALF_WIDTH * HALF_W, out=torch.empty_like(tip_x))
    known = torch.maximum(flags, over_pad)
    known = torch.sub(known, 1.0).div_(known)
    return (height * flags).mul_(1.0 - over_pad).add_(known)


def leg_targets(gap: Tensor, out: Tensor | None = None) -> Tensor:
    """The tips' target vertical speeds (m/s) ``[2, N]`` at ``gap`` m above their ground.

    A leg is held out by its joint motor, which gives way when the ground folds the leg in:
    a tip ``gap`` m above the ground may fall by ``gap`` this step, a folded leg (``gap <
    0``) unfolds at the motor's speed; dead band `CONTACT_BAND` (no ground: ``-inf``).
    """
    band, rise = CONTACT_BAND, LEG_EXTEND_RATE / DT
    gap = gap.clamp(min=-band - LEG_MOTOR_SPEED * LEG_LEVER / rise)  # unfolding at full speed
    excess = gap - gap.clamp(-band, band)  # beyond the dead band, signed
    return torch.add(excess * -rise, excess.clamp(min=0.0), alpha=rise - 1.0 / DT, out=out)


def leg_impulses(velocity: Tensor, r: Tensor, targets: Tensor) -> Tensor:
    """Ground reaction at the two leg tips on the joint body's velocity ``[3, n]`` (vx, vy, ω).

    The ground pushes a tip up by at most `LEG_MAX_IMPULSE` per step, enough to bring its
    vertical speed to its target (`leg_targets`), plus Coulomb friction. ``r [4, n]``: the
    tips' offsets from the joint com (``rx, ry`` of leg 0, then of leg 1); ``targets [2, n]``.
    Left out: the joint limit's rigid stop when a lander heeled far over lands on a leg (its
    timing is unpredictable; modelling it raised the one-step error).

    `CONTACT_ITERATIONS` sweeps of sequential impulses, as Box2D, solved in contact space
    (rows `CONTACTS`, tangent impulses in units of `FRICTION`, so that a tangent's bounds
    are its normal's impulse): ``q`` holds, per contact, its impulse so far plus the impulse
    that would bring it to its target, which only the other contacts' impulses change,
    through the inverse mass ``W``.
    """
    a, c = AIRFRAME, _constants(r)
    return contact_impulses(
        velocity, r, targets, c.inverse_mass, c.identity, c.units, c.unit_ratio,
        1.0 / a.inertia, 1.0 / a.mass, -FRICTION / a.mass, CONTACT_ITERATIONS, LEG_MAX_IMPULSE,
    )  # fmt: skip


def hull_clearance(y: Tensor, phi: Tensor) -> Tensor:
    """The hull's lowest vertex, m above `PAD_CONTACT`, ``[N]`` at obs ``y``, ``φ [N]``."""
    c = _constants(y)
    (hx, hy), sin, cos = c.hull, torch.sin(phi), torch.cos(phi)
    lowest = torch.addcmul(hx * sin, hy, cos).amin(0)
    return torch.addcmul(c.origin[1], y, c.metres[1]).add_(lowest)


def engine_powers(u: Tensor) -> tuple[Tensor, Tensor]:
    """gymnasium's throttle map: main power in ``{0} ∪ [0.5, 1]``, signed side power, ``[N]`` each.

    ``u [N, 2]``. Main: ``u_main <= 0`` off, else ``(1 + u_main)/2``. Side: ``|u_lat| <= 0.5``
    off, else ``sign(u_lat)·|u_lat|`` (positive fires the engine that pushes the lander to
    +x). Controls are clipped to ``[-1, 1]`` first.
    """
    return engine_powers_rows(u.t())


def engine_powers_rows(u: Tensor) -> tuple[Tensor, Tensor]:
    """`engine_powers` of controls stored by rows, ``u [2, ...]`` (main, then lateral): the
    main and side powers ``[...]`` each, element for element the same."""
    main, side = torch.clamp(u, -1.0, 1.0, out=u.new_empty(u.shape))  # contiguous rows
    # float masks (see the comment at the top); an engine that is off gets ±0
    on = torch.gt(main, 0.0, out=torch.empty_like(main))
    fire = torch.gt(side.abs(), 0.5, out=torch.empty_like(side))
    return main.mul_(0.5).add_(0.5).mul_(on), side.mul(fire)
