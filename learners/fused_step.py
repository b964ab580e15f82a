"""PPO's minibatch step on `learners.fused.FlatNetworks`, with its gradient written out by hand.

One step computes what `learners.ppo_loss.minibatch_loss`, ``backward``, the per-network
clip and Adam compute in the autograd engine (`learners.ppo_autograd`), on the stacked
layout: a layer of all G = D + 1 networks is one batched matmul in the sigmoid form
(``tanh z = 2σ(2z) - 1``, the affine maps folded into derived weights: `FusedSteps.derive`;
layer 0's bias by a row of ones under the observations), the loss's gradient is a few dozen
kernels over the minibatch's columns, and clipping and Adam act on one flat gradient. No
autograd graph, no allocation, no host transfer: a step whose loss or gradient norm is not finite is skipped
on the device (Adam's ``found_inf``) and left out of the iteration's metrics.

Per sample ``i`` (weight ``c_i``: ``(1-ρ)/n_real`` on the real columns and ``ρ/n_virtual``
on the virtual ones under eq. (10), ``1/n`` otherwise), ``r = π(a|s)/π_old(a|s)``, ``A`` the
advantage, ``R`` the value target, ``b`` the bootstrap weights, ``z = (a - μ)/σ``::

    L = Σ_i c_i [ -min(r A, clip(r) A) + vf · (1/D) Σ_d b_d (V_d - R)² - ent · H ]
    ∂L/∂log π(a|s) = -c_i r A · [r A <= clip(r) A]        (torch's min/clamp gradients)
    ∂L/∂μ = ∂L/∂log π · z/σ,    ∂L/∂log σ = Σ_i ∂L/∂log π · (z² - 1) - ent Σ_i c_i
    ∂L/∂V_d = c_i · vf · (2/D) · b_d (V_d - R)

With PO-MPC's KL prior (`learners.pompc`; ``anchor`` rows: π_prior = N(μ_p, σ_p²) per real
column) the loss gains ``λ/n_real · Σ_i KL_i`` over the minibatch's ``n_real`` real columns,
unweighted by ρ, each KL summed over the action's dimensions (σ is the policy's state-free
``log_std``, so its gradient sums over the columns)::

    reverse, KL(π ‖ p) = log σ_p - log σ + (σ² + (μ - μ_p)²) / (2σ_p²) - 1/2:
        ∂/∂μ = (μ - μ_p) / σ_p²,   ∂/∂log σ = σ²/σ_p² - 1
    forward, KL(p ‖ π) = log σ - log σ_p + (σ_p² + (μ - μ_p)²) / (2σ²) - 1/2:
        ∂/∂μ = (μ - μ_p) / σ²,     ∂/∂log σ = 1 - (σ_p² + (μ - μ_p)²) / σ²

``tests/test_fused_step.py`` checks a step against autograd on `minibatch_loss`, and whole
updates against the autograd engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from learners.fused import FlatNetworks
from learners.pompc import KLPriorConfig
from learners.ppo_loss import PPOConfig

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input


class Columns(NamedTuple):
    """A minibatch: one column per sample (views of the epoch's block, `FusedSteps.columns`)."""

    x: Tensor  #: ``[nobs + 1, N]`` normalised observations, then a row of ones (layer 0's bias)
    a: Tensor  #: ``[na, N]`` actions
    lpc: Tensor  #: ``[N]`` log π_old(a|s) + na·log √(2π)
    adv: Tensor  #: ``[N]``
    ret: Tensor  #: ``[N]``
    boot: Tensor  #: ``[D, N]``
    prior: Tensor  #: ``[D, N]``
    #: ``[2·na, N]`` PO-MPC's π_prior, its mean then log-std (read on the real columns only;
    #: filler on virtual ones), or None without a KL prior
    anchor: Tensor | None = None


def rows_of(nobs: int, na: int, D: int, anchor: bool = False) -> list[int]:
    """Row counts of a block, in `Columns` order (with the ``anchor`` rows or without)."""
    return [nobs + 1, na, 1, 1, 1, D, D] + ([2 * na] if anchor else [])


class _Buffers:
    """Activations and per-sample terms for minibatches of N samples, with their views."""

    def __init__(self, nets: FlatNetworks, N: int) -> None:
        G, D, na, like = nets.G, nets.D, nets.na, nets.flat
        h = nets.sizes[1:]
        self.S0, self.E0 = like.new_empty(N, G, h[0]), like.new_empty(N, G, h[0])
        self.S0_flat, self.E0_flat = self.S0.view(N, -1), self.E0.view(N, -1)
        # activations s = σ(2z) [G, N, h_l] (layer 0 is a view of S0) and ∂L/∂y
        self.S = [self.S0.transpose(0, 1), *(like.new_empty(G, N, w) for w in h[1:])]
        self.dY = [like.new_empty(G, N, w) for w in h]
        self.ST = self.S[-1].transpose(1, 2)
        self.out = like.new_empty(G, na, N)  # outputs, transposed: heads row 0, policy all
        self.mu, self.v_out = self.out[D], self.out[:D, 0]
        self.d_out = like.new_zeros(G, na, N)  # the heads' other rows stay 0
        self.d_outT = self.d_out.transpose(1, 2)
        self.d_mu, self.d_v = self.d_out[D], self.d_out[:D, 0]
        self.z, self.zz = like.new_empty(na, N), like.new_empty(na, N)
        self.v, self.bd, self.vv = (like.new_empty(D, N) for _ in range(3))
        self.q = like.new_empty(4, N)  # per sample: min(rA, clip(r)A), value loss, kl, clipped
        self.q_rows = self.q.unbind(0)
        (self.s, self.lr, self.ratio, self.surr1, self.clr, self.surr2, self.gl) = (
            like.new_empty(N) for _ in range(7)
        )
        self.gate = torch.empty(N, dtype=torch.bool, device=like.device)
        # PO-MPC's KL term on the real columns: μ - μ_p, a weight, a product, KL per column
        self.k_diff, self.k_w, self.k_e = (like.new_empty(na, N) for _ in range(3))
        self.kl, self.k_s = like.new_empty(N), like.new_empty(N)


class Weights(NamedTuple):
    """Per-sample loss weights of one minibatch shape and ρ."""

    neg_c: Tensor  #: ``[N]`` -c_i
    cvf: Tensor  #: ``[N]`` c_i · vf · 2/D
    means: Tensor  #: ``[N, 2]`` the means over the real columns and over the virtual ones
    sum_c: float


class FusedSteps:
    """Minibatch steps on a `FlatNetworks`, and Adam's state (module docstring).

    `begin(steps)` starts an iteration of ``steps`` steps; `step` takes one; the logged
    per-step figures are `q_means` (``[steps, 4, 2]``: the real and the virtual means of the
    per-sample terms), `kl_means` (the KL term's mean over the real columns; 0 without
    anchors), `grad_norms`, `entropy_sums` (Σ log σ), `taken` (1 where the step was applied)
    and `rhos`. ``kl``: PO-MPC's prior (its λ and direction), for minibatches with anchors.
    """

    def __init__(
        self, nets: FlatNetworks, config: PPOConfig, kl: KLPriorConfig | None = None
    ) -> None:
        self.nets, self.cfg, self.kl = nets, config, kl
        self.grad, self.exp_avg, self.exp_avg_sq = nets.like(), nets.like(), nets.like()
        self.adam_step = torch.zeros((), dtype=torch.float32, device=nets.device)
        self.g_W, self.g_WoT, self.g_log_std = nets.split(self.grad)
        h = nets.sizes[-1]
        # layer 0 as one [nobs + 1, G·h_1] matrix (weights, then the bias row), the others
        # (weights, bias) views of [G, i + 1, o]
        self.W0, self.g_W0 = nets.W[0].flatten(1), self.g_W[0].flatten(1)
        self.w = [(W[:, :-1], W[:, -1:]) for W in nets.W[1:]]
        self.g_w = [(W[:, :-1], W[:, -1:]) for W in self.g_W[1:]]
        self.wo, self.bo = nets.WoT[..., :h], nets.WoT[..., h:]
        self.g_wo, self.g_bo = self.g_WoT[..., :h], self.g_WoT[..., h:]
        like = nets.flat
        # the sigmoid form's weights (`derive`): layer l >= 1 and the output
        self.A = [like.new_empty(w.shape) for w, _ in self.w]
        self.A_T = [A.transpose(1, 2) for A in self.A]
        self.c = [like.new_empty(b.shape) for _, b in self.w]
        self.Ao, self.co = like.new_empty(self.wo.shape), like.new_empty(self.bo.shape)
        self.in_policy = nets.in_policy
        self._groups = torch.stack((nets.in_policy, nets.in_values))  # [2, numel]
        self._sq, self._scale = like.new_empty(nets.numel), like.new_empty(nets.numel)
        self._norms, self._coef = like.new_empty(2), like.new_empty(2)
        self._coef_rows = self._coef.unbind(0)
        self._gap, self._gsum = like.new_empty(()), like.new_empty(())
        self._inv_std, self._var = like.new_empty(nets.na, 1), like.new_empty(nets.na, 1)
        self._g_kl = like.new_empty(nets.na)
        self._minus1, self._plus1 = like.new_full((), -1.0), like.new_full((), 1.0)
        self._found, self._total = like.new_empty(()), like.new_empty(())
        self._buffers: dict[int, _Buffers] = {}
        self._weights: dict[tuple, Weights] = {}
        self.begin(0)

    def buffers(self, N: int) -> _Buffers:
        if N not in self._buffers:
            self._buffers[N] = _Buffers(self.nets, N)
        return self._buffers[N]

    def weights(self, n_real: int, n_virtual: int, rho: float, mixed: bool) -> Weights:
        """``mixed``: eq. (10)'s ``(1-ρ) L_RL + ρ L_MPPI``; else the plain mean."""
        key = (n_real, n_virtual, rho, mixed)
        if key not in self._weights:
            cfg, like = self.cfg, self.nets.flat
            c_real = (1.0 - rho) / n_real if mixed else 1.0 / n_real
            c = like.new_full((n_real + n_virtual,), c_real)
            means = like.new_zeros(n_real + n_virtual, 2)
            means[:n_real, 0] = 1.0 / n_real
            if n_virtual:
                c[n_real:] = rho / n_virtual
                means[n_real:, 1] = 1.0 / n_virtual
            sum_c = c_real * n_real + (rho if n_virtual else 0.0)
            self._weights[key] = Weights(-c, c * (cfg.vf_coef * 2.0 / self.nets.D), means, sum_c)
        return self._weights[key]

    def begin(self, steps: int) -> None:
        """Storage for the metrics of an iteration of ``steps`` steps."""
        like = self.nets.flat
        self.q_means = like.new_zeros(steps, 4, 2)
        self.grad_norms, self.entropy_sums, self.taken = (like.new_zeros(steps) for _ in range(3))
        self.kl_means = like.new_zeros(steps)
        self._q_rows, self._gn_rows = self.q_means.unbind(0), self.grad_norms.unbind(0)
        self._kl_rows = self.kl_means.unbind(0)
        self._ent_rows, self._taken_rows = self.entropy_sums.unbind(0), self.taken.unbind(0)
        self.rhos: list[float] = []
        self._weights.clear()

    def columns(self, block: Tensor, anchor: bool = False) -> Columns:
        """The `Columns` of a block ``[F, N]`` (rows as `rows_of`, with ``anchor`` rows or not)."""
        nets = self.nets
        parts = block.split(rows_of(nets.nobs, nets.na, nets.D, anchor))
        return Columns(
            parts[0], parts[1], parts[2][0], parts[3][0], parts[4][0], parts[5], parts[6],
            parts[7] if anchor else None,
        )  # fmt: skip

    # ---- the networks ------------------------------------------------------------------
    def derive(self) -> None:
        """The sigmoid form's weights from the parameters (after each Adam step).

        With ``y = tanh z = 2s - 1``, ``s = σ(2z)``, a later layer's ``2z' = 2(yW + b)`` is
        ``s·A + c`` with ``A = 4W``, ``c = 2(b - 1ᵀW)``, and the output ``W_o yᵀ + b_o`` is
        ``(2W_o) sᵀ + (b_o - W_o 1)``: one matmul and one σ per hidden layer, no affine pass.
        """
        for (w, b), A, c in zip(self.w, self.A, self.c, strict=True):
            torch.mul(w, 4.0, out=A)
            torch.sum(w, 1, keepdim=True, out=c)
            torch.sub(b, c, out=c).mul_(2.0)
        torch.mul(self.wo, 2.0, out=self.Ao)
        torch.sum(self.wo, 2, keepdim=True, out=self.co)
        torch.sub(self.bo, self.co, out=self.co)

    def forward(self, x: Tensor, buf: _Buffers) -> None:
        """All G networks on ``x [nobs + 1, N]`` (`Columns.x`): activations ``buf.S`` (the
        sigmoid form, `derive`; call it first), outputs ``buf.out``."""
        s0 = buf.S0_flat
        torch.addmm(s0, x.t(), self.W0, beta=0.0, alpha=2.0, out=s0)  # 2z, bias by the ones row
        torch.sigmoid_(s0)
        for A, c, s, y in zip(self.A, self.c, buf.S[:-1], buf.S[1:], strict=True):
            torch.sigmoid_(torch.baddbmm(c, s, A, out=y))
        torch.baddbmm(self.co, self.Ao, buf.ST, out=buf.out)

    def backward(self, x: Tensor, buf: _Buffers) -> None:
        """The parameters' gradient (into `grad`) from ``buf.d_out`` (∂L/∂outputs).

        In the sigmoid form (`derive`): ``∂z = 4 e`` with ``e = ∂L/∂y · s(1 - s)``
        (``1 - y² = 4s(1 - s)``); a weight's gradient ``yᵀ ∂z = 8 sᵀe - 4·1(1ᵀe)`` and its
        bias's ``4·1ᵀe``; ``∂L/∂y`` of the layer below is ``e Aᵀ``. The output layer's
        ``∂W_o = ∂out · y = 2 ∂out·s - (∂out·1) 1ᵀ``.
        """
        torch.sum(buf.d_out, 2, keepdim=True, out=self.g_bo)
        torch.baddbmm(self.g_bo, buf.d_out, buf.S[-1], beta=-1.0, alpha=2.0, out=self.g_wo)
        torch.bmm(buf.d_outT, self.wo, out=buf.dY[-1])
        for l in reversed(range(1, len(buf.S))):
            e = _sigmoid_backward(buf.dY[l], buf.S[l], grad_input=buf.dY[l])
            gw, gb = self.g_w[l - 1]
            torch.sum(e, 1, keepdim=True, out=gb).mul_(4.0)
            torch.baddbmm(gb, buf.S[l - 1].transpose(1, 2), e, beta=-1.0, alpha=8.0, out=gw)
            torch.bmm(e, self.A_T[l - 1], out=buf.dY[l - 1])
        _sigmoid_backward(buf.dY[0], buf.S[0], grad_input=buf.E0.transpose(0, 1))
        torch.addmm(self.g_W0, x, buf.E0_flat, beta=0.0, alpha=4.0, out=self.g_W0)

    # ---- one step ----------------------------------------------------------------------
    def step(self, cols: Columns, n_real: int, n_virtual: int, rho: float, index: int, *,
             mixed: bool = True, shadow: Columns | None = None,
             rho_fn: Callable[[Tensor], float] | None = None) -> None:  # fmt: skip
        """Step ``index`` of the iteration on a minibatch of ``n_real`` then ``n_virtual``
        columns.

        ``shadow``: virtual columns evaluated for the metrics only (eq. 10 at ρ = 0: they
        add nothing to the gradient, a non-finite one still skips the step, as in
        `learners.ppo_loss.minibatch_loss`). ``rho_fn(values [n_real, D]) -> ρ``: ρ is
        updated on this minibatch's real columns first (``update_every="minibatch"``).
        """
        cfg = self.cfg
        buf = self.buffers(n_real + n_virtual)
        self.derive()
        self.forward(cols.x, buf)
        if rho_fn is not None:
            rho = rho_fn(torch.add(buf.v_out[:, :n_real], cols.prior[:, :n_real]).t())
        self.rhos.append(rho)
        w = self.weights(n_real, n_virtual, rho, mixed)
        log_std_sum = torch.sum(self.nets.log_std, 0, out=self._ent_rows[index])
        torch.exp(self.nets.log_std.neg(), out=self._inv_std[:, 0])
        self._terms(cols, buf, log_std_sum)
        torch.mm(buf.q, w.means, out=self._q_rows[index])
        # ∂L/∂outputs
        torch.le(buf.surr1, buf.surr2, out=buf.gate)
        torch.mul(buf.surr1, buf.gate, out=buf.gl)
        buf.gl.mul_(w.neg_c)  # ∂L/∂log π(a|s)
        torch.mul(buf.z, buf.gl, out=buf.d_mu).mul_(self._inv_std)
        torch.mv(buf.zz, buf.gl, out=self.g_log_std)
        self.g_log_std.sub_(torch.sum(buf.gl, 0, out=self._gsum))
        if cfg.ent_coef:
            self.g_log_std.sub_(cfg.ent_coef * w.sum_c)
        torch.mul(buf.bd, w.cvf, out=buf.d_v)
        if cols.anchor is not None:
            self._kl_term(cols.anchor, buf, n_real, index, log_std_sum)
        self.backward(cols.x, buf)
        norm = self.clip(index)
        if shadow is not None:
            sb = self.buffers(shadow.x.shape[1])
            self.forward(shadow.x, sb)
            self._terms(shadow, sb, log_std_sum)
            torch.mean(sb.q, 1, keepdim=True, out=self._q_rows[index][:, 1:])
        # a step whose loss or gradient is not finite is skipped (on the device)
        total = torch.sum(self._q_rows[index], (0, 1), out=self._total).add_(norm)
        if cols.anchor is not None and self.kl.kl_lambda > 0:  # λ = 0: the KL is only logged
            total.add_(self._kl_rows[index])
        finite = torch.isfinite(total)
        self._taken_rows[index].copy_(finite)
        torch.logical_not(finite, out=self._found)
        self.adam_step.add_(self._taken_rows[index])
        torch._fused_adam_(
            [self.nets.flat], [self.grad], [self.exp_avg], [self.exp_avg_sq], [],
            [self.adam_step], lr=cfg.learning_rate, beta1=0.9, beta2=0.999, weight_decay=0.0,
            eps=cfg.adam_eps, amsgrad=False, maximize=False, grad_scale=None,
            found_inf=self._found,
        )  # fmt: skip

    def _terms(self, cols: Columns, buf: _Buffers, log_std_sum: Tensor) -> None:
        """The per-sample terms (``buf.q``) and what the gradient reuses."""
        cfg = self.cfg
        torch.sub(cols.a, buf.mu, out=buf.z).mul_(self._inv_std)
        torch.mul(buf.z, buf.z, out=buf.zz)
        torch.sum(buf.zz, 0, out=buf.s)
        torch.add(cols.lpc, log_std_sum, out=buf.lr).add_(buf.s, alpha=0.5).neg_()  # log r
        torch.exp(buf.lr, out=buf.ratio)
        torch.mul(buf.ratio, cols.adv, out=buf.surr1)
        torch.clamp(buf.ratio, 1.0 - cfg.clip_range, 1.0 + cfg.clip_range, out=buf.clr)
        torch.mul(buf.clr, cols.adv, out=buf.surr2)
        q_pol, q_val, q_kl, q_clip = buf.q_rows
        torch.minimum(buf.surr1, buf.surr2, out=q_pol)
        torch.add(buf.v_out, cols.prior, out=buf.v).sub_(cols.ret)  # V_d - R
        torch.mul(buf.v, cols.boot, out=buf.bd)
        torch.mean(torch.mul(buf.bd, buf.v, out=buf.vv), 0, out=q_val)
        torch.sub(buf.ratio, 1.0, out=q_kl).sub_(buf.lr)  # (r - 1) - log r
        torch.ne(buf.clr, buf.ratio, out=q_clip)

    def _kl_term(
        self, anchor: Tensor, buf: _Buffers, n: int, index: int, log_std_sum: Tensor
    ) -> None:
        """PO-MPC's ``λ/n · Σ_i KL_i`` on the first ``n`` (real) columns (module docstring):
        KL per column into ``buf.kl``, its mean into `kl_means`, and, for λ > 0, its gradient
        added to ``buf.d_mu`` and `g_log_std`. Reads `_inv_std` (this step's 1/σ)."""
        kc = self.kl
        if kc is None:
            raise ValueError("the minibatch carries a KL prior but FusedSteps has no KLPriorConfig")
        na, reverse = self.nets.na, kc.kl_direction == "reverse"
        mu, mean_p, log_std_p = buf.mu[:, :n], anchor[:na, :n], anchor[na:, :n]
        diff, w, e = buf.k_diff[:, :n], buf.k_w[:, :n], buf.k_e[:, :n]
        kl, s = buf.kl[:n], buf.k_s[:n]
        torch.sub(mu, mean_p, out=diff)  # μ - μ_p
        torch.mul(diff, diff, out=e)
        if reverse:
            torch.mul(log_std_p, -2.0, out=w).exp_()  # 1/σ_p²
            torch.mul(self.nets.log_std[:, None], 2.0, out=self._var).exp_()  # σ²
            e.add_(self._var).mul_(w)  # (σ² + (μ - μ_p)²) / σ_p²
        else:
            torch.mul(log_std_p, 2.0, out=w).exp_()  # σ_p²
            torch.mul(self._inv_std, self._inv_std, out=self._var)  # 1/σ²
            e.add_(w).mul_(self._var)  # (σ_p² + (μ - μ_p)²) / σ²
        # KL = ±(Σ log σ_p - Σ log σ) + ½ Σ e - na/2, per column
        torch.sum(e, 0, out=kl).mul_(0.5).sub_(0.5 * na)
        torch.sum(log_std_p, 0, out=s)
        if reverse:
            kl.add_(s).sub_(log_std_sum)
        else:
            kl.sub_(s).add_(log_std_sum)
        torch.mean(kl, 0, out=self._kl_rows[index])
        if kc.kl_lambda == 0.0:  # λ = 0: logged, no gradient (the autograd engine's rule)
            return
        c = kc.kl_lambda / n
        if reverse:  # ∂/∂μ = (μ - μ_p)/σ_p², ∂/∂log σ = Σ_i σ²/σ_p² - 1
            buf.d_mu[:, :n].addcmul_(diff, w, value=c)
            torch.sum(w, 1, out=self._g_kl).mul_(self._var[:, 0]).sub_(float(n))
        else:  # ∂/∂μ = (μ - μ_p)/σ², ∂/∂log σ = Σ_i 1 - e
            buf.d_mu[:, :n].addcmul_(diff, self._var, value=c)
            torch.sum(e, 1, out=self._g_kl).neg_().add_(float(n))
        self.g_log_std.add_(self._g_kl, alpha=c)

    def clip(self, index: int) -> Tensor:
        """Clip the gradient to ``max_grad_norm`` per network (or jointly); logs and returns
        the norm before clipping (the norm of the networks' norms)."""
        cfg = self.cfg
        torch.mul(self.grad, self.grad, out=self._sq)
        torch.mv(self._groups, self._sq, out=self._norms)  # the two squared norms
        norm = torch.sum(self._norms, 0, out=self._gn_rows[index]).sqrt_()
        self._norms.sqrt_()
        if cfg.clip_grad_per_network:
            torch.add(self._norms, 1e-6, out=self._coef)
        else:
            self._coef.copy_(norm).add_(1e-6)
        self._coef.reciprocal_().mul_(cfg.max_grad_norm).clamp_(max=1.0)
        torch.sub(self._coef_rows[0], self._coef_rows[1], out=self._gap)
        torch.mul(self.in_policy, self._gap, out=self._scale).add_(self._coef_rows[1])
        self.grad.mul_(self._scale)
        return norm
