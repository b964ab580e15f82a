"""Batched MPPI conditioned on M high-level actions (paper §3 eqs. 2–3, §4.1).

One `MPPI.plan` call plans for B states at once. Per state it draws **one** set of K noise
sequences, rolls the model out once under the perturbed warm start (``[B, K, H+1, nx]``
states: the rollouts do not depend on the candidate), then evaluates the cost of eq. (2)
under each of the M candidates' targets and makes M updates of eq. (3).

The arithmetic is pytorch-mppi's (``pytorch_mppi.MPPI.command``), which the paper used:

* ``ε ~ N(0, Σ)``; ``v = clamp(U + ε, u_min, u_max)``; ``ε ← v − U`` (noise recomputed after
  bounding);
* the sample cost is ``S_k = Σ_{t=0}^{H-1} c(x_{t+1}, v_t; x*) + φ(x_H; x*)`` with
  ``x_{t+1} = P̂(x_t, v_t)``, i.e. the running cost is evaluated on the state *reached* by
  each control, as pytorch-mppi does, plus the action cost ``λ Σ_t U_tᵀ Σ⁻¹ ε_t``;
* ``w_k = exp(−(J_k − min_j J_j)/λ) / Σ_j exp(−(J_j − min_j J_j)/λ)`` and
  ``U ← U + Σ_k w_k ε_k``.

For speed, the K sample rollouts are stored component-major (`sample_rollout`), so the
cost terms read each state component as one contiguous block; `plan_controls` skips the
candidates' rollouts for callers that roll them out later (`MPPI.paths`). Masks are floats
and non-finite costs go through ``nan_to_num``: bool masks, ``torch.where`` and ``masked_fill``
cost 10-40x a float comparison per element on CPU (docs/architecture.md, the hot path's rules).

Differences, all on purpose: the warm start ``U`` goes in and the plans come out (no hidden
state, no internal shift; `shift_warm_start` is the shift); samples whose cost or rollout is
non-finite get zero weight (pytorch-mppi would return NaN), and a call where every sample of
some (state, candidate) is non-finite raises.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from planners.checks import check_plan_inputs, check_planner_options, control_bound, covariance

Dynamics = Callable[[Tensor, Tensor], Tensor]
"""``P̂(x [..., nx], u [..., nu]) -> x' [..., nx]``, batched over any leading dims."""


class RunningCost(Protocol):
    def __call__(self, x: Tensor, u: Tensor, target: Tensor) -> Tensor:
        """Per-step cost ``[...]`` of ``x [..., nx]``, ``u [..., nu]``, ``target [..., nt]``.

        The leading dims broadcast: the planner passes states ``[B, 1, K, H, nx]`` and targets
        ``[B, M, 1, 1, nt]``, so terms that do not depend on the target are computed once.
        A running cost may also have a method ``horizon_sum(x, u, target)`` giving the sum of
        its values over the H axis (``x [..., H, nx]``, ``u [..., H, nu]``, ``target
        [..., 1, nt]`` -> ``[...]``) more cheaply; `path_cost` then uses it. A cost of whole
        paths has ``path_sum(states [..., H+1, nx], u [..., H, nu], target [..., 1, nt])``
        instead, which `path_cost` prefers (App. E's −r̂, `planners.reward_cost`).
        """
        ...


class TerminalCost(Protocol):
    def __call__(self, x: Tensor, target: Tensor) -> Tensor:
        """φ: cost ``[...]`` of final states ``x [..., nx]`` under ``target [..., nt]`` (broadcast)."""
        ...


class PlanResult(NamedTuple):
    """What one `MPPI.plan` call returns (B states, M candidates, H steps, K samples)."""

    first: Tensor
    """``[B, M, nu]`` the first control of each candidate's plan (what an env would execute)."""
    controls: Tensor
    """``[B, M, H, nu]`` each candidate's updated control sequence (eq. 3), inside the bounds."""
    paths: Tensor
    """``[B, M, H+1, nx]`` the model rolled out from ``x`` under ``controls`` (``paths[:, :, 0] = x``)."""
    costs: Tensor
    """``[B, M]`` the candidate's own cost of its planned path: ``Σ_t c(paths_{t+1}, controls_t;
    x*_m) + φ(paths_H; x*_m)``, the eq. (2) cost without the noise (action-cost) term."""
    weights: Tensor
    """``[B, M, K]`` the normalised sample weights w̃ of eq. (3); each row sums to 1."""


