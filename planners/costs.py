"""MPPI cost terms of App. C (eqs. 38–46) and each env's Table-5 planner preset.

Every term is a batched torch function of planner states ``x [..., nx]`` (and controls
``u [..., nu]``, targets ``[..., nt]``) returning ``[...]``; leading dims broadcast, so the
planner evaluates target-free terms once for all M candidates. A model is any object with
the `envs.base.PlannerModel` methods a term uses.

`build_planner(model, config)` assembles eq. (38) for one env and hands it to an MPPI
backend. Table 5's ``noise_sigma = 0.5`` is read as pytorch-mppi's ``noise_sigma`` argument,
which is the noise **covariance**: Σ = 0.5·I (a standard deviation of about 0.71 per control).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor

from common.checks import ConfigError, check_finite_fields
from planners.mppi import BACKENDS, MPPI, make_planner
from planners.reward_cost import RewardCost

CostTerm = Callable[[Tensor, Tensor, Tensor], Tensor]


def squared_norm(v: Tensor) -> Tensor:
    """``||v||²`` over the last dim ``[...]``, summed component by component.

    For the few components of a target or control this is ~3× faster on CPU than a reduction
    over a short last dim (``vector_norm``), and the planner calls it on ``[B, M, K, H]`` states.
    """
    return squared_sum(v.unbind(-1))


def squared_sum(parts: Sequence[Tensor]) -> Tensor:
    """``Σ_i parts[i]²`` ``[...]`` (`squared_norm` of components given one by one)."""
    total = parts[0] * parts[0]
    for c in parts[1:]:
        total.addcmul_(c, c)
    return total


def tracking_cost(model: Any, x: Tensor, target: Tensor) -> Tensor:
    """Eq. (39): ``J_RL^track = ||x̂ − x*(a)||`` on the tracked features (angles wrapped)."""
    return squared_sum(model.tracking_error_parts(x, target)).sqrt_()


def _tracking_term(model: Any, x: Tensor, u: Tensor, target: Tensor) -> Tensor:
    return tracking_cost(model, x, target)


def quadratic_cost(
    model: Any, x: Tensor, u: Tensor, target: Tensor, q_state: float, r_control: float
) -> Tensor:
    """Eq. (40), quadratic around the reference x*(a): ``q ||e||² + r ||u||²``, ``e = x̂ − x*(a)``.

    In eq. (40)'s ``[x; u]`` coordinates this is ``Q(a) = blockdiag(q SᵀS, r I)`` and
    ``p(a) = [−2 q Sᵀ x*(a); 0]`` (S selects the tracked features), plus the constant
    ``q ||x*(a)||²``, which shifts every sample's cost alike and so leaves eq. (3) unchanged.
    """
    e = model.tracking_error(x, target)
    return q_state * squared_norm(e) + r_control * squared_norm(u)


class ValueTerminalCost:
    """Eq. (41): the terminal cost ``φ(x_H) = −V(x_H)`` for a value callable on planner states.

    ``value_fn(x [..., nx]) -> [...]``; a critic on observations is ``lambda x: V(model.observe(x))``.
    Combines with either running-cost form (it is passed as the planner's terminal cost).
    """

    def __init__(self, value_fn: Callable[[Tensor], Tensor]) -> None:
        self.value_fn = value_fn

    def __call__(self, x: Tensor, target: Tensor) -> Tensor:
        return -self.value_fn(x)


def danger_cost(model: Any, x: Tensor) -> Tensor:
    """Eq. (42): 1 where the state's point lies in its danger zone, else 0 (``model.in_danger``,
    as floats: `envs.base.PlannerModel.danger_indicator`)."""
    return model.danger_indicator(x)


def lunar_lander_other_cost(
    model: Any,
    x: Tensor,
    u: Tensor,
    w_y: float,
    w_act: float,
    w_attitude: float = 0.0,
    attitude_rate: float = 0.1,
    effort: Literal["power", "control"] = "control",
) -> Tensor:
    """Eq. (43) plus an attitude term: ``w_y y² + w_act E(u) + w_att (φ² + c φ̇²)``.

    ``y`` is the altitude above the pad (``position(x)[..., 1]``), ``φ, φ̇`` the tilt and its
    rate (``model.attitude(x)``, observation units: rad and 0.4 rad/s). ``E(u)`` is eq. (43)'s
    ``||u||²`` (``effort="control"``) or the squared engine powers ``model.control_effort(u)``
    (``"power"``): a throttle that is off (``u_main <= 0``, ``|u_lat| <= 0.5``) then costs
    nothing, so the planner can shut the engines down and let the lander come to rest. The
    attitude term is not in eq. (43); `LunarLanderPlannerConfig` gives the reasons.
    """
    y = model.position(x)[..., 1]
    spent = model.control_effort(u) if effort == "power" else squared_norm(u)
    cost = w_y * y * y + w_act * spent
    if w_attitude:
        phi, rate = model.attitude(x)
        cost = cost + w_attitude * (phi * phi + attitude_rate * rate * rate)
    return cost


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


class CompositeCost:
    """Eq. (38)'s summand: ``w_RL J_RL(x, u; a) + w_D J_danger(x) + J_other(x, u)``.

    The planner sums it over the horizon. ``rl_term(x, u, target)`` is eq. (39) or (40);
    ``other(x, u)`` the domain's term (None: zero). The target-free terms are summed at
    their own (smaller) broadcast shape, then the target term is added.
    """

    def __init__(
        self,
        model: Any,
        w_rl: float,
        w_danger: float,
        rl_term: CostTerm,
        other: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        self.model, self.w_rl, self.w_danger = model, w_rl, w_danger
        self.rl_term, self.other = rl_term, other

    def __call__(self, x: Tensor, u: Tensor, target: Tensor) -> Tensor:
        return self.state_terms(x, u) + self.w_rl * self.rl_term(x, u, target)

    def state_terms(self, x: Tensor, u: Tensor) -> Tensor:
        """The target-free part ``w_D J_danger(x) + J_other(x, u)`` ``[...]``."""
        terms = self.w_danger * danger_cost(self.model, x)
        return terms if self.other is None else terms + self.other(x, u)

    def horizon_sum(self, x: Tensor, u: Tensor, target: Tensor) -> Tensor:
        """``Σ_t`` of the summand along the horizon: ``x [..., H, nx]``, ``u [..., H, nu]``,
        ``target [..., 1, nt]`` -> ``[...]`` (`planners.mppi.path_cost` uses it).

        Each part is summed over H at its own shape and weighted after the sum, so the
        broadcast over the M candidates costs one weighted add of ``[..., K]`` sums instead
        of a multiply and an add of ``[..., K, H]`` terms.
        """
        rl = self.rl_term(x, u, target).sum(-1)
        return torch.add(self.state_terms(x, u).sum(-1), rl, alpha=self.w_rl)


@dataclass(frozen=True)
class PlannerConfig:
    """MPPI options and eq. (38) weights; the per-env subclasses carry Table 5's values."""

    horizon: int = 10
    """H for the target-tracking cost (Table 5, 'horizon (state ref)'), 1..1000."""
    horizon_qp: int = 3
    """H for the quadratic cost of eq. (40) (Table 5, 'horizon (QP)'), 1..1000."""
    num_samples: int = 100
    """K, noise sequences per state, shared by the M candidates, 1..65536."""
    lambda_temp: float = 1.0
    """λ, the temperature of eq. (3)."""
    noise_sigma: float = 0.5
    """Noise covariance scale: Σ = noise_sigma·I (pytorch-mppi's noise_sigma is a covariance)."""
    w_rl: float = 1.0
    """w_RL, the weight of the RL-conditioned term."""
    w_danger: float = 0.0
    """w_D, the weight of the danger-zone indicator (eq. 42)."""
    rl_term: Literal["track", "quad"] = "track"
    """RL term: 'track' (eq. 39) or 'quad' (eq. 40, with horizon_qp)."""
    q_state: float = 1.0
    """eq. (40): weight of the squared tracking error."""
    r_control: float = 0.0
    """eq. (40): weight of the squared control."""
    backend: Literal["batched", "pytorch_mppi"] = "batched"
    """'batched' (this package's MPPI) or 'pytorch_mppi' (one pytorch_mppi.MPPI per state and candidate)."""
    w_value: float = 0.0
    """Weight of eq. (41)'s terminal cost −V(x_H) (the learner's value ensemble, mean, on ψ(x_H)),
    added to either RL term; 0 leaves it out."""
    objective: Literal["composite", "reward"] = "composite"
    """'composite': eq. (38), conditioned on the high-level action; 'reward': App. E's pure
    MPPI, −r̂ over the horizon H (`planners.reward_cost`; target, w_rl, w_danger, rl_term and
    J_other unused)."""
    reward_terminal: bool = True
    """objective 'reward': add the env's terminal reward on a planned transition into a
    terminal state (as training's default ``--virtual-terminal reward``); False: App. B's r̂."""

    def __post_init__(self) -> None:
        check_finite_fields(self)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("horizon", "horizon_qp", "num_samples"):
                most = 1000 if f.name != "num_samples" else 65536
                if not isinstance(value, int) or not 1 <= value <= most:
                    raise ConfigError(
                        f.name, f"{f.name} must be an integer in [1, {most}], got {value!r}"
                    )
            elif f.name in ("lambda_temp", "noise_sigma"):
                if (
                    isinstance(value, bool)
                    or not isinstance(value, (int, float))
                    or not 0 < value < float("inf")
                ):
                    raise ConfigError(
                        f.name, f"{f.name} must be a finite number > 0, got {value!r}"
                    )
            elif f.name not in ("rl_term", "backend", "effort", "objective", "reward_terminal"):
                if (
                    isinstance(value, bool)
                    or not isinstance(value, (int, float))
                    or not 0 <= value < float("inf")
                ):
                    raise ConfigError(
                        f.name, f"{f.name} must be a finite number >= 0, got {value!r}"
                    )
        if self.rl_term not in ("track", "quad"):
            raise ConfigError("rl_term", f"rl_term must be 'track' or 'quad', got {self.rl_term!r}")
        if self.backend not in BACKENDS:
            raise ConfigError("backend", f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.objective not in ("composite", "reward"):
            raise ConfigError(
                "objective", f"objective must be 'composite' or 'reward', got {self.objective!r}"
            )
        if self.objective == "reward" and self.backend != "batched":
            raise ConfigError(
                ("objective", "backend"), "objective 'reward' needs backend 'batched'"
            )
        if not isinstance(self.reward_terminal, bool):
            raise ConfigError(
                "reward_terminal", f"reward_terminal must be a bool, got {self.reward_terminal!r}"
            )

    @property
    def planning_horizon(self) -> int:
        """The H that goes with ``rl_term`` (``horizon`` for the 'reward' objective)."""
        quad = self.rl_term == "quad" and self.objective != "reward"
        return self.horizon_qp if quad else self.horizon

    def other_cost(self, model: Any) -> Callable[[Tensor, Tensor], Tensor] | None:
        """The domain's J_other(x, u) with this config's weights (None: no such term)."""
        return None


@dataclass(frozen=True)
class AcrobotPlannerConfig(PlannerConfig):
    """Table 5, Acrobot: target angles tracked; no J_other."""

    w_rl: float = 50.0
    """w_RL (Table 5)."""
    w_danger: float = 50.0
    """w_D (Table 5)."""


@dataclass(frozen=True)
class LunarLanderPlannerConfig(PlannerConfig):
    """Table 5, Lunar Lander: target velocities tracked; J_other is eq. (43) plus attitude.

    Units (all in gymnasium's observation units, `envs.lunar_lander_dz`): J_RL = ``|v − v*|``
    with ``v = (ẋ, ẏ)`` (0.2 and 0.133 per m/s), J_danger ∈ {0, 1}, ``y`` in half-viewport
    heights (6.67 m), ``φ`` in rad, ``φ̇`` in 0.4 rad/s, engine powers in [0, 1].

    Departures from Table 5 / eq. (43), measured with the planner alone under the scripted
    target policy (`python -m rlmpc.tools.planner_alone --env lunarlander --episodes 50 [--set
    ...]`, zones on; this preset lands 48 of 50; Table 5 and eq. 43 as written land 0):

    * ``w_act`` 20 → 0.5. In these units one step of full main engine changes ẏ by 0.047
      (0.02 net of gravity), so 20·||u||² outweighs 50·|v − v*| (≤ 50·1): the cost-optimal
      throttle from ẏ = −0.5 towards ẏ* = 0 is ~15 % and the lander cannot brake (``--set
      w_act=20``: 0 of 50 landed, all crashed within ~90 steps). 0.5 puts w_act/w_RL = 0.01
      near gymnasium's own fuel-to-speed ratio (0.3 per step of main engine against 100·|v|).
    * ``effort="power"``: the effort is charged on engine power, not on ``u``. With
      ``||u||²`` the optimum for an idle engine is ``u_main = 0``, the throttle's edge,
      where MPPI's averaged noise keeps firing it at ≥ 50 % power, so a lander standing on
      the pad does not come to rest (``--set effort=control``: 31 of 50 landed, the others
      hovered or stood until the 1000-step limit).
    * ``w_attitude`` = 50 (with ``attitude_rate`` 0.1): eq. (43) has no tilt term, and a
      planner free to fire the engines tips the lander over (``--set w_attitude=0``: 0 of
      50 landed, all crashed).
    """

    w_rl: float = 50.0
    """w_RL (Table 5)."""
    w_danger: float = 400.0
    """w_D (Table 5)."""
    w_y: float = 10.0
    """w_y, the altitude weight of eq. (43) (Table 5)."""
    w_act: float = 0.5
    """w_act, the effort weight of eq. (43) (Table 5: 20, in units where it stops braking;
    see the class docstring)."""
    effort: Literal["power", "control"] = "power"
    """eq. (43)'s effort on 'power' (squared engine powers: an idle engine costs nothing) or
    'control' (||u||², the paper's literal form)."""
    w_attitude: float = 50.0
    """weight of the attitude term φ² + attitude_rate·φ̇² (not in eq. 43; 0 leaves it out)."""
    attitude_rate: float = 0.1
    """weight of φ̇² relative to φ² in the attitude term."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.effort not in ("power", "control"):
            raise ConfigError("effort", f"effort must be 'power' or 'control', got {self.effort!r}")

    def other_cost(self, model: Any) -> Callable[[Tensor, Tensor], Tensor]:
        return partial(
            lunar_lander_other_cost, model, w_y=self.w_y, w_act=self.w_act,
            w_attitude=self.w_attitude, attitude_rate=self.attitude_rate, effort=self.effort,
        )  # fmt: skip


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
    turn. An untrained policy acting as training starts (`python -m rlmpc.tools.planner_alone
    --env racing-stadium --policy initial --episodes 50`) finished 39 of 50 laps and left the
    track in 11 with margin 0; with 0.9 m, 47 finished and 1 left the track (1.5 m: 45 and 2;
    2 m: 43 and 2). (Before the model's lateral-acceleration bound, `envs.racing.model`: 17
    and 32 with margin 0, 44 and 1 with 0.9 m.) Pure MPPI adds the terminal reward
    (``reward_terminal``), as training's ``--virtual-terminal reward``.
    """

    boundary_margin: float = 0.9
    """m: eq. (45)'s BP is taken against the half-width less this margin: 0.9, half the car's
    width, puts BP = 1 where the car's side reaches the edge (0: its centre, as eq. 45 is
    written; see the class docstring)."""
    reward_terminal: bool = True
    """objective 'reward': add the env's terminal reward on a planned transition into a
    terminal state (as training's default ``--virtual-terminal reward``); False: App. B's r̂."""


def planner_config(env: str, **overrides: Any) -> PlannerConfig:
    """The Table-5 preset of a registered env (`envs.registry.EnvSpec.planner`) with overrides;
    `ValueError` for an env that is not registered."""
    import envs  # the registry says which preset an env plans with; this package names no env

    return envs.spec(env).planner(**overrides)


def running_cost(model: Any, config: PlannerConfig) -> CompositeCost | RewardCost:
    """Eq. (38)'s summand for ``model`` with ``config``'s RL term and weights, or App. E's
    −r̂ (`planners.reward_cost.RewardCost`) for ``objective="reward"``."""
    if config.objective == "reward":
        return RewardCost(model, terminal=config.reward_terminal)
    if config.rl_term == "track":
        rl_term: CostTerm = partial(_tracking_term, model)
    else:
        rl_term = partial(quadratic_cost, model, q_state=config.q_state, r_control=config.r_control)
    return CompositeCost(model, config.w_rl, config.w_danger, rl_term, config.other_cost(model))


def build_planner(
    model: Any,
    config: PlannerConfig,
    *,
    value_fn: Callable[[Tensor], Tensor] | None = None,
    backend: str | None = None,
) -> MPPI:
    """The MPPI planner of one env: eq. (38) on ``model``, targets ``model.target(a)``.

    ``value_fn`` adds eq. (41)'s terminal cost ``−V(x_H)``; ``backend`` overrides ``config.backend``.
    """
    return make_planner(
        model.dynamics,
        running_cost(model, config),
        model.nu,
        backend=config.backend if backend is None else backend,
        terminal_cost=None if value_fn is None else ValueTerminalCost(value_fn),
        target_fn=model.target,
        num_samples=config.num_samples,
        horizon=config.planning_horizon,
        lambda_temp=config.lambda_temp,
        noise_sigma=config.noise_sigma,
        u_min=model.u_low,
        u_max=model.u_high,
    )
