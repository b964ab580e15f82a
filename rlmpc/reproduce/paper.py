"""The paper's reported figures (Hori et al., arXiv 2512.17091, Tables 1–2), for our tables.

``PAPER[env][method]`` maps an ``eval.json`` column (the env's registry columns) to the
paper's ``(mean, std)`` over 50 evaluation episodes. Method names are this project's
(``rlmpc.reproduce.results`` cells): ``ppo``, ``sac`` (the same figures under ``sb3-ppo``,
``sb3-sac``), ``ppo-mppi-rho<ρ>``, and ``ppo-mppi-adaptive<ρ0>`` (λ as the paper: 0.99 / 0.98
for ρ0 = 0.3 / 0.5, and 0.98 / 0.95 on Racing).
"""

from __future__ import annotations

_ACROBOT = ("success_rate", "steps", "reward")
_LANDER = ("success_rate", "distance_to_pad", "reward")
_RACING = ("success_rate", "collision_or_offtrack", "reward")


def _rows(keys: tuple[str, ...], rows: dict[str, tuple[float, ...]]) -> dict:
    """``{method: {key: (mean, std)}}`` from rows of mean, std pairs in ``keys`` order."""
    return {m: {k: (v[2 * i], v[2 * i + 1]) for i, k in enumerate(keys)} for m, v in rows.items()}


PAPER: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    "acrobot": _rows(_ACROBOT, {
        "ppo": (0.40, 0.49, 332.6, 205.1, -347.1, 188.4),
        "sac": (0.00, 0.00, 500.0, 0.0, -500.0, 0.0),
        "ppo-mppi-rho0": (1.00, 0.00, 82.6, 22.9, -92.6, 40.1),
        "ppo-mppi-rho0.3": (1.00, 0.00, 90.7, 24.3, -103.1, 40.0),
        "ppo-mppi-rho0.5": (1.00, 0.00, 88.3, 27.1, -99.3, 43.5),
        "ppo-mppi-rho0.8": (1.00, 0.00, 82.5, 21.7, -96.4, 42.7),
        "ppo-mppi-adaptive0.3": (1.00, 0.00, 83.8, 23.7, -90.3, 36.0),
        "ppo-mppi-adaptive0.5": (1.00, 0.00, 96.6, 37.6, -115.3, 62.5),
    }),
    "lunarlander": _rows(_LANDER, {
        "ppo": (0.00, 0.00, 1.30, 0.35, -141.9, 84.9),
        "sac": (0.16, 0.37, 0.89, 0.40, -64.3, 188.4),
        "ppo-mppi-rho0": (0.36, 0.48, 0.43, 0.29, -8.3, 227.5),
        "ppo-mppi-rho0.3": (0.46, 0.50, 0.40, 0.35, 44.2, 215.5),
        "ppo-mppi-rho0.5": (0.72, 0.45, 0.15, 0.16, 149.8, 132.3),
        "ppo-mppi-rho0.8": (0.06, 0.24, 0.16, 0.11, -232.3, 155.3),
        "ppo-mppi-adaptive0.3": (0.42, 0.49, 0.54, 0.52, 25.9, 202.6),
        "ppo-mppi-adaptive0.5": (0.34, 0.47, 0.48, 0.30, 31.0, 162.7),
    }),
    "racing": _rows(_RACING, {
        "ppo": (0.24, 0.43, 0.76, 0.43, 2710.2, 2693.8),
        "sac": (0.30, 0.46, 0.50, 0.50, 1177.5, 4484.1),
        "ppo-mppi-rho0": (0.14, 0.35, 0.86, 0.35, 2856.3, 1465.9),
        "ppo-mppi-rho0.3": (0.74, 0.44, 0.18, 0.38, 4512.9, 2516.0),
        "ppo-mppi-rho0.5": (0.50, 0.50, 0.40, 0.49, 3774.9, 2669.2),
        "ppo-mppi-rho0.8": (0.44, 0.50, 0.28, 0.45, 2114.9, 3350.9),
        "ppo-mppi-adaptive0.3": (0.84, 0.37, 0.16, 0.37, 5251.5, 2045.8),
        "ppo-mppi-adaptive0.5": (0.60, 0.49, 0.34, 0.47, 4336.8, 2130.6),
    }),
}  # fmt: skip
# the paper's PPO and SAC are Stable-Baselines3's (App. C): their figures sit beside our SB3
# rows as well as beside the RLlib ones
for _table in PAPER.values():
    _table["sb3-ppo"], _table["sb3-sac"] = _table["ppo"], _table["sac"]
PAPER["carla-racing"] = PAPER["racing"]
PAPER["racing-stadium"] = PAPER["racing"]  # the stadium cells beside the paper too


#: App. E, Table 7: the paper's wall time for 1M training steps (seconds), per env, of its PPO
#: (SB3) and of PPO-MPPI; the paper times no SAC
PAPER_WALL_S: dict[str, dict[str, int]] = {
    "acrobot": {"ppo": 33 * 60 + 21, "ppo-mppi": 15 * 3600 + 9 * 60 + 58},
    "lunarlander": {"ppo": 48 * 60 + 45, "ppo-mppi": 5 * 3600 + 53 * 60 + 20},
    "racing": {"ppo": 5 * 3600 + 34 * 60 + 31, "ppo-mppi": 2 * 86400 + 2 * 3600 + 7 * 60 + 45},
}


def paper_wall_s(env: str, method: str) -> int | None:
    """Table 7's figure for one of our methods: PPO's for ``ppo`` and ``sb3-ppo``,
    PPO-MPPI's for every ``ppo-mppi-*``; None where the paper has none."""
    kind = "ppo-mppi" if method.startswith("ppo-mppi") else method.removeprefix("sb3-")
    return PAPER_WALL_S.get(env, {}).get(kind)