class PlannedControls(NamedTuple):
    """What `MPPI.plan_controls` returns: `PlanResult` without ``paths`` and ``costs``."""

    first: Tensor
    """``[B, M, nu]`` as `PlanResult.first`."""
    controls: Tensor
    """``[B, M, H, nu]`` as `PlanResult.controls`; `MPPI.paths` rolls them out."""
    weights: Tensor
    """``[B, M, K]`` as `PlanResult.weights`."""


def shift_warm_start(controls: Tensor, u_init: float | Tensor = 0.0) -> Tensor:
    """The next step's warm start ``[..., H, nu]``: drop the first control, append ``u_init``.

    The same shift as pytorch-mppi's ``shift_nominal_trajectory``; returns a new tensor.
    """
    shifted = torch.roll(controls, -1, dims=-2)
    shifted[..., -1, :] = u_init
    return shifted


def rollout(dynamics: Dynamics, x: Tensor, u: Tensor) -> Tensor:
    """States ``[..., H+1, nx]`` from ``x [..., nx]`` under controls ``u [..., H, nu]``."""
    horizon = u.shape[-2]
    states = x.new_empty(*u.shape[:-2], horizon + 1, x.shape[-1])
    states[..., 0, :] = x
    for t in range(horizon):
        states[..., t + 1, :] = dynamics(states[..., t, :], u[..., t, :])
    return states


def sample_rollout(dynamics: Dynamics, x: Tensor, u: Tensor) -> Tensor:
    """`rollout` of ``x [..., nx]`` under ``u [..., H, nu]``: the same states ``[..., H+1, nx]``,
    stored component-major (memory ``[nx, H+1, ...]``).

    Cost terms then read each state component at each step as one contiguous block, and
    broadcasting it against targets ``[B, M, 1, 1, nt]`` runs over whole blocks instead of
    ``nt``-element rows; the values are `rollout`'s. A model's bound ``dynamics`` whose model
    has ``rollout_component_major(x, u)`` (this contract) is rolled out by that (Lunar Lander).
    """
    own = getattr(getattr(dynamics, "__self__", None), "rollout_component_major", None)
    if own is not None and getattr(dynamics, "__name__", None) == "dynamics":
        return own(x, u)  # the model's `dynamics`, rolled out on its rows (same values)
    lead, horizon, nx = u.shape[:-2], u.shape[-2], x.shape[-1]
    store = x.new_empty(nx, horizon + 1, *lead)
    states = store.permute(*range(2, 2 + len(lead)), 1, 0)
    states[..., 0, :] = x
    for t in range(horizon):
        states[..., t + 1, :] = dynamics(states[..., t, :], u[..., t, :])
    return states


def perturb(
    warm: Tensor, noise: Tensor, u_min: float | Tensor, u_max: float | Tensor
) -> tuple[Tensor, Tensor]:
    """Bounded samples ``v = clamp(U + ε)`` and the noise actually applied ``ε = v − U``.

    ``warm [B, H, nu]``, ``noise [B, K, H, nu]`` -> ``(v, ε)``, both ``[B, K, H, nu]``; the
    bounds are ``[nu]`` tensors or numbers (the same for every control: a faster clamp).
    """
    warm = warm.unsqueeze(1)
    perturbed = torch.clamp(warm + noise, u_min, u_max)
    return perturbed, perturbed - warm


def action_cost(warm: Tensor, eps: Tensor, sigma_inv: Tensor, lambda_temp: float) -> Tensor:
    """The control-cost term of the sample cost: ``λ Σ_t U_tᵀ Σ⁻¹ ε_t`` ``[B, K]``.

    ``warm [B, H, nu]``, ``eps [B, K, H, nu]``; pytorch-mppi's ``perturbation_cost``.
    """
    return lambda_temp * torch.einsum("bhi,ij,bkhj->bk", warm, sigma_inv, eps)


