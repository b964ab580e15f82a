"""MPPI cost terms of App. C shared by every env (eqs. 38–42) and the planner preset's base.

Every term is a batched torch function of planner states ``x [..., nx]`` (and controls
``u [..., nu]``, targets ``[..., nt]``) returning ``[...]``; leading dims broadcast, so the
planner evaluates target-free terms once for all M candidates. A model is any object with
the `envs.base.PlannerModel` methods a term uses.

`build_planner(model, config)` assembles eq. (38) for one env and hands it to an MPPI
backend. Table 5's ``noise_sigma = 0.5`` is read as pytorch-mppi's ``noise_sigma`` argument,
which is the noise **covariance**: Σ = 0.5·I (a standard deviation of about 0.71 per control).
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor

from common.checks import ConfigError, check_finite_fields
from planners.mppi import MPPI, make_planner
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


#: the largest value of each integer option (memory grows with it)
_INT_MAX = {"horizon": 1000, "horizon_qp": 1000, "num_samples": 65536}
#: the float options that must be > 0 (the others: >= 0)
_POSITIVE = ("lambda_temp", "noise_sigma")


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
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value, hint = getattr(self, f.name), hints[f.name]
            if typing.get_origin(hint) is Literal:
                allowed = typing.get_args(hint)
                if value not in allowed:
                    choices = " or ".join(repr(a) for a in allowed)
                    raise ConfigError(f.name, f"{f.name} must be {choices}, got {value!r}")
            elif hint is bool:
                if not isinstance(value, bool):
                    raise ConfigError(f.name, f"{f.name} must be a bool, got {value!r}")
            elif hint is int:
                most = _INT_MAX.get(f.name)
                if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (
                    most is not None and value > most
                ):
                    allowed = f"in [1, {most}]" if most is not None else ">= 1"
                    raise ConfigError(f.name, f"{f.name} must be an integer {allowed}, got {value!r}")
            elif hint is float:
                positive = f.name in _POSITIVE
                ok = not isinstance(value, bool) and isinstance(value, (int, float))
                if not ok or not (value > 0 if positive else value >= 0):
                    allowed = "> 0" if positive else ">= 0"
                    raise ConfigError(f.name, f"{f.name} must be a finite number {allowed}, got {value!r}")
        if self.objective == "reward" and self.backend != "batched":
            raise ConfigError(("objective", "backend"), "objective 'reward' needs backend 'batched'")

    @property
    def planning_horizon(self) -> int:
        """The H that goes with ``rl_term`` (``horizon`` for the 'reward' objective)."""
        quad = self.rl_term == "quad" and self.objective != "reward"
        return self.horizon_qp if quad else self.horizon

    def other_cost(self, model: Any) -> Callable[[Tensor, Tensor], Tensor] | None:
        """The domain's J_other(x, u) with this config's weights (None: no such term)."""
        return None


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
