"""The terms of the paper's bound, estimated from a run's own data (Lemma 2, Theorem 1, Cor. 3).

Theorem 1 (eq. 11) bounds the value error of the hierarchy trained on ``(1-ρ) D_RL + ρ D_MPPI``:

    ρ α_P H γ (1-γ^{H-1})/(1-γ) span(r)/2 + ρ α_r (1-γ^H)/(1-γ)        (eq. 12: the model terms)
    + γ^H ε_V                                                          (the value term)
    + 4 R_max (1-γ^H)/(1-γ)² max_s D_TV(π* ‖ π)                        (the policy gap)

and Corollary 3 (eqs. 31, 35) adds the finite-sample MPPI term span(g) sqrt(½ Σ Δuᵀ Σ⁻¹ Δu).
None of these is known during training; each is estimated here, every iteration, from what
the run sees (`BoundEstimates`, logged as ``bound/*``):

| key | estimate | of |
|---|---|---|
| ``bound/alpha_r`` | mean \\|r - r̂\\| at the executed controls (``alpha_r_max``: the largest) | α_r = sup \\|r - r_ρ\\|/ρ |
| ``bound/alpha_P`` | mean one-step error \\|ψ(P̂(x, u)) - s'\\|, RMS over the observation in the learner's normalised units | α_P (a proxy: see below) |
| ``bound/span_r``, ``bound/R_max`` | running max - min and max \\|r\\| of the real rewards | span(r), R_max |
| ``bound/eps_V`` | mean \\|V̄(s_t) - G_t\\| in raw units, G_t the Monte-Carlo return of an episode that terminates inside the fragment | ε_V |
| ``bound/policy_kl`` | mean KL(π_old ‖ π_new) on the iteration's real states | the policy's movement, not its distance to π* |
| ``bound/plan_kl`` | mean ½ Σ_τ Δu_τᵀ Σ⁻¹ Δu_τ of the executed plans | eq. (35)'s KL |
| ``bound/model_per_rho`` | eq. (12)'s coefficients × α̂_P, α̂_r, span(r) | the model terms at ρ = 1 |
| ``bound/model`` | ρ × ``model_per_rho`` | eq. (12) |
| ``bound/value`` | γ^H ε̂_V | |
| ``bound/policy`` | 4 R_max (1-γ^H)/(1-γ)² sqrt(KL/2) (Pinsker) | with the policy's own movement for the gap |
| ``bound/planner`` | span(ĝ) sqrt(plan_kl), span(ĝ) = (1-γ^H)/(1-γ) span(r) + γ^H span(V̄) | eq. (35) |
| ``bound/total``, ``bound/trivial`` | the sum; span(r)/(1-γ), which any value error is below | ``total >= trivial``: the bound says nothing |

**Caveats.** α_P in Lemma 2 is a supremum of |P - P_ρ| over next-state distributions; for a
deterministic model against a (nearly) deterministic env the total-variation distance of two
point masses is 1 wherever they differ at all, so the literal α_P is 1 and eq. (12) is
vacuous whenever the model is not exact. The one-step error in the observation's own
(normalised) units is what we can measure and compare across envs; it is used in eq. (12)'s
place with that caveat. The policy term of eq. (11) needs the unknown optimal policy; the
movement between successive policies says how far the policy still travels, not how far it is
from π*. With Lunar Lander's γ = 0.999, 1/(1-γ)² = 10⁶: the policy and trivial terms are huge
and the bound is vacuous there on any data (docs/rho.md).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def reward_error(rewards: Tensor, model_rewards: Tensor) -> tuple[float, float]:
    """α̂_r: the mean and the largest ``|r - r̂|`` over the steps where r̂ is known (not NaN)."""
    err = (rewards - model_rewards).abs()
    err = err[torch.isfinite(err)]
    if err.numel() == 0:
        return float("nan"), float("nan")
    return float(err.mean()), float(err.max())


def transition_error(next_obs: Tensor, model_obs: Tensor, scale: Tensor) -> float:
    """α̂_P's proxy: the mean over steps of ``sqrt(mean_i ((ŝ'_i - s'_i) / scale_i)²)``, the
    one-step error RMS over the observation's components in units of ``scale [nobs]`` (the
    observations' std); steps with a NaN prediction (faulted) are left out."""
    err = ((model_obs - next_obs) / scale).square().mean(-1).sqrt()
    err = err[torch.isfinite(err)]
    return float(err.mean()) if err.numel() else float("nan")


def mc_value_error(
    values: Tensor, rewards: Tensor, terminated: Tensor, truncated: Tensor, gamma: float
) -> float:
    """ε̂_V: the mean ``|V̄(s_t) - G_t|`` over the steps ``[T, B]`` whose episode terminates
    inside the fragment, G_t = Σ_k γ^k r_{t+k} up to and including the terminal step (no
    bootstrap: steps of an episode truncated or still running at the end are left out)."""
    T = rewards.shape[0]
    ret = torch.zeros_like(rewards[0])
    known = torch.zeros_like(terminated[0])
    returns = torch.empty_like(rewards)
    valid = torch.empty_like(terminated)
    for t in range(T - 1, -1, -1):
        ended = terminated[t] | truncated[t]
        ret = rewards[t] + gamma * torch.where(ended, torch.zeros_like(ret), ret)
        known = terminated[t] | (known & ~ended)
        returns[t], valid[t] = ret, known
    if not bool(valid.any()):
        return float("nan")
    return float((values - returns).abs()[valid].mean())


