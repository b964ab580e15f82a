"""The high-level policy π_θ (a Gaussian over normalised targets) and the value ensemble {V_d}.

Both follow Stable-Baselines3's PPO defaults (the paper's Table 3 is SB3's): separate MLPs of
two tanh layers of 64, orthogonal initialisation (gain √2 in hidden layers, 0.01 on the
policy's mean, 1 on the value output), and a state-independent log-std parameter.

**Out-of-range actions.** The policy acts in ``[-1, 1]^na`` but its Gaussian samples are *not*
squashed or clipped here: ``sample`` returns the raw draw and its exact log-probability, the
env model's ``target(a)`` clips when it maps the action to the cost's target, and PPO's
ratios use the log-probability of that same unclipped sample (as SB3 does for Box actions;
a tanh squash would saturate the mean and need a Jacobian term). The log-probability is
always that of the high-level action, never of the MPPI control.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from common.checks import ConfigError, check_finite_fields
from learners.normalize import ObsNormalizer, ValueScale

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class NetworkConfig:
    """Sizes and initialisation of the policy and the value ensemble."""

    hidden_sizes: tuple[int, ...] = (64, 64)
    """Hidden widths of the policy MLP and of each value head (tanh; SB3's PPO default): 1..16
    layers of 1..4096."""
    ensemble_size: int = 5
    """D, the number of value heads (Alg. 2's ensemble), 1..64; at least 2 for the adaptive ρ."""
    prior_scale: float = 1.0
    """β: each head adds β × a fixed random prior network (Osband et al. 2018); 0 disables."""
    log_std_init: float = 0.0
    """Initial log standard deviation of the Gaussian policy (SB3's default 0)."""
    normalize_obs: bool = True
    """Normalise observations by their running mean and std, clipped to ±clip_obs
    (`learners.normalize.ObsNormalizer`), for the policy and every value head."""
    clip_obs: float = 10.0
    """Clip of the normalised observations, > 0 (RLlib's and SB3's default 10)."""
    normalize_values: bool = True
    """The value heads fit returns scaled by their running mean and std, PopArt-style
    (`learners.normalize.ValueScale`); Alg. 2 then reads the heads in these units."""

    def __post_init__(self) -> None:
        check_finite_fields(self)
        sizes = self.hidden_sizes
        if not 1 <= len(sizes) <= 16 or any(not 1 <= int(h) <= 4096 for h in sizes):
            raise ConfigError(
                "hidden_sizes",
                f"NetworkConfig.hidden_sizes must be 1..16 widths in [1, 4096], got {sizes}",
            )
        if not 1 <= self.ensemble_size <= 64:
            raise ConfigError(
                "ensemble_size",
                f"NetworkConfig.ensemble_size must be in [1, 64], got {self.ensemble_size}",
            )
        if not self.prior_scale >= 0.0:
            raise ConfigError(
                "prior_scale", f"NetworkConfig.prior_scale must be >= 0, got {self.prior_scale}"
            )
        if not math.isfinite(self.log_std_init):
            raise ConfigError(
                "log_std_init",
                f"NetworkConfig.log_std_init must be finite, got {self.log_std_init}",
            )
        if not (math.isfinite(self.clip_obs) and self.clip_obs > 0):
            raise ConfigError(
                "clip_obs", f"NetworkConfig.clip_obs must be finite and > 0, got {self.clip_obs}"
            )


def _mlp(sizes: Sequence[int], out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        lin = nn.Linear(n_in, n_out)
        last = i == len(sizes) - 2
        nn.init.orthogonal_(lin.weight, gain=out_gain if last else math.sqrt(2.0))
        nn.init.zeros_(lin.bias)
        layers += [lin] if last else [lin, nn.Tanh()]
    return nn.Sequential(*layers)


def _check_obs(obs: Tensor, nobs: int, name: str = "obs") -> None:
    if obs.ndim < 1 or obs.shape[-1] != nobs:
        raise ValueError(f"{name} must be [..., nobs={nobs}], got {list(obs.shape)}")


class GaussianPolicy(nn.Module):
    """π_θ(a | s) = N(μ_θ(s), diag σ²) over the normalised high-level action a ∈ R^na."""

    def __init__(
        self,
        nobs: int,
        na: int,
        hidden_sizes: Sequence[int] = (64, 64),
        log_std_init: float = 0.0,
        normalizer: ObsNormalizer | None = None,
    ) -> None:
        super().__init__()
        if nobs < 1 or na < 1:
            raise ValueError(f"nobs and na must be >= 1, got nobs={nobs}, na={na}")
        self.nobs, self.na = nobs, na
        self.normalizer = normalizer or ObsNormalizer(nobs, enabled=False)
        self.mean_net = _mlp([nobs, *hidden_sizes, na], out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((na,), float(log_std_init)))

    def forward(self, obs: Tensor) -> Tensor:
        """μ_θ(s): ``[..., na]`` from raw ``obs [..., nobs]`` (normalised inside; differentiable)."""
        _check_obs(obs, self.nobs)
        return self.mean_net(self.normalizer(obs))

    def log_prob(self, obs: Tensor, actions: Tensor) -> Tensor:
        """log π_θ(a | s) ``[...]`` of ``actions [..., na]`` at ``obs [..., nobs]``."""
        mean = self(obs)
        if actions.shape != mean.shape:
            raise ValueError(
                f"actions must have shape {list(mean.shape)}, got {list(actions.shape)}"
            )
        z = (actions - mean) * torch.exp(-self.log_std)
        return (-0.5 * z.square() - self.log_std - _LOG_SQRT_2PI).sum(-1)

    def entropy(self, obs: Tensor) -> Tensor:
        """Entropy of π_θ(· | s), ``[...]`` (the same at every state: σ is state-independent)."""
        _check_obs(obs, self.nobs)
        h = (0.5 + _LOG_SQRT_2PI + self.log_std).sum()
        return h.expand(obs.shape[:-1])

    @torch.no_grad()
    def sample(
        self, obs: Tensor, num_candidates: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Eq. (4): M candidates a^(m) ~ π_θ(· | s) per state.

        ``obs [B, nobs]`` -> ``actions [B, M, na]`` (unclipped draws) and their log-probabilities
        ``logp [B, M]``. ``generator``, when given, must live on ``obs``'s device.
        """
        if obs.ndim != 2:
            raise ValueError(f"obs must be [B, nobs], got {list(obs.shape)}")
        if num_candidates < 1:
            raise ValueError(f"num_candidates (M) must be >= 1, got {num_candidates}")
        mean = self(obs)
        B, na = mean.shape
        eps = torch.randn(
            (B, num_candidates, na), generator=generator, device=obs.device, dtype=mean.dtype
        )
        actions = mean[:, None, :] + torch.exp(self.log_std) * eps
        logp = (-0.5 * eps.square() - self.log_std - _LOG_SQRT_2PI).sum(-1)
        return actions, logp

    @torch.no_grad()
    def mean(self, obs: Tensor) -> Tensor:
        """The deterministic action μ_θ(s) ``[B, na]`` (evaluation)."""
        return self(obs)


class _SigmoidTanh(torch.autograd.Function):
    """tanh as ``2 σ(2x) - 1`` with tanh's own backward, ``g (1 - y²)``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        y = torch.sigmoid_(x * 2.0).mul_(2.0).sub_(1.0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


def fast_tanh(x: Tensor, inplace: bool = False) -> Tensor:
    """tanh(x), on CPU as ``2 σ(2x) - 1``: ~5x faster there, |error| <= 2e-7 (float32).

    torch's CPU ``tanh`` kernel (SLEEF, 1-ULP) costs ~2 ns an element, its ``sigmoid`` ~0.2;
    the value ensemble's hidden layers are most of a learner iteration's elementwise work.
    The identity is exact; in float32 the result is within 2e-7 of tanh (absolute, against
    3e-8 for ``torch.tanh``), below the rounding of the next layer's 64-term sums. The
    gradient is tanh's, ``1 - y²`` of the returned y. ``inplace`` overwrites ``x`` when no
    gradient is tracked through it. Other devices use ``torch.tanh``.
    """
    if x.device.type != "cpu":
        return torch.tanh(x)
    if torch.is_grad_enabled() and x.requires_grad:
        return _SigmoidTanh.apply(x)
    y = x.mul_(2.0) if inplace else x * 2.0
    return torch.sigmoid_(y).mul_(2.0).sub_(1.0)


class _StackedMLP(nn.Module):
    """D independent tanh MLPs in one module: weights ``[D, in, out]``, one batched matmul a layer.

    Parameters when ``trainable``, buffers (saved, moved, never optimised) otherwise.
    """

    chunk_rows = 1024
    """Rows per chunk in `forward`: ``[D=5, 1024, 64]`` float activations are 1.3 MB."""

    def __init__(self, D: int, sizes: Sequence[int], out_gain: float, trainable: bool) -> None:
        super().__init__()
        self.num_layers = len(sizes) - 1
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            gain = out_gain if i == self.num_layers - 1 else math.sqrt(2.0)
            w = torch.empty(D, n_in, n_out)
            for d in range(D):  # each head its own orthogonal draw
                nn.init.orthogonal_(w[d], gain=gain)
            b = torch.zeros(D, 1, n_out)
            if trainable:
                self.register_parameter(f"w{i}", nn.Parameter(w))
                self.register_parameter(f"b{i}", nn.Parameter(b))
            else:
                self.register_buffer(f"w{i}", w)
                self.register_buffer(f"b{i}", b)

    def forward(self, x: Tensor) -> Tensor:
        """``x [N, in]`` -> ``[D, N, out]``.

        Without a gradient to track, large N runs in chunks of `chunk_rows` rows through
        reused activation buffers, so the ``[D, chunk, hidden]`` activations stay in cache.
        """
        N = x.shape[0]
        tracked = torch.is_grad_enabled() and (self.w0.requires_grad or x.requires_grad)
        if N <= self.chunk_rows or tracked:
            return self._forward(x)
        with torch.no_grad():
            D, C = self.w0.shape[0], self.chunk_rows
            widths = [getattr(self, f"w{i}").shape[-1] for i in range(self.num_layers)]
            buffers = [x.new_empty((D, C, n)) for n in widths[:-1]]
            out = x.new_empty((D, N, widths[-1]))
            for start in range(0, N, C):
                out[:, start : start + C] = self._forward(x[start : start + C], buffers)
            return out

    def _forward(self, x: Tensor, buffers: list[Tensor] | None = None) -> Tensor:
        """The layers on ``x [n, in]``; hidden activations go to ``buffers`` when given."""
        h = x.unsqueeze(0).expand(self.w0.shape[0], *x.shape)
        for i in range(self.num_layers - 1):
            out = None if buffers is None else buffers[i][:, : x.shape[0]]
            h = torch.baddbmm(getattr(self, f"b{i}"), h, getattr(self, f"w{i}"), out=out)
            h = fast_tanh(h, inplace=True)  # baddbmm's backward does not need h
        w, b = getattr(self, f"w{self.num_layers - 1}"), getattr(self, f"b{self.num_layers - 1}")
        if w.shape[-1] == 1:  # matrix-vector products: multiply-and-sum beats a batched matmul
            return (h * w.transpose(1, 2)).sum(-1, keepdim=True) + b
        return torch.baddbmm(b, h, w)


class ValueEnsemble(nn.Module):
    """D value heads {V_d} evaluated in one call: ``values(obs [..., nobs]) -> [..., D]``.

    One module with a leading ensemble dimension (TD-MPC2-style stacked weights, batched
    matmul). The critic used for targets and advantages is the ensemble mean, `mean`.

    **Diversity.** Alg. 2 reads the heads' disagreement as the critic's uncertainty, and a
    collapsed ensemble (σ̄² ≈ 0, so ω ≈ 1) makes ρ decay at its maximal rate whatever the
    critic knows. PPO trains every head on the same targets from the same on-policy data for
    several epochs, so independent initialisation alone collapses the heads on the visited
    states within an iteration. Three mechanisms keep them apart:

    1. independent initialisation: each head its own orthogonal draw;
    2. random prior functions (Osband et al. 2018): ``V_d(s) = f_d(s) + β p_d(s)`` with
       ``p_d`` a fixed, never trained random network of the same shape. The trained part must
       cancel ``β p_d`` on the data, so the heads agree where data constrained them and keep
       disagreeing on states it did not — the fresh states Alg. 2 is evaluated on;
    3. bootstrap weights in the value loss (``PPOConfig.bootstrap_p``, Osband et al. 2016):
       each head weighs each sample by Bernoulli(p)/p, so heads disagree in proportion to
       the noise of the targets, i.e. to how well the data pin the value down.
    """

    def __init__(
        self,
        nobs: int,
        ensemble_size: int = 5,
        hidden_sizes: Sequence[int] = (64, 64),
        prior_scale: float = 1.0,
        normalizer: ObsNormalizer | None = None,
        value_scale: ValueScale | None = None,
    ) -> None:
        super().__init__()
        if nobs < 1 or ensemble_size < 1:
            raise ValueError(f"nobs and ensemble_size must be >= 1, got {nobs}, {ensemble_size}")
        self.nobs, self.ensemble_size, self.prior_scale = nobs, ensemble_size, float(prior_scale)
        self.normalizer = normalizer or ObsNormalizer(nobs, enabled=False)
        self.scale = value_scale or ValueScale(enabled=False)
        sizes = [nobs, *hidden_sizes, 1]
        self.heads = _StackedMLP(ensemble_size, sizes, out_gain=1.0, trainable=True)
        self.prior = _StackedMLP(ensemble_size, sizes, out_gain=1.0, trainable=False)

    def forward(self, obs: Tensor, prior: Tensor | None = None) -> Tensor:
        """V_d(s) for every head, in the heads' units (`ValueScale`; raw returns when value
        scaling is off): ``[..., D]`` from raw ``obs [..., nobs]``.

        ``prior [..., D]``, when given, is `prior_values` of the same ``obs`` computed earlier:
        the prior networks are fixed, so a learner evaluates them once per batch instead of
        once per gradient step.
        """
        _check_obs(obs, self.nobs)
        v = self._stacked(self.heads, obs)
        if prior is not None:
            if prior.shape != v.shape:
                raise ValueError(f"prior must have shape {list(v.shape)}, got {list(prior.shape)}")
            return v + prior
        if self.prior_scale == 0.0:
            return v
        return v + self.prior_scale * self._stacked(self.prior, obs)

    def prior_values(self, obs: Tensor) -> Tensor:
        """β p_d(s), the fixed prior part of every head, detached: ``[..., D]``."""
        _check_obs(obs, self.nobs)
        if self.prior_scale == 0.0:
            return obs.new_zeros((*obs.shape[:-1], self.ensemble_size))
        with torch.no_grad():
            return self.prior_scale * self._stacked(self.prior, obs)

    def _stacked(self, net: _StackedMLP, obs: Tensor) -> Tensor:
        """``net`` on the normalised ``obs [..., nobs]`` as ``[..., D]``."""
        lead = obs.shape[:-1]
        flat = self.normalizer(obs.reshape(-1, self.nobs))
        return net(flat).squeeze(-1).T.reshape(*lead, self.ensemble_size)

    def values(self, obs: Tensor) -> Tensor:
        """Same as calling the module: ``[..., D]`` in the heads' units."""
        return self(obs)

    def mean(self, obs: Tensor) -> Tensor:
        """The critic V̄(s) = (1/D) Σ_d V_d(s) in raw return units, ``[...]``."""
        return self.scale.denormalize(self(obs).mean(-1))

    @torch.no_grad()
    def rescale_heads(self, a: float, b: float) -> None:
        """Map every trained head's output ``f_d`` to ``a·f_d + b`` (its last layer), e.g. the
        `ValueScale.update` map that preserves V. A head's fixed prior ``β p_d`` is not
        rescaled, so V moves by ``(std_new - std_old)·β p_d``: small while the scale moves slowly."""
        last = self.heads.num_layers - 1
        getattr(self.heads, f"w{last}").mul_(a)
        getattr(self.heads, f"b{last}").mul_(a).add_(b)


def build_networks(
    nobs: int, na: int, config: NetworkConfig
) -> tuple[GaussianPolicy, ValueEnsemble]:
    """The policy and value ensemble a `NetworkConfig` describes (global torch RNG for init)."""
    normalizer = ObsNormalizer(nobs, config.normalize_obs, config.clip_obs)  # one, shared
    policy = GaussianPolicy(nobs, na, config.hidden_sizes, config.log_std_init, normalizer)
    values = ValueEnsemble(
        nobs, config.ensemble_size, config.hidden_sizes, config.prior_scale, normalizer,
        ValueScale(config.normalize_values),
    )  # fmt: skip
    return policy, values
