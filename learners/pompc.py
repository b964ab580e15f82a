"""PO-MPC in the hierarchy: the planner's distribution over the high-level action as a KL prior.

PO-MPC (Serra-Gomez et al., arXiv 2510.04280) regularises the policy toward the planner's
action distribution π_P with a strength λ, optionally through a learned *intermediate prior*
π_θp fitted to the planner's samples:

    L(θ) = L_PPO(θ) + λ · KL(π_θ(·|s) ‖ π_prior(·|s))          (PO-MPC's KL-regularised policy
                                                                  objective, §3; reverse KL)

λ → 0 is return maximisation alone, large λ clones the prior. PO-MPC plans in the policy's own
action space; here the policy acts in the high-level space a and MPPI plans controls u, so
the prior must be a distribution over a. Every step already draws M candidates
a^(m) ~ π_old(·|s) and plans each; their MPPI costs are not comparable (each candidate sets
its own cost), but their planned paths all score on one scale, the model's reward plus the
critic at the path's end (`candidate_returns`):

    G^(m) = Σ_{k<H} γ^k r̂_k + γ^H V(ψ(x̂_H))          (stopping at a planned terminal state)

The planner-improved distribution over a is the E-step of MPO/AWR on those M samples,
π_P(a^(m)|s) ∝ exp(G^(m)/η) (`candidate_weights`), and a Gaussian fitted to the weighted
candidates gives π_P(·|s) in closed form (`planner_prior`). η is read in the critic's units
(the learner divides G by the value scale σ_G), so one η means the same on every env.

The pieces, each one equation:

* `gaussian_kl` — KL(p ‖ q) of diagonal Gaussians (the KL term of the objective above, either
  direction; `policy_kl` picks it);
* `candidate_returns` — G^(m), the H-step (λ = 1) return of each planned path;
* `candidate_weights`, `planner_prior` — the E-step and its Gaussian fit;
* `temperature_for_kl` — η from MPO's E-step bound (``--kl-epsilon``): the weights' mean KL
  from uniform is ε, whatever the returns' scale and spread;
* `IntermediatePrior`, `intermediate_prior_loss` — π_θp and its fitting loss, the (decoupled) forward
  KL(π_P ‖ π_θp) or the reverse KL(π_θp ‖ π_P) (PO-MPC's two intermediate-prior losses, the
  ablation of its Fig. 3);
* `KLPriorConfig` — the options (``--kl-prior`` and the rest; `learners.pompc_config`);
* `KLPrior` — the prior in the learner: π_prior at a real batch's states, π_θp's fit and its
  state for checkpoints.

Shapes: ``B`` states, ``M`` candidates, ``H`` horizon, ``na`` high-level action size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from learners.batches import RealBatch
from learners.policy import GaussianPolicy
from learners.pompc_config import KLPriorConfig
from learners.targets import virtual_lambda_return


def gaussian_kl(mean_p: Tensor, log_std_p: Tensor, mean_q: Tensor, log_std_q: Tensor) -> Tensor:
    """KL(p ‖ q) of diagonal Gaussians, summed over the last axis ``[..., na] -> [...]``::

        KL = Σ_i log σ_q,i - log σ_p,i + (σ_p,i² + (μ_p,i - μ_q,i)²) / (2 σ_q,i²) - 1/2

    (the KL term of PO-MPC's regularised objective; inputs broadcast)."""
    var_ratio = torch.exp(2.0 * (log_std_p - log_std_q))
    diff = (mean_p - mean_q) * torch.exp(-log_std_q)
    return (log_std_q - log_std_p + 0.5 * (var_ratio + diff.square()) - 0.5).sum(-1)


def policy_kl(
    mean: Tensor, log_std: Tensor, prior_mean: Tensor, prior_log_std: Tensor,
    direction: Literal["reverse", "forward"],
) -> Tensor:  # fmt: skip
    """PO-MPC's KL term between π_θ = N(mean, σ²) and π_prior: 'reverse' KL(π_θ ‖ π_prior)
    (the paper's), 'forward' KL(π_prior ‖ π_θ); ``[..., na] -> [...]``."""
    if direction == "reverse":
        return gaussian_kl(mean, log_std, prior_mean, prior_log_std)
    if direction == "forward":
        return gaussian_kl(prior_mean, prior_log_std, mean, log_std)
    raise ValueError(f"direction must be 'reverse' or 'forward', got {direction!r}")


def candidate_returns(
    path_rewards: Tensor, end_values: Tensor, path_terminated: Tensor, gamma: float
) -> Tensor:
    """G^(m) of each planned path, the scale the candidates are compared on::

        G = Σ_{k<H} γ^k r̂_k + γ^H V(ψ(x̂_H)),   nothing after a planned terminal state

    ``path_rewards [..., H]``, ``end_values [...]`` (V̄ at the path's last state, raw units),
    ``path_terminated [..., H]`` → ``[...]``. The λ = 1 case of the virtual data's path
    λ-return (`learners.targets.virtual_lambda_return`), which needs the critic only at x̂_H.
    """
    lead, H = path_rewards.shape[:-1], path_rewards.shape[-1]
    r = path_rewards.reshape(-1, H)
    values = torch.zeros(r.shape[0], H + 1, dtype=r.dtype, device=r.device)
    values[:, -1] = end_values.reshape(-1).to(r.dtype)
    g = virtual_lambda_return(r, values, path_terminated.reshape(-1, H), gamma, 1.0)
    return g.reshape(lead)


def candidate_weights(returns: Tensor, eta: float) -> Tensor:
    """The E-step over M candidates, π_P(a^(m)|s) ∝ exp(G^(m)/η): ``[..., M]``, summing to 1
    (MPO/AWR's non-parametric improvement step; softmax, so stable for any G)."""
    return torch.softmax(returns / eta, dim=-1)


def weights_kl(returns: Tensor, eta: float) -> Tensor:
    """KL(w ‖ uniform) = Σ_m w_m log(M w_m) of `candidate_weights` per state, ``[..., M] -> [...]``."""
    log_w = torch.log_softmax(returns / eta, dim=-1)
    return (log_w.exp() * (log_w + math.log(returns.shape[-1]))).sum(-1)


def temperature_for_kl(
    returns: Tensor, epsilon: float, lo: float = 1e-6, hi: float = 1e6, steps: int = 60
) -> float:
    """η with mean_s KL(softmax(G_s/η) ‖ uniform) = ε over the states of ``returns [..., M]``:
    MPO's E-step, whose weights are bounded in KL from the samples' own distribution π_old
    (here: the uniform weights of M draws of π_old), with η found by bisection in log η
    instead of MPO's dual (the mean KL falls monotonically as η grows). Clamped to
    ``[lo, hi]``: ``hi`` when even η = ``hi`` exceeds ε, ``lo`` when ε cannot be reached
    (ε ≥ the KL of the greediest weights, at most log M; e.g. all returns equal)."""
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    g = returns.detach().double()
    mean_kl = lambda log_eta: float(weights_kl(g, math.exp(log_eta)).mean())
    a, b = math.log(lo), math.log(hi)
    if mean_kl(b) >= epsilon:
        return hi
    if mean_kl(a) <= epsilon:
        return lo
    for _ in range(steps):  # mean_kl(a) > ε > mean_kl(b)
        mid = 0.5 * (a + b)
        a, b = (mid, b) if mean_kl(mid) > epsilon else (a, mid)
    return math.exp(0.5 * (a + b))


def planner_prior(
    candidates: Tensor, returns: Tensor, eta: float, min_std: float
) -> tuple[Tensor, Tensor]:
    """π_P(·|s): the Gaussian fitted to the candidates weighted by `candidate_weights`::

        w_m = softmax(G/η)_m,   μ_P(s) = Σ_m w_m a^(m),
        v(s) = ½ · Σ_{m<j} w_m w_j (a^(m) - a^(j))² / Σ_{m<j} w_m w_j,
        σ_P² = max(mean_s v(s), σ_min²)

    per action dimension, over every state of the call. μ_P is the M-step's weighted
    maximum-likelihood mean, per state. The variance departs from the per-state ML fit
    Σ_m w_m (a^(m) - μ_P)², for a measured reason: with it, λ = 9 and ε = 0.1 on Lunar Lander
    drove the policy's log σ from -0.09 to -1.09 in 14 iterations (40k env steps, seed 0) with
    the KL to the prior at 2-3 nats. The candidates are M = 4 draws from π_old, so
    (i) the ML variance of M draws is (M-1)/M of the distribution's, and (ii) a per-state
    variance of 4 draws is so noisy that the reverse KL, which weighs the prior's *precision*
    1/σ_P², pulls σ_θ² to the harmonic mean of the estimates: σ²/4 for the ML fit of
    unweighted draws (E[1/χ²₃] = 1), a quarter of the variance each iteration whatever the
    returns say. So v(s) is the *unbiased* weighted variance (reliability weights,
    Σ w (a - μ_P)² / (1 - Σ w²), written pairwise so that nothing cancels when one weight is
    near 1), and it is pooled over the states, as the policy's own σ is state-independent
    (`GaussianPolicy.log_std`); a state whose weights all but one underflowed (v = 0/0) is
    left out of the pool. Unbiased is meant for π_old's variance: with uninformative returns
    (uniform weights) σ_P is π_old's and the KL a trust region. Informative weights move each
    state's mean toward its better candidates; σ_P narrows only where several heavily
    weighted candidates agree (one dominant candidate leaves half its squared distance to the
    others), so the std is left mostly to PPO (MPO bounds the covariance's change separately,
    ε_Σ, for the same reason).
    ``candidates [..., M, na]``, ``returns [..., M]`` → ``(mean [..., na], log_std [..., na])``,
    log_std the same at every state.
    """
    if candidates.shape[:-1] != returns.shape:
        raise ValueError(
            f"candidates [..., M, na] and returns [..., M] disagree: {list(candidates.shape)}, "
            f"{list(returns.shape)}"
        )
    w = candidate_weights(returns, eta)
    mean = (w[..., None] * candidates).sum(-2)
    m, na = candidates.shape[-2:]
    i, j = torch.triu_indices(m, m, offset=1, device=candidates.device)
    pair_w = w[..., i] * w[..., j]  # [..., P]
    sq = (candidates[..., i, :] - candidates[..., j, :]).square()  # [..., P, na]
    denom = pair_w.sum(-1, keepdim=True)
    ok = denom > torch.finfo(w.dtype).tiny  # else one weight is 1: no spread to read
    v = 0.5 * (pair_w[..., None] * sq).sum(-2) / torch.where(ok, denom, torch.ones_like(denom))
    ok = ok.expand_as(v).reshape(-1, na)
    var = (v.reshape(-1, na) * ok).sum(0) / ok.sum(0).clamp(min=1)
    log_std = 0.5 * torch.log(var.clamp(min=min_std * min_std)).expand_as(mean)
    return mean, log_std


class IntermediatePrior(nn.Module):
    """π_θp(a|s) = N(μ_θp(s), diag σ_θp(s)²): PO-MPC's learned intermediate prior over the
    high-level action, fitted to π_P across states and iterations (a smoothed planner).

    Takes *normalised* observations (the policy's normaliser, applied by the learner): its
    statistics are the policy's and are not duplicated here. Two tanh layers like the policy,
    the mean and the log-std as two heads; log σ is clamped to [log σ_min, 1].
    """

    def __init__(self, nobs: int, na: int, hidden_sizes=(64, 64), min_std: float = 0.05) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        sizes = [nobs, *hidden_sizes]
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            lin = nn.Linear(n_in, n_out)
            nn.init.orthogonal_(lin.weight, gain=math.sqrt(2.0))
            nn.init.zeros_(lin.bias)
            layers += [lin, nn.Tanh()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(sizes[-1], 2 * na)
        nn.init.orthogonal_(self.head.weight, gain=0.01)
        nn.init.zeros_(self.head.bias)
        self.na, self.log_min_std = na, math.log(min_std)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x [..., nobs]`` (normalised) → ``(mean [..., na], log_std [..., na])``."""
        out = self.head(self.body(x))
        mean, log_std = out.split(self.na, dim=-1)
        return mean, log_std.clamp(self.log_min_std, 1.0)


def intermediate_prior_loss(
    mean: Tensor, log_std: Tensor, target_mean: Tensor, target_log_std: Tensor,
    loss: Literal["forward", "reverse"],
) -> Tensor:  # fmt: skip
    """π_θp's fitting loss per state ``[...]`` (PO-MPC's intermediate-prior losses, Fig. 3):
    'forward' KL(π_P ‖ π_θp) (mass-covering), 'reverse' KL(π_θp ‖ π_P) (mode-seeking).

    The forward KL is taken *decoupled*, its mean and std parts each with the other at the
    target's (MPO's decoupled KL, Abdolmaleki et al. 2018)::

        KL(N(μ_P, σ_P) ‖ N(μ_θp, σ_P)) + KL(N(μ_P, σ_P) ‖ N(μ_P, σ_θp))

    equal to the full forward KL where σ_θp = σ_P. Our departure, and why: π_P's mean is the
    mean of M = 4 candidates, noisy around π_old's, and the full forward KL's σ_θp² fits
    σ_P² *plus* the squared residual of the mean, E[(μ_P - μ_θp)²], so π_θp comes out wider
    than π_P every iteration; the policy follows it (the KL pulls it there) and draws the next
    candidates from it. On Lunar Lander (λ = 1, ρ = 0, seed 1, at 9232856) the policy's log σ
    climbed to π_θp's clamp, +1, within 100k env steps and held it to 516k, the KL to the
    prior 0.04 nats, success 0.03 (results/pompc/diagnostics/). Decoupled, σ_θp's optimum is σ_P whatever the mean's residual. The reverse KL
    needs no decoupling: its σ-optimum is σ_P already."""
    if loss == "forward":
        return gaussian_kl(target_mean, target_log_std, mean, target_log_std) + gaussian_kl(
            target_mean, target_log_std, target_mean, log_std
        )
    if loss == "reverse":
        return gaussian_kl(mean, log_std, target_mean, target_log_std)
    raise ValueError(f"loss must be 'forward' or 'reverse', got {loss!r}")


class KLPrior:
    """PO-MPC's prior in the learner (`learners.ppo.PPOLearner` holds one when a prior is on).

    `anchor` gives π_prior(·|s) at a real batch's states: π_P from each step's candidates and
    their returns (`planner_prior`, G divided by the critic's scale so η is scale-free), or,
    with the intermediate prior, π_θp after `fit` to π_P on those states. π_θp is built from
    ``init_seed`` and draws its minibatches from ``generator``, so no other random stream of
    the learner moves; its weights, Adam state and stream are in `state_dict`.
    """

    def __init__(
        self, config: KLPriorConfig, nobs: int, na: int, hidden_sizes: Sequence[int],
        batch_size: int, adam_eps: float, device: torch.device, init_seed: int,
        generator: torch.Generator,
    ) -> None:  # fmt: skip
        self.config, self.nobs, self.na, self.batch_size = config, nobs, na, batch_size
        self.net: IntermediatePrior | None = None
        if config.kl_prior == "intermediate":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(init_seed)
                net = IntermediatePrior(nobs, na, tuple(hidden_sizes), config.kl_min_std)
            self.net = net.to(device)
            self.optimizer = torch.optim.Adam(
                self.net.parameters(), lr=config.kl_prior_lr, eps=adam_eps
            )
            self.generator = generator
        self.device = device

    def policy_kl(self, policy: GaussianPolicy, obs: Tensor, anchor: Tensor) -> Tensor:
        """PO-MPC's KL term per state ``[N]`` between π_θ(·|s) at ``obs [N, nobs]`` and the
        prior ``anchor [N, 2·na]`` (mean, log-std), in ``kl_direction``; differentiable in θ."""
        mean = policy(obs)
        return policy_kl(
            mean, policy.log_std.expand_as(mean), anchor[:, : self.na], anchor[:, self.na :],
            self.config.kl_direction,
        )  # fmt: skip

    def anchor(
        self, real: RealBatch, policy: GaussianPolicy, value_std: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        """π_prior(·|s) at every real state, ``[T·B, 2·na]`` (mean, log-std), and its metrics
        (``kl/*``, ``loss/kl_prior``). ``value_std``: the critic's scale σ_G (`ValueScale.std`)."""
        kc = self.config
        if real.candidates is None or real.candidate_returns is None:
            raise ValueError(
                f"kl_prior={kc.kl_prior!r} needs each step's candidates and their returns in the "
                "real batch (RealBatch.candidates, .candidate_returns): the actors score them "
                "when their WorkerSpec has candidate_gamma set"
            )
        T, B, M, na = real.candidates.shape
        n = T * B
        obs = real.obs.reshape(n, self.nobs)
        with torch.no_grad():
            g = real.candidate_returns.reshape(n, M) / value_std.to(real.candidate_returns.dtype)
            eta = kc.kl_temperature
            if kc.kl_epsilon > 0:
                eta = temperature_for_kl(g, kc.kl_epsilon)
            mean, log_std = planner_prior(real.candidates.reshape(n, M, na), g, eta, kc.kl_min_std)
            weights = candidate_weights(g, eta)
        metrics = {
            "kl/eta": eta,
            "kl/weights_kl": float(weights_kl(g, eta).mean()),
            "kl/planner_std": float(log_std.exp().mean()),
            "kl/weight_max": float(weights.max(-1).values.mean()),
            "kl/return_spread": float(g.std(-1, correction=0).mean()),
        }
        if self.net is not None:
            x = policy.normalizer(obs)
            metrics["loss/kl_prior"] = self.fit(x, mean, log_std)
            with torch.no_grad():
                mean, log_std = self.net(x)
            metrics["kl/intermediate_std"] = float(log_std.exp().mean())
        anchor = torch.cat((mean, log_std), -1)
        with torch.no_grad():
            metrics["kl/policy_prior"] = float(self.policy_kl(policy, obs, anchor).mean())
        return anchor, metrics

    def fit(self, x: Tensor, mean: Tensor, log_std: Tensor) -> float:
        """PO-MPC's intermediate-prior step: ``kl_prior_epochs`` passes of Adam on
        `intermediate_prior_loss` (forward or reverse KL to π_P = N(mean, exp(log_std)²)) over
        the states ``x [N, nobs]`` (normalised), minibatches of ``batch_size``; the mean loss
        (NaN when every step was skipped for a non-finite loss)."""
        kc, n = self.config, x.shape[0]
        losses = []
        for _ in range(kc.kl_prior_epochs):
            perm = torch.randperm(n, generator=self.generator).to(self.device)
            for idx in perm.split(self.batch_size):
                m, ls = self.net(x[idx])
                loss = intermediate_prior_loss(m, ls, mean[idx], log_std[idx], kc.kl_prior_loss)
                loss = loss.mean()
                self.optimizer.zero_grad(set_to_none=True)
                if not bool(torch.isfinite(loss)):
                    continue
                loss.backward()
                self.optimizer.step()
                losses.append(loss.detach())
        return float(torch.stack(losses).mean()) if losses else math.nan

    def state_dict(self) -> dict[str, Any]:
        """``{"intermediate_prior": {net, optimizer, generator}}`` (empty without π_θp)."""
        if self.net is None:
            return {}
        return {
            "intermediate_prior": {
                "net": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(),
            }
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict`'s part from a learner's state (`ValueError` if it lacks π_θp)."""
        if self.net is None:
            return
        if "intermediate_prior" not in state:
            raise ValueError("the state has no intermediate prior (kl_prior='intermediate')")
        prior = state["intermediate_prior"]
        self.net.load_state_dict(prior["net"])
        self.optimizer.load_state_dict(prior["optimizer"])
        self.generator.set_state(prior["generator"])
