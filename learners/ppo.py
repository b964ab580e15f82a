"""PPO over real and virtual data with a value ensemble and the influence ratio ρ (Alg. 1).

One learner iteration (`PPOLearner.update`) runs, top to bottom:

0. the observation statistics take in the fragment's real observations
   (`learners.normalize.ObsNormalizer`, when ``NetworkConfig.normalize_obs``);
1. targets with the *current* critic V̄ (ensemble mean): GAE on the real fragment
   (`learners.targets.gae`) and λ-returns along each virtual sample's planned path
   (`learners.targets.virtual_lambda_return`); advantages are normalised per buffer, over
   the whole buffer (not per minibatch: a virtual minibatch may hold a single sample);
   with ``NetworkConfig.normalize_values`` the critic's units then take in the real
   targets, the heads are rescaled to keep V, and both buffers' targets are expressed in
   those units (`learners.normalize.ValueScale`, PopArt-style);
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

**Cost** (one thread; `python -m learners.bench_update` times Table 3's iteration). The
value heads' fixed priors are evaluated once per iteration (`learners.batches.Samples`),
not per step; each epoch gathers each buffer once and cuts minibatches as views; for ρ > 0
the real and virtual minibatches share one forward pass (at ρ = 0 the real one runs alone,
as without virtual data, which keeps the bit-for-bit equality above); Adam is fused; step
metrics stay tensors until one transfer at the end.
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

from learners.batches import (
    RealBatch,
    Samples,
    TrainBatch,
    VirtualBatch,
    bernoulli_mix,
    mix_batches,
)
from learners.errors import ConfigError
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

    def __post_init__(self) -> None:
        positive = ("learning_rate", "clip_range", "max_grad_norm", "adam_eps")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(name, f"PPOConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("n_steps", "batch_size", "n_epochs"):
            if not getattr(self, name) >= 1:
                raise ConfigError(name, f"PPOConfig.{name} must be >= 1, got {getattr(self, name)}")
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
        if self.virtual_batch_size is not None and self.virtual_batch_size < 1:
            raise ConfigError(
                "virtual_batch_size",
                f"PPOConfig.virtual_batch_size must be None or >= 1, got {self.virtual_batch_size}",
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


def _normalise(a: Tensor) -> Tensor:
    return (a - a.mean()) / (a.std(correction=0) + 1e-8)


def _generator(seed: int, stream: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


_STEP_METRICS = (
    "loss/policy", "loss/value", "loss/entropy", "loss/total", "grad_norm", "approx_kl",
    "clip_fraction",
)  # fmt: skip
_VIRTUAL_METRICS = ("loss/policy_virtual", "loss/value_virtual")


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
        self._param_groups = [list(self.policy.parameters()), list(self.values.parameters())]
        self.dtype = self.params[0].dtype
        # fused Adam: one kernel over all parameters instead of ~10 ops per parameter
        self._adam_flags = {"fused": True if self.device.type in ("cpu", "cuda") else None}
        self.optimizer = torch.optim.Adam(
            self.params, lr=config.learning_rate, eps=config.adam_eps, **self._adam_flags
        )
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
    def _real_targets(self, real: RealBatch) -> tuple[Samples, Tensor, float]:
        """Flat real samples with GAE targets (raw units), the heads' values ``[T·B, D]`` (the
        heads' units), the explained variance."""
        cfg = self.config
        prior = self.values.prior_values(real.obs)
        v = self.values(real.obs, prior)
        v_bar = self.values.scale.denormalize(v.mean(-1))
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
        ev = explained_variance(v_bar.reshape(n), ret.reshape(n))
        return Samples(tb, prior.reshape(n, -1)), v.reshape(n, -1), ev

    @torch.no_grad()
    def _virtual_targets(self, virtual: VirtualBatch) -> tuple[Samples, float]:
        """Virtual samples with path λ-return targets (raw units), and the explained variance."""
        cfg = self.config
        prior = self.values.prior_values(virtual.obs)
        v_bar = self.values.scale.denormalize(self.values(virtual.obs, prior).mean(-1))
        # the λ-return never reads V(path_obs[:, 0]) (it cancels): evaluate the critic on the
        # H later path observations only and put V̄(s_t) in column 0
        path_values = torch.cat((v_bar[:, None], self.values.mean(virtual.path_obs[:, 1:])), 1)
        ret = virtual_lambda_return(
            virtual.path_rewards, path_values, virtual.path_terminated, cfg.gamma, cfg.gae_lambda
        )
        adv = ret - v_bar
        tb = TrainBatch(
            virtual.obs, virtual.actions, virtual.logp,
            _normalise(adv) if cfg.normalize_advantage else adv, ret,
            self._boot(virtual.size, self.generators["virtual"]),
        )  # fmt: skip
        return Samples(tb, prior), explained_variance(v_bar, ret)

    def _scale_values(self, train: Samples, virt: Samples | None) -> tuple[Samples, Samples | None]:
        """Update the critic's units from the real targets (preserving V), and express both
        buffers' targets in them (`learners.normalize.ValueScale`; identity when off). Real
        targets that are not all finite leave the units as they are."""
        scale = self.values.scale
        if not scale.enabled:
            return train, virt
        if bool(torch.isfinite(train.batch.returns).all()):
            a, b = scale.update(train.batch.returns)
            self.values.rescale_heads(a, b)
        in_units = lambda s: Samples(
            s.batch._replace(returns=scale.normalize(s.batch.returns)), s.prior
        )
        return in_units(train), None if virt is None else in_units(virt)

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

    def _clip_gradients(self) -> Tensor:
        """Clip to ``max_grad_norm`` (jointly, or per network); returns the total norm before."""
        clip = torch.nn.utils.clip_grad_norm_
        if not self.config.clip_grad_per_network:
            return clip(self.params, self.config.max_grad_norm)
        norms = [clip(group, self.config.max_grad_norm) for group in self._param_groups]
        return torch.linalg.vector_norm(torch.stack(norms))

    # ---- the update ----------------------------------------------------------------------
    def _minibatch_loss(
        self, mb: Samples, vmb: Samples | None, rho: float
    ) -> tuple[Tensor, LossTerms, LossTerms | None]:
        """The loss of one step and its real and virtual terms.

        With loss mixing, eq. (10) on a real and a virtual minibatch. For ρ > 0 both go through
        the networks in one forward pass; at ρ = 0 the real one goes alone, as without virtual
        data, and the virtual one without gradient (reported, and NaN-checked via 0·L_MPPI).
        """
        cfg = self.config
        terms_of = lambda s: ppo_loss_terms(
            self.policy, self.values, s.batch, cfg.clip_range, s.prior
        )
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

    @torch.no_grad()
    def _step_metrics(
        self, loss: Tensor, grad_norm: Tensor, terms: LossTerms, vterms: LossTerms | None
    ) -> Tensor:
        """``[K]`` metrics of one step taken, in the order of `_STEP_METRICS` (+ virtual)."""
        ratio = torch.exp(terms.log_ratio)
        row = [
            terms.policy.mean(), terms.value.mean(), -terms.entropy.mean(), loss, grad_norm,
            ((ratio - 1.0) - terms.log_ratio).mean(),
            ((ratio - 1.0).abs() > self.config.clip_range).to(ratio.dtype).mean(),
        ]  # fmt: skip
        if vterms is not None:
            row += [vterms.policy.mean(), vterms.value.mean()]
        return torch.stack(row)

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
        self.policy.normalizer.update(real.obs)  # shared with the value heads
        train, real_values, ev = self._real_targets(real)
        metrics: dict[str, float] = {"ensemble_var": ensemble_variance(real_values)}
        rho_skipped = 0
        if self.influence_config.update_every == "iteration":
            rho_skipped += self._update_rho(real_values)
        virt = None
        if virtual is not None:
            virt, metrics["explained_variance_virtual"] = self._virtual_targets(virtual)
        train, virt = self._scale_values(train, virt)
        if cfg.mixing == "sample" and virt is not None:
            z, idx = bernoulli_mix(
                train.batch.size, self.rho, virt.batch.size, self.generators["mix"]
            )
            mixed = mix_batches(train.batch, virt.batch, z, idx)  # eq. (8): trained unweighted
            train = Samples(mixed, self.values.prior_values(mixed.obs))
            metrics["virtual_fraction"] = float(z.float().mean())
            virt = None

        logs: list[Tensor] = []  # one [K] row of detached metrics per step taken
        n_train, skipped = train.batch.size, 0
        for _ in range(cfg.n_epochs):
            # one gather per buffer per epoch; minibatches are consecutive views of it
            perm = torch.randperm(n_train, generator=self.generators["real"])
            minibatches = train.index(perm.to(self.device)).split(cfg.batch_size)
            vminibatches: list[Samples | None] = [None] * len(minibatches)
            if virt is not None:
                vidx = self._virtual_chunks(virt.batch.size, len(minibatches))
                vminibatches = virt.index(vidx.flatten().to(self.device)).split(vidx.shape[1])
            for mb, vmb in zip(minibatches, vminibatches, strict=True):
                if self.influence_config.update_every == "minibatch":
                    with torch.no_grad():
                        rho_skipped += self._update_rho(self.values(mb.batch.obs, mb.prior))
                loss, terms, vterms = self._minibatch_loss(mb, vmb, self.rho)
                self.optimizer.zero_grad(set_to_none=True)
                if not bool(torch.isfinite(loss)):
                    skipped += 1
                    continue
                loss.backward()
                grad_norm = self._clip_gradients()
                if not bool(torch.isfinite(grad_norm)):
                    self.optimizer.zero_grad(set_to_none=True)
                    skipped += 1
                    continue
                self.optimizer.step()
                logs.append(self._step_metrics(loss, grad_norm, terms, vterms))

        self.iteration += 1
        self.skipped_updates += skipped
        if logs:  # one host transfer for all of them
            keys = _STEP_METRICS if virt is None else _STEP_METRICS + _VIRTUAL_METRICS
            metrics.update(zip(keys, torch.stack(logs).mean(0).tolist(), strict=True))
        metrics.update(
            rho=self.rho,
            explained_variance=ev,
            skipped_updates=float(skipped),
            minibatch_updates=float(len(logs)),
            rho_updates_skipped=float(rho_skipped),
            real_samples=float(T * B),
            virtual_samples=float(0 if virtual is None else virtual.size),
            log_std=float(self.policy.log_std.detach().mean()),
        )
        if self.rho_schedule.kind == "adaptive":
            metrics["omega"] = self.rho_schedule.omega
        if self.values.scale.enabled:
            metrics["value_scale/mean"] = float(self.values.scale.shift)
            metrics["value_scale/std"] = float(self.values.scale.std)
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
        for group in state["optimizer"]["param_groups"]:  # keep this learner's Adam kernel
            group.update(self._adam_flags)
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
