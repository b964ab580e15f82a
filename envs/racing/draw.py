"""Pictures of a racing env's state (``render_mode="rgb_array"``)."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

#: the frame's margin around the track, pixels
MARGIN = 20


def _frame_geometry(track: Any, width: int) -> tuple[np.ndarray, float, int]:
    """The track's lower-left corner (m), the pixels per metre and the frame's height."""
    left = track.points + track.half_width * track.normal
    right = track.points - track.half_width * track.normal
    lo, hi = np.minimum(left, right).min(0), np.maximum(left, right).max(0)
    scale = (width - 2 * MARGIN) / (hi[0] - lo[0])
    return lo, scale, int((hi[1] - lo[1]) * scale) + 2 * MARGIN


def frame_pixels(track: Any, p: np.ndarray, width: int = 800) -> np.ndarray:
    """``(column, row)`` ``[..., 2]`` of the track-plane points ``p [..., 2]`` (m) in
    `draw_frame`'s frame of ``width`` pixels."""
    lo, scale, height = _frame_geometry(track, width)
    p = np.asarray(p, dtype=np.float64)
    return np.stack([MARGIN + (p[..., 0] - lo[0]) * scale,
                     height - MARGIN - (p[..., 1] - lo[1]) * scale], -1)  # fmt: skip


def draw_frame(env: Any, width: int = 800) -> np.ndarray:
    """rgb_array frame ``[H, W, 3]`` uint8: track, start line, danger zone, the opponent's line
    (when it has one), opponent, ego."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame  # noqa: PLC0415  (only when rendering)

    tr = env.track
    left, right = tr.points + tr.half_width * tr.normal, tr.points - tr.half_width * tr.normal
    height = _frame_geometry(tr, width)[2]

    def px(p: np.ndarray) -> list[tuple[float, float]]:
        return [tuple(q) for q in frame_pixels(tr, p, width).tolist()]

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
