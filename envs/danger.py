"""The danger zone: one geometry for the env's reward and the planner's cost (App. C, eq. 42).

A zone is the axis-aligned rectangle centred at ``(cx, cy)`` with width ``w`` and height ``h``:
``D = {(x, y) : |x - cx| <= w/2, |y - cy| <= h/2}`` (the square case is ``w = h``).

`in_zone` works on numpy arrays, torch tensors and Python floats alike, so the env (numpy,
one state) and the planner (torch, ``[B, K, H]`` states) call the very same function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def in_zone(px: Any, py: Any, cx: Any, cy: Any, w: Any, h: Any) -> Any:
    """Indicator of eq. (42): True where the point ``(px, py)`` lies inside the zone.

    All arguments broadcast against each other; the result has their broadcast shape and
    the boolean type of the input library (``bool`` for floats).
    """
    return (abs(px - cx) <= 0.5 * w) & (abs(py - cy) <= 0.5 * h)


@dataclass(frozen=True)
class DangerZone:
    """One episode's danger zone, validated at construction."""

    cx: float
    cy: float
    w: float
    h: float

    def __post_init__(self) -> None:
        for name in ("cx", "cy", "w", "h"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(
                    f"danger zone parameter {name!r} must be a finite number, got {value!r}"
                )
        for name in ("w", "h"):
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"danger zone parameter {name!r} must be > 0, got {getattr(self, name)!r}"
                )

    def contains(self, px: Any, py: Any) -> Any:
        """`in_zone` for this zone."""
        return in_zone(px, py, self.cx, self.cy, self.w, self.h)

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.cx, self.cy, self.w, self.h)