def path_cost(
    running_cost: RunningCost,
    terminal_cost: TerminalCost | None,
    states: Tensor,
    controls: Tensor,
    target: Tensor,
) -> Tensor:
    """Eq. (2) without its noise term: ``Σ_{t<H} c(x_{t+1}, u_t; x*) + φ(x_H; x*)`` ``[...]``.

    ``states [..., H+1, nx]``, ``controls [..., H, nu]``, ``target [..., nt]``; leading dims
    broadcast (the result has their broadcast shape).
    """
    whole = getattr(running_cost, "path_sum", None)
    summed = getattr(running_cost, "horizon_sum", None)
    if whole is not None:
        cost = whole(states, controls, target.unsqueeze(-2))
    elif summed is not None:
        cost = summed(states[..., 1:, :], controls, target.unsqueeze(-2))
    else:
        cost = running_cost(states[..., 1:, :], controls, target.unsqueeze(-2)).sum(-1)
    if terminal_cost is not None:
        cost = cost + terminal_cost(states[..., -1, :], target)
    return cost.expand(torch.broadcast_tensors(states[..., 0, 0], target[..., 0])[0].shape)


def mppi_weights(costs: Tensor, lambda_temp: float) -> Tensor:
    """Eq. (3) weights ``w̃ [..., K]`` from sample costs ``J [..., K]``, numerically stable.

    ``w̃_k = exp(−(J_k − min J)/λ) / Σ_j exp(−(J_j − min J)/λ)``; non-finite costs get zero
    weight. Raises `ValueError` where every cost of a row is non-finite.

    A weight below e times the dtype's smallest normal number (before normalising: the best
    sample's is 1) is set to 0 rather than computed: on CPU, ``exp`` of an argument whose
    result underflows runs ~10x slower, and with Table 5's weights many samples' costs lie
    that far above the best one (about half of them on Lunar Lander, a fifth on Acrobot).
    """
    costs = torch.nan_to_num(costs, nan=math.inf, neginf=math.inf)  # non-finite: +inf
    beta = costs.amin(-1, keepdim=True)
    if bool(torch.isinf(beta).any()):
        rows = torch.isinf(beta[..., 0]).nonzero().tolist()
        raise ValueError(f"all K sample costs are non-finite for (state, candidate) rows {rows}")
    arg = (beta - costs) / lambda_temp  # <= 0; -inf for the non-finite costs
    floor = math.log(torch.finfo(arg.dtype).tiny) + 1.0  # + 1: clear of rounding in the dtype
    kept = torch.ge(arg, floor, out=torch.empty_like(arg))  # 1.0, or 0.0 below the floor
    w = arg.clamp_(min=floor).exp_().mul_(kept)
    return w / w.sum(-1, keepdim=True)


def mppi_update(warm: Tensor, eps: Tensor, weights: Tensor) -> Tensor:
    """Eq. (3): ``U^(m) = U + Σ_k w̃_k^(m) ε_k`` ``[B, M, H, nu]``.

    ``warm [B, H, nu]`` (shared), ``eps [B, K, H, nu]`` (shared), ``weights [B, M, K]``.
    """
    return warm.unsqueeze(1) + torch.einsum("bmk,bkhu->bmhu", weights, eps)


