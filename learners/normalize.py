"""Scale-free learning signals: running observation normalisation and value (return) scaling.

* `RunningMeanStd` — running mean and variance of a stream of batches, merged exactly
  (Chan, Golub & LeVeque's parallel update, as in RLlib's ``MeanStdFilter`` and SB3's
  ``RunningMeanStd``).
* `ObsNormalizer` — ``clip((s - μ_s) / sqrt(σ²_s + ε), ±clip)``: the first layer of the policy
  and of every value head. Its statistics are buffers of the networks, so they ship to the
  actors with the weights, live in checkpoints and are used by evaluation; actors and the
  learner apply the same function to real observations and to virtual ones ψ(x̂).
* `ValueScale` — the critic's output units, PopArt-style (van Hasselt et al. 2016): the heads
  fit ``(G - μ_G) / σ_G`` and the critic is ``V = σ_G · v + μ_G``, with ``μ_G, σ_G`` the running
  mean and std of the real value targets. When they change, the heads' last layer is rescaled
  so that V is preserved (the "preserving outputs" half of PopArt).

The learner updates both once per iteration, from the iteration's real data only (the model's
virtual data may be biased): the observation statistics before the targets are computed, the
value scale after (so the targets are computed with the critic the actors used).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RunningMeanStd(nn.Module):
    """Mean and (population) variance ``[n]`` of every row seen so far, as float64 buffers.

    Before the first update: mean 0, variance 1, count 0.
    """

    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("var", torch.ones(n, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Merge the rows of ``x [N, n]`` (N >= 1; non-finite rows are skipped)."""
        x = x.detach().to(self.mean.device, torch.float64).reshape(-1, self.mean.shape[0])
        x = x[torch.isfinite(x).all(-1)]
        n = x.shape[0]
        if n == 0:
            return
        batch_mean = x.mean(0)
        batch_var = x.var(0, correction=0)
        if self.count == 0:
            self.mean.copy_(batch_mean)
            self.var.copy_(batch_var)
            self.count.fill_(n)
            return
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta.square() * self.count * n / total
        self.mean.add_(delta * (n / total))
        self.var.copy_(m2 / total)
        self.count.copy_(total)


class ObsNormalizer(nn.Module):
    """``clip((obs - mean) / sqrt(var + eps), -clip, clip)``; the identity while ``enabled`` is False.

    The statistics (`RunningMeanStd`) change only through `update`; the forward pass is a
    fixed function of them, so between two updates every network sees the same inputs.
    """

    def __init__(self, nobs: int, enabled: bool = True, clip: float = 10.0, eps: float = 1e-8):
        super().__init__()
        if not clip > 0:
            raise ValueError(f"clip must be > 0, got {clip}")
        self.enabled, self.clip, self.eps = bool(enabled), float(clip), float(eps)
        self.stats = RunningMeanStd(nobs)
        # float32 copies of the affine map, refreshed by `update` (and on load)
        self.register_buffer("shift", torch.zeros(nobs))
        self.register_buffer("scale", torch.ones(nobs))

    def forward(self, obs: Tensor) -> Tensor:
        if not self.enabled:
            return obs
        z = (obs - self.shift.to(obs.dtype)) * self.scale.to(obs.dtype)
        return z.clamp_(-self.clip, self.clip)

    @torch.no_grad()
    def update(self, obs: Tensor) -> None:
        """Merge ``obs [..., nobs]`` into the statistics (no-op when disabled)."""
        if not self.enabled:
            return
        self.stats.update(obs.reshape(-1, self.shift.shape[0]))
        self.shift.copy_(self.stats.mean)
        self.scale.copy_((self.stats.var + self.eps).rsqrt())


class ValueScale(nn.Module):
    """The critic's units: ``V = std · v + mean`` with ``v`` the heads' (normalised) output.

    ``enabled`` False keeps ``mean = 0, std = 1`` (the heads fit raw returns).
    """

    def __init__(self, enabled: bool = True, min_std: float = 1e-4) -> None:
        super().__init__()
        self.enabled, self.min_std = bool(enabled), float(min_std)
        self.stats = RunningMeanStd(1)
        self.register_buffer("shift", torch.zeros(()))
        self.register_buffer("std", torch.ones(()))

    def denormalize(self, v: Tensor) -> Tensor:
        """Raw values from the heads' outputs (any shape)."""
        if not self.enabled:
            return v
        return v * self.std.to(v.dtype) + self.shift.to(v.dtype)

    def normalize(self, g: Tensor) -> Tensor:
        """The heads' target for raw returns ``g`` (any shape)."""
        if not self.enabled:
            return g
        return (g - self.shift.to(g.dtype)) / self.std.to(g.dtype)

    @torch.no_grad()
    def update(self, targets: Tensor) -> tuple[float, float]:
        """Merge raw value targets; returns ``(a, b)`` with ``v_new = a · v_old + b`` the map that
        keeps ``V`` unchanged (identity when disabled)."""
        if not self.enabled:
            return 1.0, 0.0
        old_std, old_shift = float(self.std), float(self.shift)
        self.stats.update(targets.reshape(-1, 1))
        self.shift.fill_(float(self.stats.mean[0]))
        self.std.fill_(max(float(self.stats.var[0].sqrt()), self.min_std))
        new_std, new_shift = float(self.std), float(self.shift)
        return old_std / new_std, (old_shift - new_shift) / new_std
