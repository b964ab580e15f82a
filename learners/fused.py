"""The policy and the D value heads as one stack of G = D + 1 MLPs in one flat buffer.

`PPOLearner`'s fused engine (`learners.fused_engine`, `learners.fused_step`) runs the
minibatch loop on this layout instead of on the modules: a layer of all G networks is one
matmul (the first, whose input they share, a plain one; the others batched), the policy is
the stack's last member, and the parameters, their gradient and Adam's moments are each one
flat tensor, so that clipping and Adam are a handful of kernels per step.

**Layout** (``h_l`` the hidden widths, rows of ``[in+1, ...]`` blocks: weights, then bias):
layer 0 is ``W[0] [nobs+1, G, h_1]`` (all members side by side: ``x @ W[0]`` is one matmul),
a later hidden layer ``W[l] [G, h_l + 1, h_{l+1}]``, the output layer is stored transposed,
``WoT [G, na, h+1]`` (a value head uses row 0 of its slice; its other ``na-1`` rows are zeros
that never move: their gradient is exactly 0), then ``log_std [na]``. The modules keep their
own (contiguous) parameters: `pack` copies them in before a loop and `unpack` copies the
result back, so the modules that the actors and the checkpoints see are laid out as before.

**Activation.** ``tanh(z) = 2σ(2z) - 1`` (exact; torch's CPU ``tanh`` costs ~4 sigmoids). Both
the training step (`learners.fused_step.FusedSteps.derive`) and `critic` work on ``s = σ(2z)``
directly with weights that absorb both affine maps: for the input ``y = 2s - 1`` of a later
layer, ``2(yW + b) = s·4W + (2b - 2·1ᵀW)``, one matmul and one pass per layer; the first
layer's bias rides on a column of ones under the observations (a bias-free matmul: torch's
``addmm`` copies its bias first, ~2x the product itself at these shapes). Values agree with the modules' to float32 rounding (|Δ| ≲ 2e-6 on O(1)).
"""

from __future__ import annotations

import torch
from torch import Tensor

from learners.policy import GaussianPolicy, ValueEnsemble


