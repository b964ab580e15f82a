"""Racing's planner preset (Table 5) and its J_other: eqs. (44)-(46)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor

from common.checks import ConfigError
from planners.costs import PlannerConfig, squared_norm


def collision_cost(model: Any, x: Tensor) -> Tensor:
    """Eq. (44): 1 where ``||p(x) − p_opponent|| <= d_contact``, else 0."""
    gap2 = squared_norm(model.position(x) - model.opponent_position(x))
    return (gap2 <= model.contact_distance**2).to(x.dtype)


def boundary_cost(model: Any, x: Tensor, margin: float = 0.0) -> Tensor:
    """Eq. (45): ``max(0, BP(x) − 1)²`` with BP the boundary proportion (1 at the track edge).

    ``margin`` (m) moves the edge inwards: BP is taken against ``half_width − margin``
    (`envs.racing.model.RacingModel.boundary_proportion`); 0 is eq. (45) as written."""
    return torch.clamp(model.boundary_proportion(x, margin) - 1.0, min=0.0) ** 2


def racing_other_cost(
    model: Any, x: Tensor, u: Tensor | None, w_coll: float, w_bound: float, margin: float = 0.0
) -> Tensor:
    """Eq. (46): ``w_coll J_coll + w_bound J_bound`` (``u`` unused: the signature of a J_other)."""
    return w_coll * collision_cost(model, x) + w_bound * boundary_cost(model, x, margin)


@dataclass(frozen=True)
class RacingPlannerConfig(PlannerConfig):
    """Table 5, Racing: target velocities tracked; J_other is eq. (46) as written.

    Units: J_RL = ``|v − v*|`` with ``v`` the ego's velocity in m/s (world frame on
    ``racing``, `envs.racing.model.ModelParams`), J_coll ∈ {0, 1}, J_bound on BP
    (dimensionless). ``boundary_margin`` = 0: BP = 1 where the car's centre reaches the edge,
    as eq. (45) says, and ``reward_terminal`` = False: App. E's pure MPPI plans on App. B.3's
    r̂, which excludes the terminal reward (as the ``racing`` preset's ``virtual_terminal``
    'exclude' does for the virtual data). `StadiumRacingPlannerConfig` keeps the stadium's
    departures from both.
    """

    horizon_qp: int = 2
    """H for the quadratic cost (Table 5)."""
    w_rl: float = 1.0
    """w_RL (Table 5)."""
    w_danger: float = 300.0
    """w_D (Table 5)."""
    w_coll: float = 300.0
    """w_coll, the collision weight of eq. (46)."""
    w_bound: float = 500.0
    """w_bound, the boundary weight of eq. (46)."""
    boundary_margin: float = 0.0
    """m: eq. (45)'s BP is taken against the half-width less this margin (0: the car's
    centre at the edge, as eq. 45 is written)."""
    reward_terminal: bool = False
    """objective 'reward': App. B.3's r̂, without the terminal reward (True adds it)."""

    def other_cost(self, model: Any) -> Callable[[Tensor, Tensor], Tensor]:
        half_width = model.track.half_width
        if self.boundary_margin >= half_width:
            raise ConfigError(
                "boundary_margin",
                f"boundary_margin must be below the track's half-width ({half_width} m), "
                f"got {self.boundary_margin}",
            )
        return partial(
            racing_other_cost, model, w_coll=self.w_coll, w_bound=self.w_bound,
            margin=self.boundary_margin,
        )  # fmt: skip


@dataclass(frozen=True)
class StadiumRacingPlannerConfig(RacingPlannerConfig):
    """``racing-stadium``'s preset: Table 5, Racing, with the stadium's two departures.

    Units: J_RL = ``|v − v*|`` with ``v`` the track-frame velocity in m/s. BP is 1 where the
    car's *side* reaches the track edge (``boundary_margin`` = 0.9 m, half the car's width),
    not its centre. The episode ends when the centre crosses, so with eq. (45) as written the
    cost only starts where the episode has already ended; the planner tracks a lateral
    *velocity*, not a position, and lets the real (understeering) car drift out in the first
    turn. An untrained policy acting as training starts (`python -m
    rlmpc.baselines.planner_alone --env racing-stadium --policy initial --episodes 50`)
    finished 39 of 50 laps and left the track in 11 with margin 0; with 0.9 m, 47 finished and
    1 left the track (1.5 m: 45 and 2; 2 m: 43 and 2). (Before the model's lateral-acceleration
    bound, `envs.racing.model`: 17 and 32 with margin 0, 44 and 1 with 0.9 m.) Pure MPPI adds
    the terminal reward (``reward_terminal``), as training's ``--virtual-terminal reward``.
    """

    boundary_margin: float = 0.9
    """m: eq. (45)'s BP is taken against the half-width less this margin: 0.9, half the car's
    width, puts BP = 1 where the car's side reaches the edge (0: its centre, as eq. 45 is
    written; see the class docstring)."""
    reward_terminal: bool = True
    """objective 'reward': add the env's terminal reward on a planned transition into a
    terminal state (as training's default ``--virtual-terminal reward``); False: App. B's r̂."""
