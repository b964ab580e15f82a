"""The options of PO-MPC's KL prior (`learners.pompc`): ``--kl-prior`` and the rest."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from common.checks import ConfigError, check_finite_fields


@dataclass(frozen=True)
class KLPriorConfig:
    """PO-MPC's KL prior on the high-level policy (`learners.pompc`); off by default."""

    kl_prior: Literal["none", "planner", "intermediate"] = "none"
    """PO-MPC's prior π_prior the policy is regularised toward: 'none' (plain PPO-MPPI),
    'planner' (π_P: the Gaussian fitted to each step's M candidates weighted by
    exp(G/η), G their planned return), 'intermediate' (π_θp: a network fitted to π_P
    each iteration, PO-MPC's learned intermediate prior)"""
    kl_lambda: float = 1.0
    """λ >= 0, the KL term's weight in the policy loss (PO-MPC's ablations: 0.1, 1, 9);
    0 leaves PPO-MPPI unchanged"""
    kl_direction: Literal["reverse", "forward"] = "reverse"
    """'reverse': KL(π_θ ‖ π_prior) (PO-MPC's); 'forward': KL(π_prior ‖ π_θ)"""
    kl_temperature: float = 1.0
    """η > 0, the temperature of the candidates' weights exp(G/η), in the critic's units
    (the std of the real returns when --normalize-values, else raw return units)"""
    kl_epsilon: float = 0.0
    """> 0: η is chosen each iteration so that the candidates' weights are, on average over
    the iteration's states, ε away from uniform in KL (MPO's E-step bound,
    `temperature_for_kl`; scale-free, below log M); 0: η = kl_temperature"""
    kl_min_std: float = 0.05
    """floor of π_P's std per action dimension, > 0 (for candidates that coincide)"""
    kl_critic: bool = False
    """also regularise the critic's target, as PO-MPC's KL-regularised value: the real
    rewards become r_t - λ·KL(π_θ(·|s_t) ‖ π_prior(·|s_t)) in GAE"""
    kl_prior_loss: Literal["forward", "reverse"] = "forward"
    """how π_θp is fitted to π_P (PO-MPC Fig. 3): 'forward' KL(π_P ‖ π_θp), 'reverse' KL(π_θp ‖ π_P)"""
    kl_prior_lr: float = 3e-4
    """Adam step size of π_θp, > 0"""
    kl_prior_epochs: int = 10
    """passes of π_θp's fit over each iteration's real states (minibatches of --batch-size), >= 1"""

    def __post_init__(self) -> None:
        check_finite_fields(self)
        choices = {
            "kl_prior": ("none", "planner", "intermediate"),
            "kl_direction": ("reverse", "forward"),
            "kl_prior_loss": ("forward", "reverse"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    name, f"{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        if not (math.isfinite(self.kl_lambda) and self.kl_lambda >= 0.0):
            raise ConfigError(
                "kl_lambda", f"kl_lambda must be finite and >= 0, got {self.kl_lambda}"
            )
        for name in ("kl_temperature", "kl_min_std", "kl_prior_lr"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0.0):
                raise ConfigError(name, f"{name} must be finite and > 0, got {v}")
        if not (math.isfinite(self.kl_epsilon) and self.kl_epsilon >= 0.0):
            raise ConfigError(
                "kl_epsilon", f"kl_epsilon must be finite and >= 0, got {self.kl_epsilon}"
            )
        if self.kl_prior_epochs < 1:
            raise ConfigError(
                "kl_prior_epochs", f"kl_prior_epochs must be >= 1, got {self.kl_prior_epochs}"
            )

    @property
    def enabled(self) -> bool:
        """A prior is in play (the actors score their candidates, the learner builds π_prior)."""
        return self.kl_prior != "none"
