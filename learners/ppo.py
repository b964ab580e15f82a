"""PPO over real and virtual data with a value ensemble and the influence ratio ρ (Alg. 1).

One learner iteration (`PPOLearner.update`) runs, top to bottom:

0. the observation statistics take in the fragment's real observations
   (`learners.normalize.ObsNormalizer`, when ``NetworkConfig.normalize_obs``); with PO-MPC's
   KL prior (``kl``, `learners.pompc.KLPriorConfig`), π_prior(·|s) at every real state: π_P
   from the step's scored candidates, or the intermediate prior π_θp after its fit to π_P;
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

With a KL prior each real minibatch adds ``λ · mean KL(π_θ ‖ π_prior)`` over its states
(PO-MPC's regularised objective; on either engine). λ = 0 computes and logs the KL but
leaves every number of the update as without it, bit for bit.

A virtual sample's advantage is its path λ-return minus V̄(s_t) at its real state. Each
minibatch step is skipped (weights and optimizer untouched, counted in ``skipped_updates``)
when its loss or gradient norm is not finite. With ρ = 0 the virtual branch still runs (and
is reported) but adds exactly zero: real minibatches, bootstrap weights and every number on
the real path come from their own random streams, so the result equals, bit for bit,
``update(real, None)`` — unless the virtual loss is itself non-finite (0·NaN), which skips.

**Engines.** The minibatch loop runs on one of two engines with the same maths, the same
random streams and the same metrics (``PPOConfig.engine``): ``"fused"`` (default,
`learners.fused_engine`), which stacks the policy and the D value heads into one batched
network and writes the loss's gradient out by hand (no autograd, no allocation, no host
transfer per step), and ``"autograd"`` (`learners.ppo_autograd`), the loop on the modules
with autograd and ``torch.optim.Adam``, kept as the reference (hooks, anomaly detection).
They agree to float32 rounding (`tests/test_fused_step.py`); `python -m rlmpc.bench.update`
times both. The value heads' fixed priors are evaluated once per iteration
(`learners.batches.Samples`), not per step.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from common.checks import ConfigError
from learners.batches import (
    RealBatch,
    Samples,
    TrainBatch,
    VirtualBatch,
    bernoulli_mix,
    mix_batches,
)
from learners.bound import BoundEstimates, gaussian_policy_kl
from learners.engine import Draws, RhoSteps
from learners.fused_engine import FusedEngine
from learners.policy import NetworkConfig, build_networks
from learners.pompc import IntermediatePrior, KLPrior, KLPriorConfig
from learners.ppo_autograd import AutogradEngine
from learners.ppo_loss import (
    PPOConfig,
    explained_variance,
    normalise,
    virtual_diagnostics,
)
from learners.rho import InfluenceRatioConfig, ensemble_variance, make_influence_ratio
from learners.targets import gae, virtual_lambda_return


def check_sections(
    ppo: PPOConfig, networks: NetworkConfig, influence_ratio: InfluenceRatioConfig,
    kl: KLPriorConfig,
) -> None:  # fmt: skip
    """The rules between the learner's config sections, in one place (the learner checks
    them when built, `rlmpc.run.config.TrainConfig` before a run starts): `ConfigError`
    naming the fields as ``section.field``."""
    if influence_ratio.mode != "fixed" and networks.ensemble_size < 2:
        raise ConfigError(
            ("influence_ratio.mode", "networks.ensemble_size"),
            f"the {influence_ratio.mode} ρ (Alg. 2) reads the variance of the value heads: it "
            f"needs ensemble_size >= 2, got {networks.ensemble_size}",
        )
    if ppo.mixing == "sample" and influence_ratio.update_every == "minibatch":
        raise ConfigError(
            ("influence_ratio.update_every", "ppo.mixing"),
            "update_every='minibatch' needs mixing='loss': per-sample mixing draws the "
            "unified buffer once per iteration",
        )
    if kl.enabled and ppo.mixing != "loss":
        raise ConfigError(
            ("kl.kl_prior", "ppo.mixing"),
            "the KL prior is taken on the real states, which per-sample mixing replaces: it "
            "needs mixing='loss'",
        )


def rho0_from_bias(ceiling: float, bias: float) -> float:
    """The ρ0 rule (docs/rho.md): ``ceiling / (1 + bias)``, ``bias`` the model terms of eq. (12)
    per unit ρ in units of the returns' spread (0: an exact model keeps the ceiling)."""
    return ceiling / (1.0 + max(bias, 0.0))


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
    Configs left as None take their defaults; ``engine`` overrides ``config.engine``.
    ``diagnostics`` logs the bound's estimates (`learners.bound`, ``bound/*``) every
    iteration; ``horizon`` (the planner's H) gives eq. (12)'s coefficients.
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
        engine: Literal["fused", "autograd"] | None = None,
        kl: KLPriorConfig | None = None,
        diagnostics: bool = False,
        horizon: int | None = None,
    ) -> None:
        config = config or PPOConfig()
        kl = kl or KLPriorConfig()
        networks = networks or NetworkConfig()
        influence_ratio = influence_ratio or InfluenceRatioConfig()
        check_sections(config, networks, influence_ratio, kl)
        self.nobs, self.na = nobs, na
        self.config, self.network_config, self.influence_config = config, networks, influence_ratio
        self.kl_config = kl
        self.device = torch.device(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            policy, values = build_networks(nobs, na, networks)
        self.policy, self.values = policy.to(self.device), values.to(self.device)
        self.dtype = self.policy.log_std.dtype
        # fused Adam: one kernel over all parameters instead of ~10 ops per parameter
        self._adam_flags = {"fused": True if self.device.type in ("cpu", "cuda") else None}
        self.optimizer = torch.optim.Adam(
            [*self.policy.parameters(), *self.values.parameters()],
            lr=config.learning_rate,
            eps=config.adam_eps,
            **self._adam_flags,
        )  # the autograd engine's; the fused engine keeps its state in this format too
        self.rho_schedule = make_influence_ratio(influence_ratio)
        self.generators = {k: _generator(seed, i) for i, k in enumerate(("real", "virtual", "mix"))}
        self.draws = Draws(self.generators["real"], self.generators["virtual"], config.batch_size,
                           config.virtual_batch_size)  # fmt: skip
        #: the bound's running estimates (`learners.bound`); None: not estimated
        self.bound = BoundEstimates(config.gamma, horizon) if diagnostics else None
        self._rule_inputs: list[tuple[float, float]] = []
        self.iteration = 0
        self.skipped_updates = 0
        self.kl_prior: KLPrior | None = None
        if kl.enabled:  # its own seed and streams: nothing else moves
            self.kl_prior = KLPrior(
                kl, nobs, na, networks.hidden_sizes, config.batch_size, config.adam_eps,
                self.device, init_seed=int(_generator(seed, 3).initial_seed()),
                generator=_generator(seed, 4),
            )  # fmt: skip
        self.engine_name = engine or config.engine
        if self.engine_name not in ("fused", "autograd"):
            raise ValueError(f"engine must be 'fused' or 'autograd', got {self.engine_name!r}")
        #: the minibatch loop (`learners.engine.Engine`), built from the parts above
        self.engine: FusedEngine | AutogradEngine
        if self.engine_name == "fused":
            self.engine = FusedEngine(self.policy, self.values, config, self.draws,
                                      kl if kl.enabled else None)  # fmt: skip
        else:
            self.engine = AutogradEngine(self.policy, self.values, self.optimizer, config,
                                         self.draws, self.kl_prior)  # fmt: skip

    @property
    def rho(self) -> float:
        """The current influence ratio ρ (what the actors are told)."""
        return self.rho_schedule.rho

    # ---- targets -------------------------------------------------------------------------
    @torch.no_grad()
    def _critic(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """The value heads on ``obs [..., nobs]``: trained parts and fixed priors, ``[..., D]``
        each (their sum is `ValueEnsemble`'s output, in the heads' units)."""
        return self.engine.critic(obs)

    def _critic_mean(self, obs: Tensor) -> Tensor:
        """V̄ on ``obs`` in raw return units (`ValueEnsemble.mean`)."""
        heads, prior = self._critic(obs)
        return self.values.scale.denormalize((heads + prior).mean(-1))

    def _boot(self, n: int, gen: torch.Generator) -> Tensor:
        p = self.config.bootstrap_p
        D = self.values.ensemble_size
        return (torch.bernoulli(torch.full((n, D), p), generator=gen) / p).to(self.device)

    @torch.no_grad()
    def _real_targets(
        self, real: RealBatch, anchor: Tensor | None = None
    ) -> tuple[Samples, Tensor, float]:
        """Flat real samples with GAE targets (raw units), the heads' values ``[T·B, D]`` (the
        heads' units), the explained variance. ``anchor [T·B, 2·na]``: PO-MPC's prior at the
        real states, attached to the samples (and, with ``kl_critic``, subtracted from the
        rewards as λ·KL: PO-MPC's KL-regularised value target)."""
        cfg = self.config
        heads, prior = self._critic(real.obs)
        v = heads + prior
        v_bar = self.values.scale.denormalize(v.mean(-1))
        rewards = real.rewards
        if anchor is not None and self.kl_config.kl_critic and self.kl_config.kl_lambda > 0:
            penalty = self._policy_kl(real.obs.reshape(-1, self.nobs), anchor)
            rewards = rewards - self.kl_config.kl_lambda * penalty.reshape(rewards.shape)
        adv, ret = gae(
            rewards, v_bar, self._critic_mean(real.next_obs), real.terminated,
            real.truncated, cfg.gamma, cfg.gae_lambda,
        )  # fmt: skip
        n = adv.numel()
        adv = adv.reshape(n)
        tb = TrainBatch(
            real.obs.reshape(n, self.nobs), real.actions.reshape(n, self.na), real.logp.reshape(n),
            normalise(adv) if cfg.normalize_advantage else adv, ret.reshape(n),
            self._boot(n, self.generators["real"]),
        )  # fmt: skip
        ev = explained_variance(v_bar.reshape(n), ret.reshape(n))
        return Samples(tb, prior.reshape(n, -1), anchor), v.reshape(n, -1), ev

    # ---- PO-MPC's prior ------------------------------------------------------------------
    @property
    def prior_net(self) -> IntermediatePrior | None:
        """PO-MPC's intermediate prior π_θp (None unless ``kl_prior='intermediate'``)."""
        return None if self.kl_prior is None else self.kl_prior.net

    def _policy_kl(self, obs: Tensor, anchor: Tensor) -> Tensor:
        """PO-MPC's KL term per state ``[N]`` between π_θ(·|s) and ``anchor`` (`KLPrior.policy_kl`)."""
        return self.kl_prior.policy_kl(self.policy, obs, anchor)

    @torch.no_grad()
    def _virtual_targets(self, virtual: VirtualBatch) -> tuple[Samples, dict[str, float]]:
        """Virtual samples with path λ-return targets (raw units), and their diagnostics
        (`learners.ppo_loss.virtual_diagnostics`)."""
        cfg = self.config
        heads, prior = self._critic(virtual.obs)
        v_bar = self.values.scale.denormalize((heads + prior).mean(-1))
        # the λ-return never reads V(path_obs[:, 0]) (it cancels): evaluate the critic on the
        # H later path observations only and put V̄(s_t) in column 0
        path_values = torch.cat((v_bar[:, None], self._critic_mean(virtual.path_obs[:, 1:])), 1)
        ret = virtual_lambda_return(
            virtual.path_rewards, path_values, virtual.path_terminated, cfg.gamma, cfg.gae_lambda
        )
        adv = ret - v_bar
        tb = TrainBatch(
            virtual.obs, virtual.actions, virtual.logp,
            normalise(adv) if cfg.normalize_advantage else adv, ret,
            self._boot(virtual.size, self.generators["virtual"]),
        )  # fmt: skip
        return Samples(tb, prior), virtual_diagnostics(v_bar, ret, virtual.path_terminated)

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
        in_units = lambda s: s._replace(
            batch=s.batch._replace(returns=scale.normalize(s.batch.returns))
        )
        return in_units(train), None if virt is None else in_units(virt)

    # ---- the update ----------------------------------------------------------------------
    def update(self, real: RealBatch, virtual: VirtualBatch | None = None) -> dict[str, float]:
        """One learner iteration on a real fragment and (optionally) virtual samples.

        Returns detached floats: ``rho`` (after this iteration), with Alg. 2 ``rho/confidence``
        (ω = its confidence before smoothing, the mean over the iteration's updates) and
        ``rho/Omega`` (Ω, the EMA; this key was ``omega`` before),
        ``ensemble_var`` (Alg. 2's σ̄² on the real batch), ``loss/{policy,value,entropy,total}``
        and ``loss/{policy,value}_virtual`` (means over the steps taken), ``approx_kl``,
        ``clip_fraction``, ``grad_norm``, ``explained_variance[_virtual]``, ``skipped_updates``,
        ``minibatch_updates``, ``rho_updates_skipped``, ``real_samples``, ``virtual_samples``,
        ``virtual_fraction`` (sample mixing), ``log_std``; with a KL prior ``loss/kl``,
        ``kl/{policy_prior,planner_std,weight_max,return_spread}`` and, for the intermediate
        prior, ``loss/kl_prior``, ``kl/intermediate_std``. Loss keys are absent when every step
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
        anchor, kl_metrics = None, {}
        if self.kl_prior is not None:
            anchor, kl_metrics = self.kl_prior.anchor(real, self.policy, self.values.scale.std)
        train, real_values, ev = self._real_targets(real, anchor)
        metrics: dict[str, float] = {"ensemble_var": ensemble_variance(real_values), **kl_metrics}
        rho_steps = RhoSteps(self.rho_schedule)  # Alg. 2, counting what it skips
        if self.influence_config.update_every == "iteration":
            rho_steps(real_values)
        virt = None
        if virtual is not None:
            virt, diagnostics = self._virtual_targets(virtual)
            metrics.update(diagnostics)
        train, virt = self._scale_values(train, virt)
        if cfg.mixing == "sample" and virt is not None:
            z, idx = bernoulli_mix(
                train.batch.size, self.rho, virt.batch.size, self.generators["mix"]
            )
            mixed = mix_batches(train.batch, virt.batch, z, idx)  # eq. (8): trained unweighted
            train = Samples(mixed, self._critic(mixed.obs)[1])
            metrics["virtual_fraction"] = float(z.float().mean())
            virt = None

        watch = self.bound is not None  # the bound's estimates: the policy and V̄ before
        if watch:
            flat_obs = real.obs.reshape(-1, self.nobs)
            with torch.no_grad():
                before = (self.policy(flat_obs), self.policy.log_std.detach().clone())
            v_before = self._critic_mean(real.obs)
        per_minibatch = self.influence_config.update_every == "minibatch"
        step_metrics, taken, skipped = self.engine.run(
            train, virt, self.rho, rho_steps if per_minibatch else None
        )
        metrics.update(step_metrics)
        if watch:
            with torch.no_grad():
                moved = gaussian_policy_kl(*before, self.policy(flat_obs), self.policy.log_std)
            metrics.update(self.bound.figures(
                real.rewards, real.terminated, real.truncated, v_before, moved, self.rho,
                self._obs_scale(real.next_obs), real.next_obs, real.model_obs,
                real.model_rewards, real.plan_kl,
            ))  # fmt: skip
            metrics.update(self._rho0_rule(metrics, train.batch.returns))
        self.iteration += 1
        self.skipped_updates += skipped
        metrics.update(
            rho=self.rho,
            explained_variance=ev,
            skipped_updates=float(skipped),
            minibatch_updates=float(taken),
            rho_updates_skipped=float(rho_steps.skipped),
            real_samples=float(T * B),
            virtual_samples=float(0 if virtual is None else virtual.size),
            log_std=float(self.policy.log_std.detach().mean()),
        )
        if self.rho_schedule.kind == "adaptive":  # Alg. 2's ω (mean over the updates) and Ω
            metrics["rho/confidence"] = rho_steps.mean_confidence
            metrics["rho/Omega"] = self.rho_schedule.omega
        if self.values.scale.enabled:
            metrics["value_scale/mean"] = float(self.values.scale.shift)
            metrics["value_scale/std"] = float(self.values.scale.std)
        return metrics

    def _obs_scale(self, next_obs: Tensor) -> Tensor:
        """The observations' std per component (the normaliser's, else the fragment's)."""
        stats = self.policy.normalizer
        var = stats.stats.var if stats.enabled else next_obs.reshape(-1, self.nobs).var(0)
        return var.to(next_obs.dtype).sqrt().clamp(min=1e-6)

    def _rho0_rule(self, figures: dict[str, float], returns: Tensor) -> dict[str, float]:
        """ρ0 from the bound's estimates (``InfluenceRatioConfig.rho0_rule="bound"``, docs/rho.md):
        over the first ``rho0_rule_iterations`` iterations ρ stays at ``rho0`` (the ceiling),
        the model terms per unit ρ (eq. 12) are averaged against the spread of the returns,
        ``b = model_per_rho / std(returns)``; then ρ is set to ``ρ0 = rho0 / (1 + b)``
        (an exact model: ``rho0``), logged with its inputs as ``rho/rule_*``."""
        cfg = self.influence_config
        if cfg.rho0_rule != "bound" or self.iteration > cfg.rho0_rule_iterations:
            return {}
        per_rho = figures.get("bound/model_per_rho", float("nan"))
        if self.values.scale.enabled:
            spread = float(self.values.scale.std)
        else:
            spread = float(returns.std())
        self._rule_inputs.append((per_rho, spread))
        if self.iteration < cfg.rho0_rule_iterations:
            return {}
        per_rho = float(np.nanmean([p for p, _ in self._rule_inputs]))
        spread = float(np.mean([s for _, s in self._rule_inputs]))
        b = per_rho / spread if spread > 0 and math.isfinite(per_rho) else 0.0
        rho0 = rho0_from_bias(cfg.rho0, b)
        self.rho_schedule.rho = rho0
        return {"rho/rule_rho0": rho0, "rho/rule_bias": b, "rho/rule_model_per_rho": per_rho,
                "rho/rule_return_std": spread}  # fmt: skip

    # ---- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A snapshot (deep copy) of everything a resumed run needs: networks, optimizer, ρ
        state, counters, RNG states, and the configs (for the record)."""
        if isinstance(self.engine, FusedEngine):  # Adam's state in torch.optim.Adam's format
            self.engine.export_optimizer(self.optimizer)
        return copy.deepcopy(
            {
                "policy": self.policy.state_dict(),
                "values": self.values.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "rho": self.rho_schedule.state_dict(),
                "bound": None if self.bound is None else self.bound.state_dict(),
                "rule_inputs": [list(x) for x in self._rule_inputs],
                "iteration": self.iteration,
                "skipped_updates": self.skipped_updates,
                "generators": {k: g.get_state() for k, g in self.generators.items()},
                "configs": {
                    "ppo": dataclasses.asdict(self.config),
                    "networks": dataclasses.asdict(self.network_config),
                    "influence_ratio": dataclasses.asdict(self.influence_config),
                    "kl": dataclasses.asdict(self.kl_config),
                },
                **({} if self.kl_prior is None else self.kl_prior.state_dict()),
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
        if isinstance(self.engine, FusedEngine):
            self.engine.import_optimizer(self.optimizer)
        self.rho_schedule.load_state_dict(state["rho"])
        if self.bound is not None and state.get("bound") is not None:
            self.bound.load_state_dict(state["bound"])
        self._rule_inputs = [tuple(x) for x in state.get("rule_inputs", [])]
        self.iteration = int(state["iteration"])
        self.skipped_updates = int(state["skipped_updates"])
        for k, g in self.generators.items():
            g.set_state(state["generators"][k])
        if self.kl_prior is not None:
            self.kl_prior.load_state_dict(state)

    def non_finite(self) -> list[str]:
        """The tensors of the learner's state that hold a NaN or inf: the networks' parameters
        and buffers (observation statistics, value scale, PopArt layer), named as in
        `get_weights` (``policy.<name>``, ``values.<name>``); empty when all are finite."""
        bad = []
        for part, module in (("policy", self.policy), ("values", self.values)):
            for name, t in module.state_dict().items():
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    bad.append(f"{part}.{name}")
        return bad

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
