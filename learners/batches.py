"""Typed batches the learner consumes: real fragments, virtual samples, and training samples.

`RealBatch` is what the rollout actors ship for ``D_RL`` (eq. 5), `VirtualBatch` for
``D_MPPI`` (eq. 7, plus the planned path the value target is computed from), and
`TrainBatch` the flat samples (with advantages and returns) that PPO minibatches are cut from.
Actors build the first two from numpy with ``from_numpy``; `concat` joins fragments.

`bernoulli_mix` is the draw of eq. (8) and `mix_batches` applies it (App. D's per-sample
mixing); eq. (10)'s loss weighting lives in `learners.ppo`. `Samples` pairs a `TrainBatch` with
the value heads' fixed prior outputs, computed once per iteration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor


def _float(x: Any, dtype: torch.dtype) -> Tensor:
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def _bool(x: Any) -> Tensor:
    return torch.as_tensor(np.asarray(x, dtype=bool))


def _move(batch: tuple[Tensor | None, ...], device: torch.device | str, dtype: torch.dtype | None):
    for t in batch:
        if t is None:
            yield None
        else:
            yield (
                t.to(device, dtype) if dtype is not None and t.is_floating_point() else t.to(device)
            )


def _expect(name: str, t: Tensor, shape: tuple[int, ...]) -> None:
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(t.shape)}")


class RealBatch(NamedTuple):
    """A time-major fragment of real transitions (eq. 5): T steps of B envs.

    Episodes may end anywhere inside it; ``terminated`` and ``truncated`` are kept apart so
    GAE bootstraps a truncated episode from the value of its true last observation and a
    terminated one from zero. The observation after the fragment's last step is
    ``next_obs[-1]``.
    """

    obs: Tensor
    """``[T, B, nobs]`` float: s_t, the observation the policy acted on."""
    actions: Tensor
    """``[T, B, na]`` float: the executed high-level action a^(m*)_t, unclipped, as sampled."""
    logp: Tensor
    """``[T, B]`` float: log π_old(a_t | s_t) under the policy that sampled it."""
    rewards: Tensor
    """``[T, B]`` float: the env's reward r_t."""
    terminated: Tensor
    """``[T, B]`` bool: the episode ended at t+1 in a terminal state (value 0 after it)."""
    truncated: Tensor
    """``[T, B]`` bool: the episode was cut at t+1 (time limit) without being terminal."""
    next_obs: Tensor
    """``[T, B, nobs]`` float: s_{t+1} as the env returned it *before* any auto-reset (the
    true final observation where the episode ended; equal to ``obs[t+1]`` elsewhere)."""
    candidates: Tensor | None = None
    """``[T, B, M, na]`` float or None: all M candidates a^(m) drawn at s_t (PO-MPC's planner
    prior, `learners.pompc`; shipped only when a KL prior is in play)."""
    candidate_returns: Tensor | None = None
    """``[T, B, M]`` float or None: each candidate's planned return G^(m)
    (`learners.pompc.candidate_returns`, raw units)."""
    model_obs: Tensor | None = None
    """``[T, B, nobs]`` float or None: the bound's diagnostics (`learners.bound`): ψ(P̂(x_t,
    u_t)), the planner model's next observation at the executed control (NaN: a faulted step)."""
    model_rewards: Tensor | None = None
    """``[T, B]`` float or None: r̂(x_t, u_t) (with the terminal reward by the run's rule)."""
    plan_kl: Tensor | None = None
    """``[T, B]`` float or None: eq. (35)'s ½ Σ Δuᵀ Σ⁻¹ Δu of the executed plan."""

    @classmethod
    def from_numpy(
        cls,
        obs: Any,
        actions: Any,
        logp: Any,
        rewards: Any,
        terminated: Any,
        truncated: Any,
        next_obs: Any,
        candidates: Any = None,
        candidate_returns: Any = None,
        model_obs: Any = None,
        model_rewards: Any = None,
        plan_kl: Any = None,
        dtype: torch.dtype = torch.float32,
    ) -> RealBatch:
        """Build (and shape-check) from numpy arrays; floats become ``dtype``."""
        opt = lambda x: None if x is None else _float(x, dtype)
        batch = cls(
            obs=_float(obs, dtype),
            actions=_float(actions, dtype),
            logp=_float(logp, dtype),
            rewards=_float(rewards, dtype),
            terminated=_bool(terminated),
            truncated=_bool(truncated),
            next_obs=_float(next_obs, dtype),
            candidates=opt(candidates),
            candidate_returns=opt(candidate_returns),
            model_obs=opt(model_obs),
            model_rewards=opt(model_rewards),
            plan_kl=opt(plan_kl),
        )
        batch.dims()
        return batch

    def dims(self) -> tuple[int, int, int, int]:
        """``(T, B, nobs, na)``, after checking every field's shape; else `ValueError`."""
        if self.obs.ndim != 3 or self.actions.ndim != 3:
            raise ValueError(
                f"RealBatch.obs and .actions must be [T, B, *], got {list(self.obs.shape)} "
                f"and {list(self.actions.shape)}"
            )
        T, B, nobs = self.obs.shape
        na = self.actions.shape[-1]
        _expect("RealBatch.actions", self.actions, (T, B, na))
        for name in ("logp", "rewards", "terminated", "truncated"):
            _expect(f"RealBatch.{name}", getattr(self, name), (T, B))
        _expect("RealBatch.next_obs", self.next_obs, (T, B, nobs))
        if (self.candidates is None) != (self.candidate_returns is None):
            raise ValueError("RealBatch.candidates and .candidate_returns come together")
        if self.candidates is not None:
            M = self.candidates.shape[2] if self.candidates.ndim == 4 else -1
            _expect("RealBatch.candidates", self.candidates, (T, B, M, na))
            _expect("RealBatch.candidate_returns", self.candidate_returns, (T, B, M))
        if self.model_obs is not None:
            _expect("RealBatch.model_obs", self.model_obs, (T, B, nobs))
            _expect("RealBatch.model_rewards", self.model_rewards, (T, B))
            _expect("RealBatch.plan_kl", self.plan_kl, (T, B))
        if T < 1 or B < 1:
            raise ValueError(f"RealBatch must hold at least one step, got T={T}, B={B}")
        return T, B, nobs, na

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> RealBatch:
        """On ``device``; float fields cast to ``dtype`` when given (bool fields stay bool)."""
        return RealBatch(*_move(self, device, dtype))

    @staticmethod
    def concat(batches: Sequence[RealBatch]) -> RealBatch:
        """Join fragments of equal length T side by side (along the env axis B); the
        candidates and the diagnostics only when every fragment has them."""
        cat = lambda ts: None if any(t is None for t in ts) else torch.cat(ts, dim=1)
        return RealBatch(*(cat(ts) for ts in zip(*batches, strict=True)))


