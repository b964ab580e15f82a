"""PPO's loss and its hyperparameters: L_PPO per sample, eq. (10)'s mixing, Table 3.

`PPOConfig` holds Table 3 (Stable-Baselines3's PPO defaults) and this project's additions;
`ppo_loss_terms` / `ppo_objective` are L_PPO(φ; d) on a minibatch (clipped surrogate, the
ensemble's bootstrapped value loss, entropy); `weighted_loss` is eq. (10). The learner that
runs them is `learners.ppo.PPOLearner`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from common.checks import ConfigError, check_finite_fields
from learners.batches import Samples, TrainBatch
from learners.policy import GaussianPolicy, ValueEnsemble

#: the most real samples an iteration (and a minibatch) may hold: 2²² (its buffers, with the
#: M − 1 virtual paths per sample, are then several GiB)
N_STEPS_MAX = 2**22


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters (defaults: the paper's Table 3, i.e. Stable-Baselines3's)."""

    learning_rate: float = 3e-4
    """Adam step size, > 0."""
    n_steps: int = 2048
    """Real env steps per learner iteration, over all envs (read by the driver), 1..2²²."""
    batch_size: int = 64
    """Real samples per minibatch, 1..2²²."""
    n_epochs: int = 10
    """Passes over the buffers per iteration, 1..1000."""
    gamma: float = 0.99
    """Discount γ in [0, 1]."""
    gae_lambda: float = 0.95
    """GAE λ in [0, 1], for real data and for the virtual path λ-returns."""
    clip_range: float = 0.2
    """PPO ratio clip ε, > 0."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient, >= 0."""
    vf_coef: float = 0.5
    """Value loss coefficient, >= 0 (the value loss is the plain MSE, as in SB3)."""
    max_grad_norm: float = 0.5
    """Gradient-norm clip, > 0 (per network or global: see clip_grad_per_network)."""
    clip_grad_per_network: bool = True
    """Clip the policy's and the value ensemble's gradients separately, each to max_grad_norm.
    With unnormalised returns (hundreds here) the value loss's gradients dominate a joint norm
    and a joint clip (SB3's, False) shrinks the policy's step with them."""
    normalize_advantage: bool = True
    """Normalise advantages to zero mean, unit std, separately per buffer."""
    adam_eps: float = 1e-5
    """Adam's ε (SB3's PPO value), > 0."""
    mixing: Literal["loss", "sample"] = "loss"
    """'loss': (1-ρ) L_RL + ρ L_MPPI (eq. 10); 'sample': Bernoulli(ρ) per-sample mixing (eq. 8)."""
    virtual_batch_size: int | None = None
    """Virtual samples per real minibatch (loss mixing); None sweeps the virtual buffer once an epoch."""
    bootstrap_p: float = 0.5
    """Each value head weighs each sample by Bernoulli(p)/p (ensemble diversity), p in (0, 1]."""
    engine: Literal["fused", "autograd"] = "fused"
    """How the minibatch steps are computed, the same maths either way: 'fused' (the policy
    and the value heads as one batched network, gradients written out by hand; fast) or
    'autograd' (the modules with autograd and torch.optim.Adam; the reference)."""

    def __post_init__(self) -> None:
        check_finite_fields(self)
        positive = ("learning_rate", "clip_range", "max_grad_norm", "adam_eps")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(name, f"PPOConfig.{name} must be > 0, got {getattr(self, name)}")
        for name, most in (
            ("n_steps", N_STEPS_MAX),
            ("batch_size", N_STEPS_MAX),
            ("n_epochs", 1000),
        ):
            if not 1 <= getattr(self, name) <= most:
                raise ConfigError(
                    name, f"PPOConfig.{name} must be in [1, {most}], got {getattr(self, name)}"
                )
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(
                    name, f"PPOConfig.{name} must be in [0, 1], got {getattr(self, name)}"
                )
        for name in ("ent_coef", "vf_coef"):
            if not getattr(self, name) >= 0.0:
                raise ConfigError(name, f"PPOConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.mixing not in ("loss", "sample"):
            raise ConfigError(
                "mixing", f"PPOConfig.mixing must be 'loss' or 'sample', got {self.mixing!r}"
            )
        vbs = self.virtual_batch_size
        if vbs is not None and not 1 <= vbs <= N_STEPS_MAX:
            raise ConfigError(
                "virtual_batch_size",
                f"PPOConfig.virtual_batch_size must be None or in [1, {N_STEPS_MAX}], got {vbs}",
            )
        if self.engine not in ("fused", "autograd"):
            raise ConfigError(
                "engine", f"PPOConfig.engine must be 'fused' or 'autograd', got {self.engine!r}"
            )
        if not 0.0 < self.bootstrap_p <= 1.0:
            raise ConfigError(
                "bootstrap_p", f"PPOConfig.bootstrap_p must be in (0, 1], got {self.bootstrap_p}"
            )


class LossTerms(NamedTuple):
    """Per-sample PPO terms of a minibatch, each ``[N]``."""

    policy: Tensor
    """Clipped surrogate, negated: -min(r A, clip(r, 1-ε, 1+ε) A)."""
    value: Tensor
    """(1/D) Σ_d w_d (V_d(s) - R)², w the bootstrap weights."""
    entropy: Tensor
    """Entropy of π_θ(· | s)."""
    log_ratio: Tensor
    """log π_θ(a|s) - log π_old(a|s)."""


def ppo_loss_terms(
    policy: GaussianPolicy,
    values: ValueEnsemble,
    mb: TrainBatch,
    clip_range: float,
    prior: Tensor | None = None,
) -> LossTerms:
    """The per-sample terms of L_PPO(φ; d) on a minibatch (ratios of the high-level action).

    ``prior [N, D]``: the value heads' fixed prior parts on ``mb.obs`` when already known
    (`ValueEnsemble.prior_values`); computed here when None.
    """
    log_ratio = policy.log_prob(mb.obs, mb.actions) - mb.logp
    ratio = torch.exp(log_ratio)
    a = mb.advantages
    surrogate = torch.min(ratio * a, torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range) * a)
    v = values(mb.obs, prior)
    value = (mb.boot * (v - mb.returns[:, None]).square()).mean(-1)
    return LossTerms(-surrogate, value, policy.entropy(mb.obs), log_ratio)


