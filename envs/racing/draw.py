"""Pictures of a racing env's state (``render_mode="rgb_array"``)."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np


def draw_frame(env: Any, width: int = 800) -> np.ndarray:
    """rgb_array frame ``[H, W, 3]`` uint8: track, start line, danger zone, the opponent's line
    (when it has one), opponent, ego."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame  # noqa: PLC0415  (only when rendering)

    tr, margin = env.track, 20
    left, right = tr.points + tr.half_width * tr.normal, tr.points - tr.half_width * tr.normal
    lo, hi = np.minimum(left, right).min(0), np.maximum(left, right).max(0)
    scale = (width - 2 * margin) / (hi[0] - lo[0])
    height = int((hi[1] - lo[1]) * scale) + 2 * margin

    def px(p: np.ndarray) -> list[tuple[float, float]]:
        return [(margin + (a - lo[0]) * scale, height - margin - (b - lo[1]) * scale) for a, b in p]

    def box(
        xy: Any, half_length: float, half_width: float, psi: float
    ) -> list[tuple[float, float]]:
        corners = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * (half_length, half_width)
        c, s = math.cos(psi), math.sin(psi)
        return px(np.asarray(xy) + corners @ np.array([[c, s], [-s, c]]))

    half_car = (env.task.car_length / 2, env.task.car_width / 2)
    surf = pygame.Surface((width, height))
    surf.fill((40, 120, 40))
    outer, inner = (right, left) if tr.dheading.sum() > 0 else (left, right)  # CCW: left is inside
    pygame.draw.polygon(surf, (90, 90, 90), px(outer))
    pygame.draw.polygon(surf, (40, 120, 40), px(inner))
    pygame.draw.line(surf, (255, 255, 255), *px(np.stack([left[0], right[0]])), 2)
    z = env.zone
    pygame.draw.polygon(surf, (200, 30, 30), box((z.cx, z.cy), z.w / 2, z.h / 2, 0.0))
    line = env.opp_line
    if line is not None:  # the opponent's line for this episode, thin
        s = tr.s[:-1]
        path = tr.to_xy(s, line.ey(s))
        pygame.draw.lines(surf, (120, 140, 230), True, px(path), 1)
    opp = env.opp
    pygame.draw.polygon(surf, (30, 60, 220), box(opp[:2], *half_car, opp.psi))
    pygame.draw.polygon(surf, (250, 200, 0), box(env.state[:2], *half_car, env.state.psi))
    return np.transpose(pygame.surfarray.array3d(surf), (1, 0, 2)).copy()