class FlatNetworks:
    """The flat parameter layout of a `GaussianPolicy` and a `ValueEnsemble` (module docstring).

    Both networks must share their hidden sizes and observation normaliser (as
    `learners.policy.build_networks` makes them). ``flat``, and every tensor `like` builds,
    holds one value per parameter of the layout; `view` cuts a module parameter's shape out
    of any of them (Adam's moments, gradients).
    """

    def __init__(self, policy: GaussianPolicy, values: ValueEnsemble) -> None:
        linears = [m for m in policy.mean_net if isinstance(m, torch.nn.Linear)]
        hidden = [lin.out_features for lin in linears[:-1]]
        heads = values.heads
        widths = [getattr(heads, f"w{i}").shape[-1] for i in range(heads.num_layers)]
        if widths[:-1] != hidden or widths[-1] != 1:
            raise ValueError(f"policy hidden sizes {hidden} differ from the heads' {widths[:-1]}")
        self.policy, self.values = policy, values
        self.D, self.na, self.nobs = values.ensemble_size, policy.na, policy.nobs
        self.G = G = self.D + 1
        self.sizes = [self.nobs, *hidden]  # hidden layer l maps sizes[l] -> sizes[l+1]
        like = policy.log_std.detach()
        self.dtype, self.device = like.dtype, like.device
        D, na, h = self.D, self.na, self.sizes[-1]
        self._shapes = [(self.nobs + 1, G, hidden[0])]
        self._shapes += [(G, i + 1, o) for i, o in zip(hidden[:-1], hidden[1:], strict=True)]
        self._shapes += [(G, na, h + 1), (na,)]
        self.numel = sum(int(torch.Size(s).numel()) for s in self._shapes)
        self.flat = torch.zeros(self.numel, dtype=self.dtype, device=self.device)
        self.W, self.WoT, self.log_std = self.split(self.flat)
        # (module parameter, the same tensor cut out of `flat`)
        W0, n = self.W[0], self.nobs
        pairs = [(linears[0].weight, W0[:n, D].t()), (linears[0].bias, W0[n, D])]
        pairs += [(heads.w0, W0[:n, :D].transpose(0, 1)), (heads.b0, W0[n:, :D].transpose(0, 1))]
        for l in range(1, len(hidden)):
            i, lin = self.sizes[l], linears[l]
            pairs += [(lin.weight, self.W[l][D, :i].t()), (lin.bias, self.W[l][D, i])]
            pairs += [(getattr(heads, f"w{l}"), self.W[l][:D, :i])]
            pairs += [(getattr(heads, f"b{l}"), self.W[l][:D, i : i + 1])]
        L = len(hidden)
        pairs += [(linears[-1].weight, self.WoT[D, :, :h]), (linears[-1].bias, self.WoT[D, :, h])]
        pairs += [(getattr(heads, f"w{L}"), self.WoT[:D, 0:1, :h].transpose(1, 2))]
        pairs += [(getattr(heads, f"b{L}"), self.WoT[:D, 0:1, h:]), (policy.log_std, self.log_std)]
        by_param = {id(p): (p, v) for p, v in pairs}
        order = [*policy.parameters(), *values.parameters()]  # the optimizer's
        if sorted(map(id, order)) != sorted(by_param):
            raise ValueError("the networks have parameters outside the flat layout")
        self.pairs = [by_param[id(p)] for p in order]
        self._geometry = [(v.shape, v.stride(), v.storage_offset()) for _, v in self.pairs]
        # gradient-clipping groups: 1 on the policy's elements / on the value heads'
        self.in_policy, self.in_values = self.like(), self.like()
        n_policy = len(list(policy.parameters()))
        for k in range(len(self.pairs)):
            self.view(self.in_policy if k < n_policy else self.in_values, k).fill_(1.0)

    # ---- the layout -------------------------------------------------------------------------
    def like(self) -> Tensor:
        """A zero tensor of the layout (gradients, Adam's moments)."""
        return torch.zeros_like(self.flat)

    def split(self, flat: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """``(W [per hidden layer], WoT, log_std)``: views of a tensor of the layout."""
        parts, start = [], 0
        for s in self._shapes:
            n = int(torch.Size(s).numel())
            parts.append(flat[start : start + n].view(s))
            start += n
        return parts[:-2], parts[-2], parts[-1]

    def view(self, flat: Tensor, k: int) -> Tensor:
        """Parameter ``k`` (optimizer order) of a tensor of the layout, in the module's shape."""
        shape, stride, offset = self._geometry[k]
        return flat.as_strided(shape, stride, offset)

    @torch.no_grad()
    def pack(self) -> None:
        """Copy the modules' parameters into `flat`."""
        for k, (param, _) in enumerate(self.pairs):
            self.view(self.flat, k).copy_(param)

    @torch.no_grad()
    def unpack(self) -> None:
        """Copy `flat` back into the modules' parameters."""
        for k, (param, _) in enumerate(self.pairs):
            param.copy_(self.view(self.flat, k))

    # ---- the critic, fast -------------------------------------------------------------------
    def _stacked_critic(self) -> list[tuple[Tensor, Tensor | None]]:
        """The D heads then their D fixed priors (β-scaled) as ``(w, b)`` per layer, in the
        sigmoid form (module docstring): layer 0 ``[nobs + 1, 2D·h]`` (weights, then the bias
        row, for inputs with a column of ones), later layers
        ``([2D, i, o], [2D, 1, o])``, the output ``([2D, i, 1], [2D, 1, 1])``."""
        D, prior, beta = self.D, self.values.prior, self.values.prior_scale
        L = len(self.sizes) - 1
        p = lambda name: getattr(prior, name).to(self.dtype)
        w0 = torch.cat((self.W[0][:-1, :D], p("w0").transpose(0, 1)), 1) * 2.0
        b0 = torch.cat((self.W[0][-1, :D], p("b0")[:, 0]), 0) * 2.0
        out = [(torch.cat((w0.reshape(self.nobs, -1), b0.reshape(1, -1))), None)]
        for l in range(1, L):
            w = torch.cat((self.W[l][:D, :-1], p(f"w{l}")))
            b = torch.cat((self.W[l][:D, -1:], p(f"b{l}")))
            out.append((w * 4.0, (b - w.sum(1, keepdim=True)) * 2.0))
        h = self.sizes[-1]
        w = torch.cat((self.WoT[:D, 0:1, :h].transpose(1, 2), p(f"w{L}") * beta))
        b = torch.cat((self.WoT[:D, 0:1, h:], p(f"b{L}") * beta))
        out.append((w * 2.0, b - w.sum(1, keepdim=True)))
        return out

    @torch.no_grad()
    def critic(self, obs: Tensor, chunk: int = 256) -> tuple[Tensor, Tensor]:
        """The heads' trained parts and their β-scaled priors, ``([..., D], [..., D])``, from raw
        ``obs [..., nobs]`` (`ValueEnsemble`: ``values = heads + prior``, in the heads' units):
        all 2D networks at once, over chunks of ``chunk`` rows. Reads `flat` (`pack` first)."""
        lead, D = obs.shape[:-1], self.D
        x = self.values.normalizer(obs.reshape(-1, self.nobs).to(self.dtype))
        x = torch.cat((x, x.new_ones(x.shape[0], 1)), 1)  # the bias by a column of ones
        n, layers = x.shape[0], self._stacked_critic()
        out = x.new_empty(2 * D, n, 1)
        c = min(chunk, max(n, 1))
        acts: dict[int, list[Tensor]] = {}
        for start in range(0, n, c):
            m = min(c, n - start)
            if m not in acts:  # [m, 2D, h_1], then [2D, m, h_l]
                acts[m] = [x.new_empty(m, 2 * D, self.sizes[1])]
                acts[m] += [x.new_empty(2 * D, m, w) for w in self.sizes[2:]]
            a = acts[m]
            torch.mm(x[start : start + m], layers[0][0], out=a[0].view(m, -1))
            h = torch.sigmoid_(a[0]).transpose(0, 1)  # [2D, m, h_1]
            for (w, b), y in zip(layers[1:-1], a[1:], strict=True):
                h = torch.sigmoid_(torch.baddbmm(b, h, w, out=y))
            # the output as [2D, m, 1] = h w (~2x faster here than wᵀ hᵀ into [2D, 1, m]),
            # its bias added once at the end (a broadcast input makes baddbmm a loop of addmm)
            torch.bmm(h, layers[-1][0], out=out[:, start : start + m])
        out.add_(layers[-1][1])
        parts = out[:, :, 0].t()  # [n, 2D]
        return parts[:, :D].reshape(*lead, D), parts[:, D:].reshape(*lead, D)