def ppo_objective(terms: LossTerms, vf_coef: float, ent_coef: float) -> Tensor:
    """L_PPO(φ; d) per sample ``[N]``: policy + vf_coef · value - ent_coef · entropy."""
    return terms.policy + vf_coef * terms.value - ent_coef * terms.entropy


def weighted_loss(loss_rl: Tensor, loss_mppi: Tensor, rho: float) -> Tensor:
    """Eq. (10): L = (1-ρ) E_{D_RL}[L_PPO] + ρ E_{D_MPPI}[L_PPO], of the two buffers' mean losses."""
    return (1.0 - rho) * loss_rl + rho * loss_mppi


def explained_variance(pred: Tensor, target: Tensor) -> float:
    """1 - Var(target - pred) / Var(target); NaN when Var(target) = 0 (as SB3)."""
    var = float(target.var(correction=0))
    return math.nan if var == 0.0 else 1.0 - float((target - pred).var(correction=0)) / var


def virtual_diagnostics(v_bar: Tensor, ret: Tensor, path_terminated: Tensor) -> dict[str, float]:
    """What the learner logs of a virtual batch: ``explained_variance_virtual``;
    ``virtual/advantage_mean`` and ``_std``, the raw ``G − V̄(s_t)`` before normalisation (how
    much better than the real-data critic the model scores the candidates: the virtual data's
    optimism); ``virtual/terminal_fraction``, the share of planned paths the model ends."""
    adv = ret - v_bar
    return {
        "explained_variance_virtual": explained_variance(v_bar, ret),
        "virtual/advantage_mean": float(adv.mean()),
        "virtual/advantage_std": float(adv.std(correction=0)),
        "virtual/terminal_fraction": float(path_terminated.any(-1).float().mean()),
    }


def normalise(a: Tensor) -> Tensor:
    """Zero mean, unit (population) std; all zeros where the values are all equal.

    "Equal" up to float rounding: a std below 1e-5 of the mean's magnitude is the rounding
    of the mean itself (float32 sums of equal values need not divide back exactly, and how
    they round depends on the CPU's vector width), and dividing it by ``std + 1e-8`` would
    blow that noise up into advantages of order 1e-3 to 1, a gradient from nothing."""
    mean, std = a.mean(), a.std(correction=0)
    spread = (std > 1e-5 * mean.abs()).to(a.dtype)  # 1, or 0 where all are equal
    return (a - mean) / (std + 1e-8) * spread


def minibatch_loss(
    policy: GaussianPolicy, values: ValueEnsemble, mb: Samples, vmb: Samples | None, rho: float,
    cfg: PPOConfig,
) -> tuple[Tensor, LossTerms, LossTerms | None]:  # fmt: skip
    """The loss of one minibatch step and its real and virtual terms.

    With loss mixing, eq. (10) on a real and a virtual minibatch. For ρ > 0 both go through
    the networks in one forward pass; at ρ = 0 the real one goes alone, as without virtual
    data, and the virtual one without gradient (reported, and NaN-checked via 0·L_MPPI).
    """
    terms_of = lambda s: ppo_loss_terms(policy, values, s.batch, cfg.clip_range, s.prior)
    objective = lambda t: ppo_objective(t, cfg.vf_coef, cfg.ent_coef)
    if vmb is None:
        terms = terms_of(mb)
        loss = objective(terms).mean()
        return (loss if cfg.mixing == "sample" else (1.0 - rho) * loss), terms, None
    if rho == 0.0:
        terms = terms_of(mb)
        with torch.no_grad():
            vterms = terms_of(vmb)
        loss_rl, loss_mppi = objective(terms).mean(), objective(vterms).mean()
    else:
        n = mb.batch.size
        both = terms_of(mb.cat(vmb))
        terms, vterms = LossTerms(*(t[:n] for t in both)), LossTerms(*(t[n:] for t in both))
        per_sample = objective(both)
        loss_rl, loss_mppi = per_sample[:n].mean(), per_sample[n:].mean()
    return weighted_loss(loss_rl, loss_mppi, rho), terms, vterms