class VirtualBatch(NamedTuple):
    """N virtual samples (eq. 7): a non-executed candidate a^(m), m ≠ m*, at a real state s_t.

    Each carries the candidate's planned path under the planner's model, re-scored with r̂
    and mapped to observations with ψ; `learners.targets.virtual_lambda_return` turns it into
    the sample's value target with the current critic.
    """

    obs: Tensor
    """``[N, nobs]`` float: s_t, the real observation the candidate was drawn at."""
    actions: Tensor
    """``[N, na]`` float: the candidate's high-level action a^(m), unclipped, as sampled."""
    logp: Tensor
    """``[N]`` float: log π_old(a^(m) | s_t) under the policy that sampled it."""
    path_obs: Tensor
    """``[N, H+1, nobs]`` float: ψ(x̂_τ) along the planned path, ``path_obs[:, 0] = ψ(x_t)``,
    ``path_obs[:, 1] = ŝ_{t+1}`` of eq. (6)."""
    path_rewards: Tensor
    """``[N, H]`` float: r̂(x̂_τ, u^(m)_τ), ``path_rewards[:, 0] = r̂_t^(m)`` of eq. (6)."""
    path_terminated: Tensor
    """``[N, H]`` bool: x̂_{τ+1} is terminal under the model (``PlannerModel.terminated``);
    the target ignores everything after the first terminal step."""

    @classmethod
    def from_numpy(
        cls,
        obs: Any,
        actions: Any,
        logp: Any,
        path_obs: Any,
        path_rewards: Any,
        path_terminated: Any,
        dtype: torch.dtype = torch.float32,
    ) -> VirtualBatch:
        """Build (and shape-check) from numpy arrays; floats become ``dtype``."""
        batch = cls(
            obs=_float(obs, dtype),
            actions=_float(actions, dtype),
            logp=_float(logp, dtype),
            path_obs=_float(path_obs, dtype),
            path_rewards=_float(path_rewards, dtype),
            path_terminated=_bool(path_terminated),
        )
        batch.dims()
        return batch

    @classmethod
    def empty(cls, nobs: int, na: int, horizon: int, dtype: torch.dtype = torch.float32):
        """A batch of N = 0 samples (what an actor ships when no virtual data was kept)."""
        z = lambda *s: torch.zeros(s, dtype=dtype)
        return cls(
            z(0, nobs), z(0, na), z(0), z(0, horizon + 1, nobs), z(0, horizon),
            torch.zeros(0, horizon, dtype=torch.bool),
        )  # fmt: skip

    @property
    def size(self) -> int:
        """N, the number of samples (``len()`` of a NamedTuple counts its fields)."""
        return int(self.obs.shape[0])

    def dims(self) -> tuple[int, int, int, int]:
        """``(N, H, nobs, na)``, after checking every field's shape; else `ValueError`."""
        if self.obs.ndim != 2 or self.actions.ndim != 2 or self.path_rewards.ndim != 2:
            raise ValueError(
                "VirtualBatch.obs, .actions and .path_rewards must be 2-D, got "
                f"{list(self.obs.shape)}, {list(self.actions.shape)}, "
                f"{list(self.path_rewards.shape)}"
            )
        N, nobs = self.obs.shape
        na = self.actions.shape[1]
        H = self.path_rewards.shape[1]
        if H < 1:
            raise ValueError(f"VirtualBatch paths need a horizon H >= 1, got {H}")
        _expect("VirtualBatch.actions", self.actions, (N, na))
        _expect("VirtualBatch.logp", self.logp, (N,))
        _expect("VirtualBatch.path_obs", self.path_obs, (N, H + 1, nobs))
        _expect("VirtualBatch.path_rewards", self.path_rewards, (N, H))
        _expect("VirtualBatch.path_terminated", self.path_terminated, (N, H))
        return N, H, nobs, na

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> VirtualBatch:
        """On ``device``; float fields cast to ``dtype`` when given (bool fields stay bool)."""
        return VirtualBatch(*_move(self, device, dtype))

    @staticmethod
    def concat(batches: Sequence[VirtualBatch]) -> VirtualBatch:
        """Join batches of equal horizon H along N."""
        return VirtualBatch(*(torch.cat(ts, dim=0) for ts in zip(*batches, strict=True)))


