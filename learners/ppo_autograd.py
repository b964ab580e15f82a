"""The autograd engine of `learners.ppo.PPOLearner`: the minibatch loop on the modules.

Each step is `learners.ppo_loss.minibatch_loss` (eq. 10), ``backward``, gradient clipping
(per network or joint) and a step of ``torch.optim.Adam`` (fused kernel); step metrics stay
tensors until one transfer at the end. This is the learner's loop as it was before the
fused engine (`learners.fused_step`) replaced it: ``PPOLearner(engine="autograd")`` runs it,
`python -m rlmpc.bench.update` times both, and the tests check the fused engine against
it. Works with any module that autograd can differentiate (hooks, anomaly checks).
"""

from __future__ import annotations

import torch
from torch import Tensor

from learners.batches import Samples
from learners.engine import Draws, EngineResult, RhoSteps, step_metric_keys
from learners.policy import GaussianPolicy, ValueEnsemble
from learners.pompc import KLPrior
from learners.ppo_loss import LossTerms, PPOConfig, minibatch_loss


class AutogradEngine:
    """``optimizer`` (``torch.optim.Adam`` over the modules' parameters) and the loop that
    steps it (`learners.engine.Engine`)."""

    def __init__(
        self, policy: GaussianPolicy, values: ValueEnsemble, optimizer: torch.optim.Optimizer,
        config: PPOConfig, draws: Draws, kl_prior: KLPrior | None = None,
    ) -> None:  # fmt: skip
        self.policy, self.values, self.optimizer = policy, values, optimizer
        self.config, self.draws, self.kl_prior = config, draws, kl_prior
        self.params = [*policy.parameters(), *values.parameters()]
        self.groups = [list(policy.parameters()), list(values.parameters())]

    @torch.no_grad()
    def critic(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """The heads' trained parts and fixed priors on ``obs`` ``([..., D], [..., D])``."""
        return self.values._stacked(self.values.heads, obs), self.values.prior_values(obs)

    def clip_gradients(self) -> Tensor:
        """Clip to ``max_grad_norm`` (jointly, or per network); returns the total norm before."""
        cfg = self.config
        clip = torch.nn.utils.clip_grad_norm_
        if not cfg.clip_grad_per_network:
            return clip(self.params, cfg.max_grad_norm)
        norms = [clip(group, cfg.max_grad_norm) for group in self.groups]
        return torch.linalg.vector_norm(torch.stack(norms))

    @torch.no_grad()
    def step_metrics(
        self, loss: Tensor, grad_norm: Tensor, terms: LossTerms, vterms: LossTerms | None,
        kl: Tensor | None = None,
    ) -> Tensor:  # fmt: skip
        """``[K]`` metrics of one step taken, in the order of `learners.engine.step_metric_keys`."""
        ratio = torch.exp(terms.log_ratio)
        row = [
            terms.policy.mean(), terms.value.mean(), -terms.entropy.mean(), loss, grad_norm,
            ((ratio - 1.0) - terms.log_ratio).mean(),
            ((ratio - 1.0).abs() > self.config.clip_range).to(ratio.dtype).mean(),
        ]  # fmt: skip
        if vterms is not None:
            row += [vterms.policy.mean(), vterms.value.mean()]
        if kl is not None:
            row += [kl.mean()]
        return torch.stack(row)

    def run(
        self, train: Samples, virt: Samples | None, rho: float, rho_steps: RhoSteps | None
    ) -> EngineResult:
        """``n_epochs`` passes of minibatch steps at ``rho`` (or ρ from ``rho_steps`` before
        each minibatch)."""
        cfg, optimizer, kl_prior = self.config, self.optimizer, self.kl_prior
        device = self.policy.log_std.device
        logs: list[Tensor] = []  # one [K] row of detached metrics per step taken
        skipped = 0
        for _ in range(cfg.n_epochs):
            # one gather per buffer per epoch; minibatches are consecutive views of it
            perm, vidx = self.draws.epoch(
                train.batch.size, None if virt is None else virt.batch.size
            )
            minibatches = train.index(perm.to(device)).split(cfg.batch_size)
            vminibatches: list[Samples | None] = [None] * len(minibatches)
            if virt is not None:
                vminibatches = virt.index(vidx.flatten().to(device)).split(vidx.shape[1])
            for mb, vmb in zip(minibatches, vminibatches, strict=True):
                if rho_steps is not None:
                    with torch.no_grad():
                        rho = rho_steps(self.values(mb.batch.obs, mb.prior))
                loss, terms, vterms = minibatch_loss(self.policy, self.values, mb, vmb, rho, cfg)
                kl = None
                if mb.anchor is not None:  # PO-MPC: L_PPO + λ KL(π_θ ‖ π_prior) on the real states
                    kl = kl_prior.policy_kl(self.policy, mb.batch.obs, mb.anchor)
                    if kl_prior.config.kl_lambda > 0:
                        loss = loss + kl_prior.config.kl_lambda * kl.mean()
                    else:
                        kl = kl.detach()
                optimizer.zero_grad(set_to_none=True)
                if not bool(torch.isfinite(loss)):
                    skipped += 1
                    continue
                loss.backward()
                grad_norm = self.clip_gradients()
                if not bool(torch.isfinite(grad_norm)):
                    optimizer.zero_grad(set_to_none=True)
                    skipped += 1
                    continue
                optimizer.step()
                logs.append(self.step_metrics(loss, grad_norm, terms, vterms, kl))
        metrics: dict[str, float] = {}
        if logs:  # one host transfer for all of them
            keys = step_metric_keys(virt is not None, train.anchor is not None)
            metrics.update(zip(keys, torch.stack(logs).mean(0).tolist(), strict=True))
        return EngineResult(metrics, len(logs), skipped)
