"""PPO over real and virtual data with a value ensemble and the influence ratio ρ (Alg. 1).

One learner iteration (`PPOLearner.update`) runs, top to bottom:

1. targets with the *current* critic V̄ (ensemble mean): GAE on the real fragment
   (`learners.targets.gae`) and λ-returns along each virtual sample's planned path
   (`learners.targets.virtual_lambda_return`); advantages are normalised per buffer, over
   the whole buffer (not per minibatch: a virtual minibatch may hold a single sample);
2. ρ from its schedule (Alg. 2 on the heads' values at the fresh real observations, before
   any gradient step on them), unless it is updated per minibatch;
3. ``n_epochs`` passes of minibatch steps on either
   * ``mixing="loss"`` (default, eq. 10): each real minibatch of ``batch_size`` samples is
     paired with a virtual minibatch and the loss is ``(1-ρ) L_RL + ρ L_MPPI``. The virtual
     buffer holds M-1 samples per real step, so by default the virtual minibatch has
     ⌈N_virtual / number of real minibatches⌉ samples and every epoch sweeps *both* buffers
     once (``virtual_batch_size`` fixes the size instead); or
   * ``mixing="sample"`` (eq. 8, App. D): one Bernoulli(ρ) draw per real sample replaces it
     by a virtual sample, once per iteration (`learners.batches.bernoulli_mix`), and PPO runs
     unweighted on that unified buffer of the real buffer's size.

A virtual sample's advantage is its path λ-return minus V̄(s_t) at its real state. Each
minibatch step is skipped (weights and optimizer untouched, counted in ``skipped_updates``)
when its loss or gradient norm is not finite. With ρ = 0 the virtual branch still runs (and
is reported) but adds exactly zero: real minibatches, bootstrap weights and every number on
the real path come from their own random streams, so the result equals, bit for bit,
``update(real, None)`` — unless the virtual loss is itself non-finite (0·NaN), which skips.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from learners.batches import RealBatch, TrainBatch, VirtualBatch, bernoulli_mix, mix_batches
from learners.policy import GaussianPolicy, NetworkConfig, ValueEnsemble, build_networks
from learners.rho import InfluenceRatioConfig, ensemble_variance, make_influence_ratio
from learners.targets import gae, virtual_lambda_return


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters (defaults: the paper's Table 3, i.e. Stable-Baselines3's)."""

    learning_rate: float = 3e-4
    """Adam step size, > 0."""
    n_steps: int = 2048
    """Real env steps per learner iteration, over all envs (read by the driver), >= 1."""
    batch_size: int = 64
    """Real samples per minibatch, >= 1."""
    n_epochs: int = 10
    """Passes over the buffers per iteration, >= 1."""
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
    """Global gradient-norm clip, > 0."""
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

    def __post_init__(self) -> None:
        positive = ("learning_rate", "clip_range", "max_grad_norm", "adam_eps")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"PPOConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("n_steps", "batch_size", "n_epochs"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"PPOConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"PPOConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("ent_coef", "vf_coef"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"PPOConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.mixing not in ("loss", "sample"):
            raise ValueError(f"PPOConfig.mixing must be 'loss' or 'sample', got {self.mixing!r}")
        if self.virtual_batch_size is not None and self.virtual_batch_size < 1:
            raise ValueError(
                f"PPOConfig.virtual_batch_size must be None or >= 1, got {self.virtual_batch_size}"
            )
        if not 0.0 < self.bootstrap_p <= 1.0:
            raise ValueError(f"PPOConfig.bootstrap_p must be in (0, 1], got {self.bootstrap_p}")


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
    policy: GaussianPolicy, values: ValueEnsemble, mb: TrainBatch, clip_range: float
) -> LossTerms:
    """The per-sample terms of L_PPO(φ; d) on a minibatch (ratios of the high-level action)."""
    log_ratio = policy.log_prob(mb.obs, mb.actions) - mb.logp
    ratio = torch.exp(log_ratio)
    a = mb.advantages
    surrogate = torch.min(ratio * a, torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range) * a)
    v = values(mb.obs)
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


def _normalise(a: Tensor) -> Tensor:
    return (a - a.mean()) / (a.std(correction=0) + 1e-8)


