"""The autograd engine of `learners.ppo.PPOLearner`: the minibatch loop on the modules.

Each step is `learners.ppo_loss.minibatch_loss` (eq. 10), ``backward``, gradient clipping
(per network or joint) and a step of ``torch.optim.Adam`` (fused kernel); step metrics stay
tensors until one transfer at the end. This is the learner's loop as it was before the
fused engine (`learners.fused_step`) replaced it: ``PPOLearner(engine="autograd")`` runs it,
`python -m rlmpc.bench.update` times both, and the tests check the fused engine against
it. Works with any module that autograd can differentiate (hooks, anomaly checks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from learners.batches import Samples
from learners.ppo_loss import LossTerms, minibatch_loss

if TYPE_CHECKING:
    from learners.ppo import PPOLearner

STEP_METRICS = (
    "loss/policy", "loss/value", "loss/entropy", "loss/total", "grad_norm", "approx_kl",
    "clip_fraction",
)  # fmt: skip
VIRTUAL_METRICS = ("loss/policy_virtual", "loss/value_virtual")
KL_METRICS = ("loss/kl",)


class AutogradEngine:
    """``torch.optim.Adam`` over the modules' parameters, and the loop that steps it."""

    def __init__(self, learner: PPOLearner) -> None:
        self.learner = learner
        self.params = [*learner.policy.parameters(), *learner.values.parameters()]
        self.groups = [list(learner.policy.parameters()), list(learner.values.parameters())]

    def clip_gradients(self) -> Tensor:
        """Clip to ``max_grad_norm`` (jointly, or per network); returns the total norm before."""
        cfg = self.learner.config
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
        """``[K]`` metrics of one step taken, in the order of `STEP_METRICS` (+ virtual, + KL)."""
        ratio = torch.exp(terms.log_ratio)
        row = [
            terms.policy.mean(), terms.value.mean(), -terms.entropy.mean(), loss, grad_norm,
            ((ratio - 1.0) - terms.log_ratio).mean(),
            ((ratio - 1.0).abs() > self.learner.config.clip_range).to(ratio.dtype).mean(),
        ]  # fmt: skip
        if vterms is not None:
            row += [vterms.policy.mean(), vterms.value.mean()]
        if kl is not None:
            row += [kl.mean()]
        return torch.stack(row)

    def run(self, train: Samples, virt: Samples | None) -> tuple[dict[str, float], int, int]:
        """``n_epochs`` passes of minibatch steps: (the steps' mean metrics, steps taken,
        steps skipped)."""
        lrn = self.learner
        cfg, device, optimizer = lrn.config, lrn.device, lrn.optimizer
        logs: list[Tensor] = []  # one [K] row of detached metrics per step taken
        skipped = 0
        for _ in range(cfg.n_epochs):
            # one gather per buffer per epoch; minibatches are consecutive views of it
            perm, vidx = lrn.draw_epoch(train.batch.size, None if virt is None else virt.batch.size)
            minibatches = train.index(perm.to(device)).split(cfg.batch_size)
            vminibatches: list[Samples | None] = [None] * len(minibatches)
            if virt is not None:
                vminibatches = virt.index(vidx.flatten().to(device)).split(vidx.shape[1])
            for mb, vmb in zip(minibatches, vminibatches, strict=True):
                if lrn.influence_config.update_every == "minibatch":
                    with torch.no_grad():
                        lrn.rho_skipped += lrn.update_rho(lrn.values(mb.batch.obs, mb.prior))
                loss, terms, vterms = minibatch_loss(lrn.policy, lrn.values, mb, vmb, lrn.rho, cfg)
                kl = None
                if mb.anchor is not None:  # PO-MPC: L_PPO + λ KL(π_θ ‖ π_prior) on the real states
                    kl = lrn.kl_prior.policy_kl(lrn.policy, mb.batch.obs, mb.anchor)
                    if lrn.kl_config.kl_lambda > 0:
                        loss = loss + lrn.kl_config.kl_lambda * kl.mean()
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
            keys = STEP_METRICS if virt is None else STEP_METRICS + VIRTUAL_METRICS
            keys += KL_METRICS if train.anchor is not None else ()
            metrics.update(zip(keys, torch.stack(logs).mean(0).tolist(), strict=True))
        return metrics, len(logs), skipped