class TrainBatch(NamedTuple):
    """N flat training samples of one buffer, with the targets computed for this iteration."""

    obs: Tensor
    """``[N, nobs]`` s_t."""
    actions: Tensor
    """``[N, na]`` the high-level action whose probability ratio PPO clips."""
    logp: Tensor
    """``[N]`` log π_old(a | s_t)."""
    advantages: Tensor
    """``[N]`` advantage estimates (normalised over their buffer when the config says so)."""
    returns: Tensor
    """``[N]`` value targets (GAE returns for real data, path λ-returns for virtual data)."""
    boot: Tensor
    """``[N, D]`` bootstrap weight of each sample for each value head (mean 1 over draws)."""

    @property
    def size(self) -> int:
        """N, the number of samples."""
        return int(self.obs.shape[0])

    def index(self, idx: Tensor) -> TrainBatch:
        """The samples at ``idx`` (a ``[n]`` long tensor)."""
        return TrainBatch(*(t[idx] for t in self))


class Samples(NamedTuple):
    """A `TrainBatch` with each sample's fixed value prior: what the learner's minibatch loop cuts."""

    batch: TrainBatch
    """``N`` samples with their targets."""
    prior: Tensor
    """``[N, D]`` β p_d(s) of each sample (`ValueEnsemble.prior_values`, once per iteration)."""
    anchor: Tensor | None = None
    """``[N, 2·na]`` or None: PO-MPC's prior π_prior(·|s) at each sample's state, its mean then
    its log-std (`learners.pompc`); None where no KL prior applies (virtual samples)."""

    def index(self, idx: Tensor) -> Samples:
        """The samples at ``idx`` (``[n]`` long), gathered into new tensors."""
        anchor = None if self.anchor is None else self.anchor[idx]
        return Samples(self.batch.index(idx), self.prior[idx], anchor)

    def split(self, size: int) -> list[Samples]:
        """Consecutive minibatches of ``size`` samples (views; the last may be shorter)."""
        parts = [t.split(size) for t in (*self.batch, self.prior)]
        anchors = self.anchor.split(size) if self.anchor is not None else [None] * len(parts[0])
        return [
            Samples(TrainBatch(*p[:-1]), p[-1], a)
            for p, a in zip(zip(*parts, strict=True), anchors, strict=True)
        ]

    def cat(self, other: Samples) -> Samples:
        """These samples followed by ``other``'s (with anchors only when both have them)."""
        fields = zip((*self.batch, self.prior), (*other.batch, other.prior), strict=True)
        joined = [torch.cat(pair) for pair in fields]
        anchor = None
        if self.anchor is not None and other.anchor is not None:
            anchor = torch.cat((self.anchor, other.anchor))
        return Samples(TrainBatch(*joined[:-1]), joined[-1], anchor)