class MPPI:
    """Batched MPPI over B states × M candidate targets × K shared samples × H steps.

    Options are settled here; `plan` is pure (the warm start goes in, the plans come out).
    Dtype and device follow ``x`` in `plan`.

    Args:
        dynamics: P̂, batched over leading dims (e.g. ``model.dynamics``).
        running_cost: ``c(x, u, target) -> [...]`` (see `RunningCost`), summed over H.
        nu: control size.
        terminal_cost: optional φ(x_H, target) (e.g. eq. 41's ``−V(x_H)``).
        target_fn: maps the high-level actions ``a [B, M, na]`` given to `plan` to the cost's
            targets ``[B, M, nt]`` (e.g. ``model.target``); identity when None.
        num_samples: K.
        horizon: H.
        lambda_temp: the temperature λ of eq. (3) (also scales the action cost).
        noise_sigma: the noise **covariance** Σ: a scalar ``s`` means ``s·I`` (pytorch-mppi's
            ``noise_sigma`` argument), or a diagonal ``[nu]``, or ``[nu, nu]``.
        u_min, u_max: control bounds (scalars or ``[nu]``); unbounded when None.
    """

    def __init__(
        self,
        dynamics: Dynamics,
        running_cost: RunningCost,
        nu: int,
        *,
        terminal_cost: TerminalCost | None = None,
        target_fn: Callable[[Tensor], Tensor] | None = None,
        num_samples: int = 100,
        horizon: int = 10,
        lambda_temp: float = 1.0,
        noise_sigma: float | Sequence[float] | Tensor = 0.5,
        u_min: float | Sequence[float] | Tensor | None = None,
        u_max: float | Sequence[float] | Tensor | None = None,
    ) -> None:
        check_planner_options(num_samples, horizon, lambda_temp, nu)
        self.dynamics = dynamics
        self.running_cost = running_cost
        self.terminal_cost = terminal_cost
        self.target_fn = target_fn if target_fn is not None else _identity
        self.nu, self.num_samples, self.horizon = nu, num_samples, horizon
        self.lambda_temp = float(lambda_temp)
        self.sigma = covariance(noise_sigma, nu)
        self.u_min = control_bound(u_min, nu, -torch.inf, "u_min")
        self.u_max = control_bound(u_max, nu, torch.inf, "u_max")
        if (self.u_min > self.u_max).any():
            raise ValueError(f"u_min must be <= u_max, got {self.u_min} and {self.u_max}")
        lo, hi = self.u_min, self.u_max
        uniform = bool((lo == lo[0]).all() and (hi == hi[0]).all())
        #: ``(u_min, u_max)`` as numbers where each bound is the same for every control
        self.scalar_bounds = (float(lo[0]), float(hi[0])) if uniform else None
        self.diagonal_sigma = bool((self.sigma == torch.diag(self.sigma.diagonal())).all())
        d = torch.linalg.cholesky(self.sigma).diagonal()  #: √s where Σ = s·I, else None
        self.isotropic_scale = float(d[0]) if self.diagonal_sigma and (d == d[0]).all() else None
        self._constants: dict[tuple[torch.dtype, torch.device], tuple[Tensor, ...]] = {}

    def constants(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(chol Σ, Σ⁻¹, u_min, u_max)`` on ``like``'s dtype and device, computed once each."""
        key = (like.dtype, like.device)
        if key not in self._constants:
            chol = torch.linalg.cholesky(self.sigma)
            inv = torch.linalg.inv(self.sigma)
            self._constants[key] = tuple(
                t.to(dtype=like.dtype, device=like.device)
                for t in (chol, inv, self.u_min, self.u_max)
            )
        return self._constants[key]  # type: ignore[return-value]

    def sample_noise(
        self, batch: int, like: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """ε ~ N(0, Σ) ``[B, K, H, nu]`` on ``like``'s dtype and device."""
        chol = self.constants(like)[0]
        z = torch.randn(
            batch, self.num_samples, self.horizon, self.nu,
            generator=generator, dtype=like.dtype, device=like.device,
        )  # fmt: skip
        if self.isotropic_scale is not None:  # Σ = s·I: one number (a [nu] factor is ~8x slower)
            return z.mul_(self.isotropic_scale)
        if self.diagonal_sigma:  # z @ chol.T, product for product (the zeros add nothing)
            return z.mul_(chol.diagonal())
        return z @ chol.T

    def plan(
        self,
        x: Tensor,
        a: Tensor,
        warm: Tensor,
        *,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> PlanResult:
        """Plan for states ``x [B, nx]``, high-level actions ``a [B, M, na]``, warm start ``[B, H, nu]``.

        ``noise [B, K, H, nu]`` (samples of N(0, Σ), before bounding) fixes the samples;
        otherwise they are drawn with ``generator``. ``a`` and ``warm`` are cast to ``x``'s dtype.
        """
        x, a, warm, noise = check_plan_inputs(self, x, a, warm, noise)
        with torch.no_grad():
            target, controls, weights = self._update(x, a, warm, generator, noise)
            return finish_plan(self, x, target, controls, weights)

    def plan_controls(
        self,
        x: Tensor,
        a: Tensor,
        warm: Tensor,
        *,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> PlannedControls:
        """`plan` without rolling out and scoring the M plans: the same controls and weights.

        For callers that act on the first controls now and need the planned paths later, if
        at all: `paths` rolls out many steps' plans in one batched call.
        """
        x, a, warm, noise = check_plan_inputs(self, x, a, warm, noise)
        with torch.no_grad():
            _, controls, weights = self._update(x, a, warm, generator, noise)
        return PlannedControls(controls[:, :, 0], controls, weights)

    def paths(self, x: Tensor, controls: Tensor) -> Tensor:
        """P̂ from ``x [..., nx]`` under ``controls [..., H, nu]``: states ``[..., H+1, nx]``.

        `PlanResult.paths` of plans from `plan_controls` (``x`` expanded over the candidates);
        `rollout`'s values, rolled out as `sample_rollout` does, then made contiguous.
        """
        with torch.no_grad():
            return sample_rollout(self.dynamics, x, controls).contiguous()

    def _update(
        self,
        x: Tensor,
        a: Tensor,
        warm: Tensor,
        generator: torch.Generator | None,
        noise: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Eqs. (2)–(3) for checked inputs: targets ``[B, M, nt]``, controls ``[B, M, H, nu]``
        (bounded) and weights ``[B, M, K]``."""
        B = x.shape[0]
        _, sigma_inv, u_min, u_max = self.constants(x)
        target = self.target_fn(a)  # [B, M, nt]
        if target.ndim != 3 or target.shape[:2] != a.shape[:2]:
            raise ValueError(f"target_fn(a) must be [B, M, nt], got {tuple(target.shape)}")
        if noise is None:
            noise = self.sample_noise(B, x, generator)
        perturbed, eps = perturb(warm, noise, *(self.scalar_bounds or (u_min, u_max)))
        states = sample_rollout(self.dynamics, x.unsqueeze(1), perturbed)  # [B, K, H+1, nx]
        # eq. (2) for every candidate: states shared, targets differ -> [B, M, K]
        sample_cost = path_cost(
            self.running_cost, self.terminal_cost,
            states.unsqueeze(1), perturbed.unsqueeze(1), target.unsqueeze(2),
        )  # fmt: skip
        sample_cost = sample_cost + action_cost(warm, eps, sigma_inv, self.lambda_temp).unsqueeze(1)
        # times 0, the states' sum is 0, or NaN for a non-finite rollout (zero weight)
        sample_cost = sample_cost + states.sum((-2, -1)).mul_(0.0).unsqueeze(1)
        weights = mppi_weights(sample_cost, self.lambda_temp)
        controls = torch.clamp(mppi_update(warm, eps, weights), u_min, u_max)
        return target, controls, weights


def finish_plan(
    planner: MPPI, x: Tensor, target: Tensor, controls: Tensor, weights: Tensor
) -> PlanResult:
    """Roll out each candidate's controls ``[B, M, H, nu]`` and score the paths (`PlanResult`)."""
    B, M = controls.shape[:2]
    paths = rollout(planner.dynamics, x.unsqueeze(1).expand(B, M, x.shape[1]), controls)
    costs = path_cost(planner.running_cost, planner.terminal_cost, paths, controls, target)
    return PlanResult(controls[:, :, 0], controls, paths, costs, weights)


def _identity(a: Tensor) -> Tensor:
    return a


BACKENDS = ("batched", "pytorch_mppi")


def make_planner(
    dynamics: Dynamics, running_cost: RunningCost, nu: int, *, backend: str = "batched", **options
) -> MPPI:
    """An `MPPI` (``backend="batched"``) or its pytorch-mppi twin (``"pytorch_mppi"``).

    ``options`` are `MPPI`'s keyword arguments; both backends share the `plan` signature.
    """
    if backend == "batched":
        return MPPI(dynamics, running_cost, nu, **options)
    if backend == "pytorch_mppi":
        from planners.pytorch_mppi_backend import PytorchMPPIPlanner

        return PytorchMPPIPlanner(dynamics, running_cost, nu, **options)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