def gaussian_policy_kl(mu0: Tensor, log_std0: Tensor, mu1: Tensor, log_std1: Tensor) -> float:
    """Mean over states of KL(N(mu0, σ0²) ‖ N(mu1, σ1²)), summed over the action's
    independent dimensions: ``[N, na]`` means, log-stds ``[na]`` or ``[N, na]``."""
    var0, var1 = (2 * log_std0).exp(), (2 * log_std1).exp()
    kl = log_std1 - log_std0 + (var0 + (mu0 - mu1).square()) / (2 * var1) - 0.5
    return float(kl.sum(-1).mean())


def model_coefficients(span_r: float, gamma: float, horizon: int) -> tuple[float, float]:
    """Eq. (12)'s coefficients of α_P and α_r (per unit ρ): ``(H γ (1-γ^{H-1})/(1-γ) span(r)/2,
    (1-γ^H)/(1-γ))``; for γ = 1 the geometric sums are H - 1 and H."""
    H = horizon
    geo = lambda n: n if gamma == 1.0 else (1 - gamma**n) / (1 - gamma)
    return H * gamma * geo(H - 1) * span_r / 2, geo(H)


class BoundEstimates:
    """The running estimates (span(r), R_max, span(V̄)) and each iteration's ``bound/*``
    figures (module docstring); plain state for checkpoints."""

    def __init__(self, gamma: float, horizon: int | None) -> None:
        self.gamma, self.horizon = gamma, horizon
        self.r_min, self.r_max, self.v_min, self.v_max = math.inf, -math.inf, math.inf, -math.inf

    def figures(
        self, rewards: Tensor, terminated: Tensor, truncated: Tensor, values: Tensor,
        policy_kl: float, rho: float, obs_scale: Tensor, next_obs: Tensor,
        model_obs: Tensor | None, model_rewards: Tensor | None, plan_kl: Tensor | None,
    ) -> dict[str, float]:  # fmt: skip
        """One iteration's figures from its real fragment ``[T, B]`` (``values``: V̄(s_t) in raw
        units before the update), the policy's movement, ρ, and the actors' diagnostics
        (None: not shipped, the model and planner terms are left out)."""
        g, finite = self.gamma, rewards[torch.isfinite(rewards)]
        if finite.numel():
            self.r_min = min(self.r_min, float(finite.min()))
            self.r_max = max(self.r_max, float(finite.max()))
            self.v_min = min(self.v_min, float(values.min()))
            self.v_max = max(self.v_max, float(values.max()))
        span_r = self.r_max - self.r_min
        r_abs = max(abs(self.r_max), abs(self.r_min))
        out = {
            "bound/span_r": span_r, "bound/R_max": r_abs,
            "bound/eps_V": mc_value_error(values, rewards, terminated, truncated, g),
            "bound/policy_kl": policy_kl,
            "bound/trivial": span_r / (1 - g) if g < 1 else math.inf,
        }  # fmt: skip
        H = self.horizon
        if H is not None:
            gH = g**H
            out["bound/value"] = gH * out["bound/eps_V"]
            sums = (1 - gH) / (1 - g) if g < 1 else float(H)
            tv = math.sqrt(max(policy_kl, 0.0) / 2)
            out["bound/policy"] = 4 * r_abs * sums / (1 - g) * tv if g < 1 else math.inf
        if model_obs is not None and H is not None:
            alpha_r, alpha_r_max = reward_error(rewards, model_rewards)
            alpha_p = transition_error(next_obs, model_obs, obs_scale)
            c_p, c_r = model_coefficients(span_r, g, H)
            per_rho = c_p * alpha_p + c_r * alpha_r
            span_g = (1 - gH) / (1 - g) * span_r + gH * (self.v_max - self.v_min)
            kl = plan_kl[torch.isfinite(plan_kl)]
            plan = float(kl.mean()) if kl.numel() else float("nan")
            out.update({
                "bound/alpha_r": alpha_r, "bound/alpha_r_max": alpha_r_max,
                "bound/alpha_P": alpha_p, "bound/model_per_rho": per_rho,
                "bound/model": rho * per_rho, "bound/plan_kl": plan,
                "bound/planner": span_g * math.sqrt(max(plan, 0.0)),
            })  # fmt: skip
        parts = [out.get(k) for k in ("bound/model", "bound/value", "bound/policy")]
        if all(p is not None for p in parts):
            out["bound/total"] = sum(parts) + out.get("bound/planner", 0.0)
            out["bound/vacuous"] = float(out["bound/total"] >= out["bound/trivial"])
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"r": [self.r_min, self.r_max], "v": [self.v_min, self.v_max]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.r_min, self.r_max = (float(v) for v in state["r"])
        self.v_min, self.v_max = (float(v) for v in state["v"])
