"""The influence ratio ρ between real and virtual data (paper §4.2, §4.4, Alg. 2).

Two schedules with one interface: ``update(values [B, D]) -> ρ`` (the new ρ, a float),
``rho`` (the current one), ``state_dict()`` / ``load_state_dict()`` for checkpoints.

* `FixedRho` — ρ constant (Tables 1–2's "ρ = 0.3/0.5/0.8"; ρ = 0 is PPO-MPPI without
  virtual data).
* `AdaptiveRho` — Alg. 2: ρ shrinks by a factor ``1 - (1-λ) Ω`` per update, where Ω is an
  EMA of the critic ensemble's confidence ``ω = 1 / (1 + σ̄²)``. ρ never grows.

**How often to update.** The learner calls ``update`` once per learner iteration by default
(``update_every="iteration"``), on the ensemble's values at the iteration's fresh real
observations. With ω ≈ 1 (a confident critic) and Ω0 = 0, ρ/ρ0 falls to 0.10 (λ = 0.99) or
0.004 (λ = 0.98) after 320 updates. Table 3's 10 epochs × 32 minibatches are 320 updates *per
iteration*, so ``update_every="minibatch"`` anneals ρ to ~0 within one or two iterations,
whereas per-iteration updates take the 488 iterations of a 1M-step run to reach 0.02
(λ = 0.99). Per-minibatch updates are selectable for experiments, not the default.

**In which units V is read.** ω = 1 / (1 + σ̄²) is not scale-free: the paper leaves V's
scale open, and σ̄² in raw return units means different things on different envs. The learner
hands Alg. 2 the value heads' outputs in the critic's own units (`learners.normalize.
ValueScale`, on by default: the heads fit returns standardised by the running mean and std
of the real value targets), so σ̄² is the heads' disagreement as a share of the returns'
spread on every env. With raw returns, Racing's heads (returns in the thousands) disagreed
by σ̄² ≈ 1,000-2,500, ω ≈ 0.001, and ρ went from 0.30 to 0.254 in 1M steps and stalled; Acrobot's
(σ̄² ≈ 2-3) annealed. With normalised heads σ̄² is ~0.003-0.03 on all three envs.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor

from common.checks import ConfigError, check_finite_fields

#: the schedules: ρ held, or annealed by Alg. 2 on one of three confidences
MODES = ("fixed", "adaptive", "relative", "decay")


@dataclass(frozen=True)
class InfluenceRatioConfig:
    """The influence ratio ρ between real and virtual data (§4.2, §4.4)."""

    mode: Literal["fixed", "adaptive", "relative", "decay"] = "fixed"
    """'fixed': ρ = rho0 throughout; 'adaptive': ρ annealed from rho0 by Alg. 2 on σ̄² in
    the critic's units (the paper's reading); 'relative': Alg. 2 on σ̄² relative to its own
    level over the first reference_updates updates (docs/rho.md); 'decay': Alg. 2 with
    ω ≡ 1, the data-independent twin of the adaptive modes"""
    rho0: float = 0.3
    """ρ (fixed) or ρ0 (adaptive), in [0, 1]; the paper's main results use 0.3."""
    lam: float = 0.99
    """Alg. 2's EMA smoothing factor λ in [0, 1); closer to 1 anneals more slowly."""
    omega0: float = 0.0
    """Alg. 2's initial confidence EMA Ω0, in [0, 1]."""
    update_every: Literal["iteration", "minibatch"] = "iteration"
    """When ρ is updated: once per learner iteration, or before every minibatch step."""
    reference_updates: int = 5
    """'relative': σ̄²'s reference is its median over the first this many updates, 1..1000"""
    rho0_rule: Literal["off", "bound"] = "off"
    """'bound': ρ0 set from the bound's estimates after rho0_rule_iterations iterations, at
    most rho0 (docs/rho.md; needs the run's diagnostics); 'off': ρ0 = rho0"""
    rho0_rule_iterations: int = 5
    """iterations whose estimates the ρ0 rule averages (ρ stays at rho0 over them), 1..1000"""

    def __post_init__(self) -> None:
        check_finite_fields(self)
        if self.mode not in MODES:
            raise ConfigError(
                "mode", f"InfluenceRatioConfig.mode must be one of {MODES}, got {self.mode!r}"
            )
        if not 1 <= self.rho0_rule_iterations <= 1000:
            raise ConfigError(
                "rho0_rule_iterations",
                "InfluenceRatioConfig.rho0_rule_iterations must be in [1, 1000], got "
                f"{self.rho0_rule_iterations}",
            )
        if self.rho0_rule not in ("off", "bound"):
            raise ConfigError(
                "rho0_rule",
                f"InfluenceRatioConfig.rho0_rule must be 'off' or 'bound', got {self.rho0_rule!r}",
            )
        if not 1 <= self.reference_updates <= 1000:
            raise ConfigError(
                "reference_updates",
                "InfluenceRatioConfig.reference_updates must be in [1, 1000], got "
                f"{self.reference_updates}",
            )
        _check_rho("InfluenceRatioConfig.rho0", self.rho0)
        _check_lam("InfluenceRatioConfig.lam", self.lam)
        _check_omega("InfluenceRatioConfig.omega0", self.omega0)
        if self.update_every not in ("iteration", "minibatch"):
            raise ConfigError(
                "update_every",
                "InfluenceRatioConfig.update_every must be 'iteration' or 'minibatch', "
                f"got {self.update_every!r}",
            )