def bernoulli_mix(
    num_slots: int, rho: float, num_virtual: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Eq. (8): per slot, ``z ~ Bernoulli(ρ)`` picks real (0) or virtual (1) data.

    Returns ``z [num_slots]`` bool and ``virtual_index [num_slots]`` long: for slots with
    ``z = 1``, the virtual sample ``d_virt ~ D_MPPI`` that fills it, drawn uniformly without
    replacement while the virtual buffer lasts (then from a fresh permutation); entries for
    ``z = 0`` slots are 0 and meaningless. The result is a unified buffer distributed as
    eq. (9), ``(1-ρ) D_RL + ρ D_MPPI``, of ``num_slots`` samples — as in App. D, where each
    step stores one sample in one of the two buffers. Draws use ``generator`` (CPU) only.
    """
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must be in [0, 1], got {rho}")
    z = torch.rand(num_slots, generator=generator) < rho
    n_virt = int(z.sum())
    if n_virt > 0 and num_virtual < 1:
        raise ValueError(f"per-sample mixing drew {n_virt} virtual samples from an empty buffer")
    index = torch.zeros(num_slots, dtype=torch.long)
    if n_virt > 0:
        reps = -(-n_virt // num_virtual)
        perms = [torch.randperm(num_virtual, generator=generator) for _ in range(reps)]
        index[z] = torch.cat(perms)[:n_virt]
    return z, index


def mix_batches(real: TrainBatch, virtual: TrainBatch, z: Tensor, virtual_index: Tensor):
    """The unified buffer of eq. (8): slot i holds ``virtual[virtual_index[i]]`` where
    ``z[i]`` and ``real[i]`` elsewhere (``z``, ``virtual_index`` from `bernoulli_mix`)."""
    if z.shape != (real.size,):
        raise ValueError(f"z must have shape [{real.size}], got {list(z.shape)}")
    if not bool(z.any()):
        return real
    device = real.obs.device
    zd, idx = z.to(device), virtual_index.to(device)
    fields = []
    for r, v in zip(real, virtual, strict=True):
        mask = zd.view(-1, *([1] * (r.ndim - 1)))
        fields.append(torch.where(mask, v[idx], r))
    return TrainBatch(*fields)
