"""What a minibatch engine receives and returns (`learners.ppo.PPOLearner`'s step 3).

Both engines (`learners.fused_engine.FusedEngine`, `learners.ppo_autograd.AutogradEngine`)
are built from the learner's parts, handed in explicitly (networks, optimizer, configs,
the KL prior), and run one iteration's ``n_epochs`` passes with `Engine.run`:

* `Draws` makes every random draw of the loop (each epoch's real order and each real
  minibatch's virtual samples) from the learner's generators, the same for both engines;
* `RhoSteps` is Alg. 2 stepped before every minibatch (``update_every="minibatch"``): the
  engine calls it and it counts what it skipped;
* `EngineResult` is what comes back: the steps' mean metrics under the keys below (one
  definition for both engines), the steps taken and skipped.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from learners.batches import Samples

#: the metrics of every minibatch step taken, in this order
STEP_METRICS = (
    "loss/policy", "loss/value", "loss/entropy", "loss/total", "grad_norm", "approx_kl",
    "clip_fraction",
)  # fmt: skip
#: with virtual data: L_MPPI's policy and value terms
VIRTUAL_METRICS = ("loss/policy_virtual", "loss/value_virtual")
#: with PO-MPC's KL prior: the KL term (logged at λ = 0 too)
KL_METRICS = ("loss/kl",)


def step_metric_keys(virtual: bool, kl: bool) -> tuple[str, ...]:
    """The keys of a step's metrics row: `STEP_METRICS`, then the virtual and KL ones."""
    return STEP_METRICS + (VIRTUAL_METRICS if virtual else ()) + (KL_METRICS if kl else ())


class EngineResult(NamedTuple):
    """One iteration's minibatch loop, as an engine reports it."""

    metrics: dict[str, float]
    """the mean over the steps taken of each metric (`step_metric_keys`); empty if none was"""
    taken: int
    """minibatch steps applied"""
    skipped: int
    """minibatch steps skipped for a non-finite loss or gradient norm"""


class Draws:
    """The loop's random draws, from the learner's ``real`` and ``virtual`` generators (CPU,
    so CPU and CUDA runs draw the same indices)."""

    def __init__(
        self, real: torch.Generator, virtual: torch.Generator, batch_size: int,
        virtual_batch_size: int | None,
    ) -> None:  # fmt: skip
        self.real, self.virtual = real, virtual
        self.batch_size, self.virtual_batch_size = batch_size, virtual_batch_size

    def chunk_size(self, n_virtual: int, n_chunks: int) -> int:
        """Virtual samples per real minibatch (`PPOConfig.virtual_batch_size`, or a sweep of
        the virtual buffer per epoch)."""
        return self.virtual_batch_size or max(1, -(-n_virtual // n_chunks))

    def epoch(self, n_train: int, n_virtual: int | None) -> tuple[Tensor, Tensor | None]:
        """One epoch's draws (CPU): the real samples' order ``[n_train]`` and each real
        minibatch's virtual samples ``[n_minibatches, size]`` (None without virtual data)."""
        perm = torch.randperm(n_train, generator=self.real)
        if n_virtual is None:
            return perm, None
        return perm, self.virtual_chunks(n_virtual, -(-n_train // self.batch_size))

    def virtual_chunks(self, n_virtual: int, n_chunks: int) -> Tensor:
        """``[n_chunks, size]`` virtual indices: consecutive random permutations, cut up."""
        size = self.chunk_size(n_virtual, n_chunks)
        need, perms, have = size * n_chunks, [], 0
        while have < need:
            perms.append(torch.randperm(n_virtual, generator=self.virtual))
            have += n_virtual
        return torch.cat(perms)[:need].view(n_chunks, size)


class RhoSchedule(Protocol):
    """`learners.rho`'s schedules, as an engine steps them."""

    @property
    def rho(self) -> float: ...

    def update(self, values: Tensor) -> float: ...


class RhoSteps:
    """The ρ schedule stepped on the heads' values ``[B, D]`` (once an iteration, or before
    each minibatch); values that are not all finite leave ρ as it is and are counted in
    ``skipped``. ``mean_confidence``: the mean of Alg. 2's ω over the updates taken."""

    def __init__(self, schedule: RhoSchedule) -> None:
        self.schedule, self.skipped = schedule, 0
        self._confidences: list[float] = []

    def __call__(self, values: Tensor) -> float:
        if bool(values.isfinite().all()):
            self.schedule.update(values)
            self._confidences.append(getattr(self.schedule, "confidence", float("nan")))
        else:
            self.skipped += 1
        return self.schedule.rho

    @property
    def mean_confidence(self) -> float:
        c = self._confidences
        return sum(c) / len(c) if c else float("nan")


class Engine(Protocol):
    """A minibatch loop (`learners.fused_engine`, `learners.ppo_autograd`)."""

    def run(
        self, train: Samples, virt: Samples | None, rho: float, rho_steps: RhoSteps | None
    ) -> EngineResult:
        """``n_epochs`` passes of minibatch steps at influence ratio ``rho`` (or ρ stepped by
        ``rho_steps`` before each minibatch)."""
        ...

    def critic(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """The heads' trained parts and fixed priors ``([..., D], [..., D])`` on ``obs``."""
        ...