def _check_rho(name: str, rho: float) -> None:
    if not 0.0 <= rho <= 1.0:
        raise ConfigError(name.split(".")[-1], f"{name} must be in [0, 1], got {rho}")


def _check_lam(name: str, lam: float) -> None:
    if not 0.0 <= lam < 1.0:
        raise ConfigError(name.split(".")[-1], f"{name} must be in [0, 1), got {lam}")


def _check_omega(name: str, omega: float) -> None:
    if not 0.0 <= omega <= 1.0:
        raise ConfigError(name.split(".")[-1], f"{name} must be in [0, 1], got {omega}")


def _check_values(values: Tensor, min_heads: int) -> None:
    if values.ndim != 2 or values.shape[0] < 1:
        raise ValueError(f"values must be [B, D] with B >= 1, got {list(values.shape)}")
    if values.shape[1] < min_heads:
        raise ValueError(
            f"values must have D >= {min_heads} ensemble heads for the adaptive influence "
            f"ratio (a single head has no variance), got D={values.shape[1]}"
        )
    if not bool(values.isfinite().all()):
        raise ValueError("values must be finite to update the influence ratio")


def ensemble_variance(values: Tensor) -> float:
    """Alg. 2, lines 1–3: σ̄² = mean_b (1/D) Σ_d (V_{b,d} - μ_b)², of values ``[B, D]``."""
    v = values.detach().double()
    mu = v.mean(dim=1, keepdim=True)
    sigma2_b = ((v - mu) ** 2).mean(dim=1)
    return float(sigma2_b.mean())


def alg2_step(w: float, rho: float, omega: float, lam: float) -> tuple[float, float]:
    """Alg. 2's update from a confidence ``w`` = ω: ``(ρ_{t+1}, Ω_{t+1})``::

    Ω_{t+1} = λ Ω_t + (1 - λ) ω
    η = (1 - λ) Ω_{t+1}
    ρ_{t+1} = max(0, ρ_t (1 - η))
    """
    omega_next = lam * omega + (1.0 - lam) * w
    eta = (1.0 - lam) * omega_next
    return max(0.0, rho * (1.0 - eta)), omega_next


def adaptive_rho_step(values: Tensor, rho: float, omega: float, lam: float) -> tuple[float, float]:
    """Alg. 2 (online weight update from ensemble uncertainty): ``(ρ_{t+1}, Ω_{t+1})``.

    ``values [B, D]`` are the D heads' values on a batch of B states; ``rho`` = ρ_t,
    ``omega`` = Ω_t, ``lam`` = λ::

        σ̄² = mean_b (1/D) Σ_d (V_{b,d} - μ_b)²
        ω = 1 / (1 + σ̄²)
        Ω_{t+1} = λ Ω_t + (1 - λ) ω
        η = (1 - λ) Ω_{t+1}
        ρ_{t+1} = max(0, ρ_t (1 - η))
    """
    return alg2_step(1.0 / (1.0 + ensemble_variance(values)), rho, omega, lam)


class FixedRho:
    """ρ held constant; ``update`` only checks its input and returns ρ."""

    kind = "fixed"

    def __init__(self, rho: float) -> None:
        _check_rho("rho", rho)
        self.rho = float(rho)
        self.num_updates = 0

    def update(self, values: Tensor) -> float:
        """Return ρ (unchanged); ``values [B, D]`` any D >= 1."""
        _check_values(values, min_heads=1)
        self.num_updates += 1
        return self.rho

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "rho": self.rho, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_kind(state, self.kind)
        _check_rho("rho", state["rho"])
        self.rho = float(state["rho"])
        self.num_updates = int(state["num_updates"])


