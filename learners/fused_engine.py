"""The fused engine of `learners.ppo.PPOLearner`: the minibatch loop on `learners.fused_step`.

Per iteration the training samples (real, then virtual) become one matrix of columns (the
normalised observation, action, log-probability, advantage, target, bootstrap weights and
prior of each sample, and with PO-MPC's KL prior π_prior's mean and log-std at the real
states: the observation statistics do not change inside an iteration); per
epoch one gather lays the epoch's minibatches out side by side, drawn from the learner's
generators exactly as the autograd engine draws them (`learners.engine.Draws`), and each
minibatch is a view of it. Adam's state lives in flat tensors here and is handed to
``PPOLearner.optimizer`` (``torch.optim.Adam``'s format) for checkpoints.
"""

from __future__ import annotations

import torch
from torch import Tensor

from learners.batches import Samples
from learners.engine import Draws, EngineResult, RhoSteps, step_metric_keys
from learners.fused import FlatNetworks
from learners.fused_step import LOG_SQRT_2PI, Columns, FusedSteps
from learners.policy import GaussianPolicy, ValueEnsemble
from learners.pompc_config import KLPriorConfig
from learners.ppo_loss import PPOConfig


class FusedEngine:
    """`FlatNetworks` of the learner's modules, `FusedSteps` on them, and the epoch loop
    (`learners.engine.Engine`)."""

    def __init__(
        self, policy: GaussianPolicy, values: ValueEnsemble, config: PPOConfig, draws: Draws,
        kl: KLPriorConfig | None = None,
    ) -> None:  # fmt: skip
        self.policy, self.config, self.draws = policy, config, draws
        self.kl_lambda = kl.kl_lambda if kl is not None else 0.0
        self.nets = FlatNetworks(policy, values)
        self.steps = FusedSteps(self.nets, config, kl)

    def critic(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """The heads' trained parts and priors ``([..., D], [..., D])`` (`FlatNetworks.critic`)."""
        self.nets.pack()
        return self.nets.critic(obs)

    def _columns(self, s: Samples, anchor: bool = False) -> Tensor:
        """``[n, F]``: one row per sample, fields in `learners.fused_step.Columns` order;
        ``anchor``: with π_prior's rows (zeros where ``s`` has none: virtual samples)."""
        b, na = s.batch, self.nets.na
        x = self.policy.normalizer(b.obs)
        lpc = b.logp + na * LOG_SQRT_2PI
        fields = [x, x.new_ones(b.size, 1), b.actions, lpc[:, None], b.advantages[:, None], b.returns[:, None],
                  b.boot, s.prior]  # fmt: skip
        if anchor:
            fields.append(s.anchor if s.anchor is not None else x.new_zeros(b.size, 2 * na))
        return torch.cat(fields, 1)

    def run(
        self, train: Samples, virt: Samples | None, rho: float, rho_steps: RhoSteps | None
    ) -> EngineResult:
        """``n_epochs`` passes of minibatch steps at ``rho`` (or ρ from ``rho_steps`` before
        each minibatch). At ρ = 0 under eq. (10) the virtual minibatches are evaluated for
        their metrics only."""
        steps, cfg = self.steps, self.config
        device = self.policy.log_std.device
        self.nets.pack()
        n_train, n_virt = train.batch.size, 0 if virt is None else virt.batch.size
        anchor = train.anchor is not None  # PO-MPC's KL term on the real columns
        pool = self._columns(train, anchor)
        if virt is not None:
            pool = torch.cat((pool, self._columns(virt, anchor)))
        bs = cfg.batch_size
        sizes = [min(bs, n_train - i) for i in range(0, n_train, bs)]
        vsize = self.draws.chunk_size(n_virt, len(sizes)) if virt is not None else 0
        total = n_train + len(sizes) * vsize
        rows, block = pool.new_empty(total, pool.shape[1]), pool.new_empty(pool.shape[1], total)
        shadow = virt is not None and rho == 0.0 and cfg.mixing == "loss"
        plan: list[tuple[Columns, int, int, Columns | None]] = []
        off = 0
        for n in sizes:  # the epoch's minibatches: n real columns, then vsize virtual ones
            if shadow:
                main = steps.columns(block[:, off : off + n], anchor)
                sh = steps.columns(block[:, off + n : off + n + vsize], anchor)
                plan.append((main, n, 0, sh._replace(anchor=None)))  # metrics only: no KL
            else:
                plan.append(
                    (steps.columns(block[:, off : off + n + vsize], anchor), n, vsize, None)
                )
            off += n + vsize
        steps.begin(cfg.n_epochs * len(sizes))
        mixed = cfg.mixing == "loss"
        for epoch in range(cfg.n_epochs):
            perm, vidx = self.draws.epoch(n_train, n_virt if virt is not None else None)
            idx = torch.empty(total, dtype=torch.long)
            off, start = 0, 0
            for k, n in enumerate(sizes):
                idx[off : off + n] = perm[start : start + n]
                if vsize:
                    idx[off + n : off + n + vsize] = vidx[k] + n_train
                off, start = off + n + vsize, start + n
            torch.index_select(pool, 0, idx.to(device), out=rows)
            block.copy_(rows.t())
            for k, (cols, n_real, n_virtual, sh) in enumerate(plan):
                steps.step(cols, n_real, n_virtual, rho, epoch * len(sizes) + k,
                           mixed=mixed, shadow=sh, rho_fn=rho_steps)  # fmt: skip
        self.nets.unpack()
        return self._metrics(virt is not None, mixed, anchor)

    def _metrics(self, virtual: bool, mixed: bool, kl: bool) -> EngineResult:
        """The mean of each step metric over the steps taken (one host transfer)."""
        s, cfg = self.steps, self.config
        taken = s.taken.bool()
        n = int(taken.sum())
        skipped = len(s.rhos) - n
        if n == 0:
            return EngineResult({}, 0, skipped)
        q = s.q_means[taken]
        rho = torch.tensor(s.rhos, dtype=q.dtype, device=q.device)[taken]
        entropy = s.entropy_sums[taken] + self.nets.na * (0.5 + LOG_SQRT_2PI)
        objective = lambda m: -q[:, 0, m] + cfg.vf_coef * q[:, 1, m] - cfg.ent_coef * entropy
        loss = objective(0)
        if mixed:
            loss = (1.0 - rho) * loss + (rho * objective(1) if virtual else 0.0)
        kl_means = s.kl_means[taken]
        lam = self.kl_lambda
        if kl and lam > 0:  # PO-MPC: L_PPO + λ mean KL (λ = 0: logged only, as autograd)
            loss = loss + lam * kl_means
        rows = [
            -q[:, 0, 0],
            q[:, 1, 0],
            -entropy,
            loss,
            s.grad_norms[taken],
            q[:, 2, 0],
            q[:, 3, 0],
        ]
        if virtual:
            rows += [-q[:, 0, 1], q[:, 1, 1]]
        if kl:
            rows += [kl_means]
        values = torch.stack(rows).mean(1).tolist()
        return EngineResult(
            dict(zip(step_metric_keys(virtual, kl), values, strict=True)), n, skipped
        )

    # ---- Adam's state in torch.optim.Adam's format -----------------------------------------
    @torch.no_grad()
    def export_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Put Adam's state (copies) into ``optimizer.state``, as its own ``step`` would have."""
        optimizer.state.clear()
        if float(self.steps.adam_step) == 0.0:
            return
        s = self.steps
        for k, (param, _) in enumerate(self.nets.pairs):
            optimizer.state[param] = {
                "step": s.adam_step.clone(),
                "exp_avg": self.nets.view(s.exp_avg, k).clone(
                    memory_format=torch.contiguous_format
                ),
                "exp_avg_sq": self.nets.view(s.exp_avg_sq, k).clone(
                    memory_format=torch.contiguous_format
                ),
            }

    @torch.no_grad()
    def import_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Take Adam's state from ``optimizer.state`` (zeros where it has none)."""
        s = self.steps
        for t in (s.exp_avg, s.exp_avg_sq, s.adam_step):
            t.zero_()
        for k, (param, _) in enumerate(self.nets.pairs):
            state = optimizer.state.get(param)
            if state:
                self.nets.view(s.exp_avg, k).copy_(state["exp_avg"])
                self.nets.view(s.exp_avg_sq, k).copy_(state["exp_avg_sq"])
                s.adam_step.copy_(state["step"])