def _generator(seed: int, stream: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


class PPOLearner:
    """The learning math of the learner actor: networks, optimizer, ρ, and `update`.

    Device follows ``device`` (CPU by default); batches are moved onto it. Random draws
    (minibatch order, bootstrap weights, per-sample mixing) use CPU generators seeded from
    ``seed``, so CPU and CUDA runs draw the same indices. Raises `ValueError` at
    construction for an adaptive ρ with fewer than 2 value heads and for per-minibatch ρ
    updates with per-sample mixing (whose draw fixes the unified buffer per iteration).
    Configs left as None take their defaults.
    """

    def __init__(
        self,
        nobs: int,
        na: int,
        config: PPOConfig | None = None,
        networks: NetworkConfig | None = None,
        influence_ratio: InfluenceRatioConfig | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> None:
        config = config or PPOConfig()
        networks = networks or NetworkConfig()
        influence_ratio = influence_ratio or InfluenceRatioConfig()
        if influence_ratio.mode == "adaptive" and networks.ensemble_size < 2:
            raise ValueError(
                "NetworkConfig.ensemble_size must be >= 2 with InfluenceRatioConfig.mode="
                f"'adaptive' (Alg. 2 needs the heads' variance), got {networks.ensemble_size}"
            )
        if config.mixing == "sample" and influence_ratio.update_every == "minibatch":
            raise ValueError(
                "InfluenceRatioConfig.update_every='minibatch' needs PPOConfig.mixing='loss': "
                "per-sample mixing draws the unified buffer once per iteration"
            )
        self.nobs, self.na = nobs, na
        self.config, self.network_config, self.influence_config = config, networks, influence_ratio
        self.device = torch.device(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            policy, values = build_networks(nobs, na, networks)
        self.policy, self.values = policy.to(self.device), values.to(self.device)
        self.params = [*self.policy.parameters(), *self.values.parameters()]
        self.dtype = self.params[0].dtype
        self.optimizer = torch.optim.Adam(self.params, lr=config.learning_rate, eps=config.adam_eps)
        self.rho_schedule = make_influence_ratio(influence_ratio)
        self.generators = {k: _generator(seed, i) for i, k in enumerate(("real", "virtual", "mix"))}
        self.iteration = 0
        self.skipped_updates = 0

    @property
    def rho(self) -> float:
        """The current influence ratio ρ (what the actors are told)."""
        return self.rho_schedule.rho

    # ---- targets -------------------------------------------------------------------------
    def _boot(self, n: int, gen: torch.Generator) -> Tensor:
        p = self.config.bootstrap_p
        D = self.values.ensemble_size
        return (torch.bernoulli(torch.full((n, D), p), generator=gen) / p).to(self.device)

    @torch.no_grad()
    def _real_targets(self, real: RealBatch) -> tuple[TrainBatch, Tensor, float]:
        """Flat real samples with GAE targets, the heads' values ``[T·B, D]``, explained variance."""
        cfg = self.config
        v = self.values(real.obs)
        v_bar = v.mean(-1)
        adv, ret = gae(
            real.rewards, v_bar, self.values.mean(real.next_obs), real.terminated,
            real.truncated, cfg.gamma, cfg.gae_lambda,
        )  # fmt: skip
        n = adv.numel()
        adv = adv.reshape(n)
        tb = TrainBatch(
            real.obs.reshape(n, self.nobs), real.actions.reshape(n, self.na), real.logp.reshape(n),
            _normalise(adv) if cfg.normalize_advantage else adv, ret.reshape(n),
            self._boot(n, self.generators["real"]),
        )  # fmt: skip
        return tb, v.reshape(n, -1), explained_variance(v_bar.reshape(n), ret.reshape(n))

    @torch.no_grad()
    def _virtual_targets(self, virtual: VirtualBatch) -> tuple[TrainBatch, float]:
        """Virtual samples with path λ-return targets, and the explained variance."""
        cfg = self.config
        ret = virtual_lambda_return(
            virtual.path_rewards, self.values.mean(virtual.path_obs), virtual.path_terminated,
            cfg.gamma, cfg.gae_lambda,
        )  # fmt: skip
        v_bar = self.values.mean(virtual.obs)
        adv = ret - v_bar
        tb = TrainBatch(
            virtual.obs, virtual.actions, virtual.logp,
            _normalise(adv) if cfg.normalize_advantage else adv, ret,
            self._boot(virtual.size, self.generators["virtual"]),
        )  # fmt: skip
        return tb, explained_variance(v_bar, ret)

    def _update_rho(self, values: Tensor) -> int:
        """Step the ρ schedule on ``values [B, D]``; 1 when skipped for non-finite values."""
        if not bool(values.isfinite().all()):
            return 1
        self.rho_schedule.update(values)
        return 0

    def _virtual_chunks(self, n_virtual: int, n_chunks: int) -> Tensor:
        """``[n_chunks, size]`` virtual indices: consecutive random permutations, cut up."""
        size = self.config.virtual_batch_size or max(1, -(-n_virtual // n_chunks))
        need, perms, have = size * n_chunks, [], 0
        while have < need:
            perms.append(torch.randperm(n_virtual, generator=self.generators["virtual"]))
            have += n_virtual
        return torch.cat(perms)[:need].view(n_chunks, size)

    # ---- the update ----------------------------------------------------------------------
    def update(self, real: RealBatch, virtual: VirtualBatch | None = None) -> dict[str, float]:
        """One learner iteration on a real fragment and (optionally) virtual samples.

        Returns detached floats: ``rho`` (after this iteration), ``omega`` (adaptive),
        ``ensemble_var`` (Alg. 2's σ̄² on the real batch), ``loss/{policy,value,entropy,total}``
        and ``loss/{policy,value}_virtual`` (means over the steps taken), ``approx_kl``,
        ``clip_fraction``, ``grad_norm``, ``explained_variance[_virtual]``, ``skipped_updates``,
        ``minibatch_updates``, ``rho_updates_skipped``, ``real_samples``, ``virtual_samples``,
        ``virtual_fraction`` (sample mixing), ``log_std``. Loss keys are absent when every step
        was skipped. Raises `ValueError` on mis-shaped batches and when ρ > 0 but no virtual
        samples are given (never a silent NaN).
        """
        cfg = self.config
        T, B, nobs, na = real.dims()
        if (nobs, na) != (self.nobs, self.na):
            raise ValueError(
                f"real batch has nobs={nobs}, na={na}; learner has {self.nobs}, {self.na}"
            )
        if virtual is not None:
            _, _, vnobs, vna = virtual.dims()
            if (vnobs, vna) != (self.nobs, self.na):
                raise ValueError(
                    f"virtual batch has nobs={vnobs}, na={vna}; learner has {self.nobs}, {self.na}"
                )
            virtual = virtual.to(self.device, self.dtype) if virtual.size > 0 else None
        if virtual is None and self.rho > 0.0:
            raise ValueError(
                f"the influence ratio ρ={self.rho} > 0 needs virtual samples, got none; pass a "
                "non-empty VirtualBatch or set InfluenceRatioConfig.rho0=0"
            )
        real = real.to(self.device, self.dtype)
        real_tb, real_values, ev = self._real_targets(real)
        metrics: dict[str, float] = {"ensemble_var": ensemble_variance(real_values)}
        rho_skipped = 0
        if self.influence_config.update_every == "iteration":
            rho_skipped += self._update_rho(real_values)
        virt_tb = None
        if virtual is not None:
            virt_tb, metrics["explained_variance_virtual"] = self._virtual_targets(virtual)
        train_tb = real_tb
        if cfg.mixing == "sample" and virt_tb is not None:
            z, idx = bernoulli_mix(real_tb.size, self.rho, virt_tb.size, self.generators["mix"])
            train_tb = mix_batches(real_tb, virt_tb, z, idx)  # eq. (8): trained unweighted
            metrics["virtual_fraction"] = float(z.float().mean())
            virt_tb = None

        logs: dict[str, list[Tensor]] = {}
        log = lambda k, v: logs.setdefault(k, []).append(v.detach())
        n_train, skipped, steps = train_tb.size, 0, 0
        for _ in range(cfg.n_epochs):
            chunks = torch.randperm(n_train, generator=self.generators["real"]).split(
                cfg.batch_size
            )
            vchunks = None if virt_tb is None else self._virtual_chunks(virt_tb.size, len(chunks))
            for k, idx in enumerate(chunks):
                mb = train_tb.index(idx.to(self.device))
                if self.influence_config.update_every == "minibatch":
                    with torch.no_grad():
                        rho_skipped += self._update_rho(self.values(mb.obs))
                rho = self.rho
                terms = ppo_loss_terms(self.policy, self.values, mb, cfg.clip_range)
                loss = ppo_objective(terms, cfg.vf_coef, cfg.ent_coef).mean()
                vterms = None
                if virt_tb is not None:
                    vmb = virt_tb.index(vchunks[k].to(self.device))
                    vterms = ppo_loss_terms(self.policy, self.values, vmb, cfg.clip_range)
                    vloss = ppo_objective(vterms, cfg.vf_coef, cfg.ent_coef).mean()
                    loss = weighted_loss(loss, vloss, rho)
                elif cfg.mixing == "loss":
                    loss = (1.0 - rho) * loss
                self.optimizer.zero_grad(set_to_none=True)
                if not bool(torch.isfinite(loss)):
                    skipped += 1
                    continue
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                if not bool(torch.isfinite(grad_norm)):
                    self.optimizer.zero_grad(set_to_none=True)
                    skipped += 1
                    continue
                self.optimizer.step()
                steps += 1
                ratio = torch.exp(terms.log_ratio)
                log("loss/policy", terms.policy.mean())
                log("loss/value", terms.value.mean())
                log("loss/entropy", -terms.entropy.mean())
                log("loss/total", loss)
                log("grad_norm", grad_norm)
                log("approx_kl", ((ratio - 1.0) - terms.log_ratio).mean())
                log("clip_fraction", ((ratio - 1.0).abs() > cfg.clip_range).float().mean())
                if vterms is not None:
                    log("loss/policy_virtual", vterms.policy.mean())
                    log("loss/value_virtual", vterms.value.mean())

        self.iteration += 1
        self.skipped_updates += skipped
        metrics.update({k: float(torch.stack(v).mean()) for k, v in logs.items()})
        metrics.update(
            rho=self.rho,
            explained_variance=ev,
            skipped_updates=float(skipped),
            minibatch_updates=float(steps),
            rho_updates_skipped=float(rho_skipped),
            real_samples=float(T * B),
            virtual_samples=float(0 if virtual is None else virtual.size),
            log_std=float(self.policy.log_std.detach().mean()),
        )
        if self.rho_schedule.kind == "adaptive":
            metrics["omega"] = self.rho_schedule.omega
        return metrics

    # ---- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A snapshot (deep copy) of everything a resumed run needs: networks, optimizer, ρ
        state, counters, RNG states, and the configs (for the record)."""
        return copy.deepcopy(
            {
                "policy": self.policy.state_dict(),
                "values": self.values.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rho": self.rho_schedule.state_dict(),
                "iteration": self.iteration,
                "skipped_updates": self.skipped_updates,
                "generators": {k: g.get_state() for k, g in self.generators.items()},
                "configs": {
                    "ppo": dataclasses.asdict(self.config),
                    "networks": dataclasses.asdict(self.network_config),
                    "influence_ratio": dataclasses.asdict(self.influence_config),
                },
            }
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict` (copied: the learner never aliases the caller's tensors)."""
        state = copy.deepcopy(state)
        self.policy.load_state_dict(state["policy"])
        self.values.load_state_dict(state["values"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rho_schedule.load_state_dict(state["rho"])
        self.iteration = int(state["iteration"])
        self.skipped_updates = int(state["skipped_updates"])
        for k, g in self.generators.items():
            g.set_state(state["generators"][k])

    def get_weights(self) -> dict[str, dict[str, Tensor]]:
        """CPU copies of the policy and value-ensemble state dicts, for shipping to actors."""
        cpu = lambda sd: {k: v.detach().to("cpu", copy=True) for k, v in sd.items()}
        return {"policy": cpu(self.policy.state_dict()), "values": cpu(self.values.state_dict())}

    def set_weights(self, weights: dict[str, dict[str, Tensor]]) -> None:
        """Load ``get_weights()`` output (either part may be absent)."""
        if "policy" in weights:
            self.policy.load_state_dict(weights["policy"])
        if "values" in weights:
            self.values.load_state_dict(weights["values"])
