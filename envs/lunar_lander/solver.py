"""Lunar Lander's contact solver as one TorchScript function.

`envs.lunar_lander.body.leg_impulses` hands its inputs, `_constants`' tensors and the
airframe's numbers to `contact_impulses`: ~140 sequential small ops that depend on each
other (8 sweeps of sequential impulses over two legs' normal and tangent contacts), which no
batching can merge. Scripted, the same aten ops run without Python between them; with no CPU
fuser the values are the eager function's, bit for bit (`tests.test_lunar_lander_model.py`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor


def impulse_steps(
    velocity: Tensor, r: Tensor, targets: Tensor, inverse_mass: Tensor, identity: Tensor,
    units: Tensor, unit_ratio: Tensor, inv_inertia: float, inv_mass: float, tangent: float,
    sweeps: int, max_impulse: float,
) -> Tensor:  # fmt: skip
    """The ground's impulses on the joint body's velocity ``[3, n]`` (`leg_impulses` documents
    the model; ``inverse_mass``, ``identity``, ``units``, ``unit_ratio`` are its `_constants`,
    ``tangent`` is ``-FRICTION / mass``). As `contact_impulses` (TorchScript) these ops took
    319 µs against 569 µs eagerly on 1,600 touching rows, one model step of the planner."""
    W = torch.addcmul(inverse_mass, r[:, None], r[None], value=inv_inertia)  # [4, 4, n]
    W.mul_(unit_ratio)
    neg_k = W.diagonal(0, 0, 1).reciprocal().neg_().t()  # [4, n]: -(effective mass)
    c0, c1, c2, c3 = torch.addcmul(identity, W, neg_k).unbind(0)  # [4, n]: Δq per impulse
    q = torch.empty_like(r)
    torch.sub(velocity[1], targets, out=q[0::2])  # normal speed - target: vy + ω·rx - target
    torch.neg(velocity[0:1].expand(2, -1), out=q[1::2])  # tangent speed: -vx + ω·ry
    q.addcmul_(r, velocity[2]).mul_(neg_k).div_(units)
    # sequential impulses: per sweep normal 0, its tangent, normal 1, its tangent; each
    # moves q by its impulse's change (from 0: x - 0 is x exactly) times its coupling column
    p0 = t0 = p1 = t1 = torch.zeros_like(q[0])
    for _ in range(sweeps):
        new = q[0].clamp(0.0, max_impulse)
        q.addcmul_(new - p0, c0)
        p0 = new
        new = torch.clamp(q[1], -p0, p0)
        q.addcmul_(new - t0, c1)
        t0 = new
        new = q[2].clamp(0.0, max_impulse)
        q.addcmul_(new - p1, c2)
        p1 = new
        new = torch.clamp(q[3], -p1, p1)
        q.addcmul_(new - t1, c3)
        t1 = new
    out = torch.empty_like(velocity)
    torch.add(velocity[0], t0 + t1, alpha=tangent, out=out[0])  # tangent = -friction/mass
    torch.add(velocity[1], p0 + p1, alpha=inv_mass, out=out[1])
    spin = (torch.stack((p0, t0, p1, t1)).mul_(units).mul_(r)).sum(0)
    torch.add(velocity[2], spin, alpha=inv_inertia, out=out[2])
    return out


def _scripted(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``fn`` as TorchScript, or ``fn`` itself where torch cannot script it (the same values).

    TorchScript is deprecated in favour of ``torch.compile``, which on this CPU path was
    slower than eager (the contact solver: 594 vs 548 µs after a 29 s compile, and not bit
    for bit); the scripted solver runs the eager ops exactly, without Python between them."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.script(fn)
    except (AttributeError, NotImplementedError, RuntimeError) as err:  # a torch without it
        warnings.warn(f"{fn.__name__} runs eagerly (the same values, slower): {err}", stacklevel=2)
        return fn


contact_impulses = _scripted(impulse_steps)
"""`impulse_steps` as TorchScript (the eager function where torch cannot script it)."""