class AdaptiveRho:
    """ρ annealed by Alg. 2 from ρ0 with EMA factor λ and initial confidence Ω0.

    The confidence ω each update feeds to Alg. 2's (unchanged) EMA and decay, by ``mode``:

    * ``"adaptive"``: ω = 1 / (1 + σ̄²), σ̄² the heads' disagreement as they give it (the
      critic's units): Alg. 2 as written;
    * ``"relative"``: ω = 1 / (1 + σ̄² / σ̄²_ref), σ̄²_ref the median σ̄² of the first
      ``reference_updates`` updates (of those so far, until there are that many): ω is 1/2 at
      the run's early disagreement and rises towards 1 as the heads come to agree more than
      they did early, whatever the critic's units (docs/rho.md gives the measurements);
    * ``"decay"``: ω ≡ 1, the data-independent twin (the same ρ0, λ, Ω0).

    ``update(values [B, D])`` needs D >= 2 heads and finite values (else `ValueError`, and
    the state is left as it was). ``confidence`` is the last ω, ``sigma2`` the last σ̄².
    """

    kind = "adaptive"

    def __init__(self, rho0: float, lam: float, omega0: float = 0.0, mode: str = "adaptive",
                 reference_updates: int = 5) -> None:  # fmt: skip
        _check_rho("rho0", rho0)
        _check_lam("lam", lam)
        _check_omega("omega0", omega0)
        if mode not in MODES[1:]:
            raise ValueError(f"mode must be one of {MODES[1:]}, got {mode!r}")
        self.lam, self.mode, self.reference_updates = float(lam), mode, int(reference_updates)
        self.rho = float(rho0)
        self.omega = float(omega0)
        self.num_updates = 0
        self.confidence = float("nan")
        self.sigma2 = float("nan")
        self.reference: list[float] = []  # 'relative': σ̄² of the first updates

    def confidence_of(self, sigma2: float) -> float:
        """ω for a disagreement σ̄² (by ``mode``; 'relative' takes the reference as it stands,
        after ``sigma2`` joined it while the reference window is open)."""
        if self.mode == "decay":
            return 1.0
        if self.mode == "adaptive":
            return 1.0 / (1.0 + sigma2)
        ref = float(statistics.median(self.reference)) if self.reference else sigma2
        return 1.0 / (1.0 + sigma2 / ref) if ref > 0 else 1.0

    def update(self, values: Tensor) -> float:
        """One step of Alg. 2; returns the new ρ."""
        _check_values(values, min_heads=2)
        self.sigma2 = ensemble_variance(values)
        if self.mode == "relative" and len(self.reference) < self.reference_updates:
            self.reference.append(self.sigma2)
        self.confidence = self.confidence_of(self.sigma2)
        self.rho, self.omega = alg2_step(self.confidence, self.rho, self.omega, self.lam)
        self.num_updates += 1
        return self.rho

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "mode": self.mode,
            "rho": self.rho,
            "omega": self.omega,
            "lam": self.lam,
            "num_updates": self.num_updates,
            "reference": list(self.reference),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ρ_t, Ω_t, the update count and the reference (λ and the mode stay the ones
        this object was built with; a state of another mode is refused)."""
        _check_kind(state, self.kind)
        if state.get("mode", "adaptive") != self.mode:
            raise ValueError(
                f"cannot load a {state.get('mode', 'adaptive')!r} ρ state into a {self.mode!r} one"
            )
        _check_rho("rho", state["rho"])
        _check_omega("omega", state["omega"])
        self.rho = float(state["rho"])
        self.omega = float(state["omega"])
        self.num_updates = int(state["num_updates"])
        self.reference = [float(v) for v in state.get("reference", [])]


def _check_kind(state: dict[str, Any], kind: str) -> None:
    if state.get("kind") != kind:
        raise ValueError(f"cannot load a {state.get('kind')!r} ρ state into a {kind!r} schedule")


def make_influence_ratio(config: InfluenceRatioConfig) -> FixedRho | AdaptiveRho:
    """The schedule a config asks for."""
    if config.mode == "fixed":
        return FixedRho(config.rho0)
    return AdaptiveRho(config.rho0, config.lam, config.omega0, config.mode,
                       config.reference_updates)  # fmt: skip
