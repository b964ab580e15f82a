"""What travels through the object store: fragments of numpy arrays, tagged for the shards.

A rollout actor ships, every ``fragment_len`` steps of its ``n_envs`` envs, one `RealArrays`
(D_RL, eq. 5, time-major ``[T, B]``) and one `VirtualArrays` (D_MPPI, eq. 7: the ``M-1``
non-executed candidates of every step with their planned paths, flattened to ``N`` samples).
Field names match `learners.batches.RealBatch` / `VirtualBatch`, so the learner converts
them with ``RealBatch.from_numpy(**arrays._asdict())``. `FragmentMeta` is the tag the shards
index them by and the driver counts with.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from learners.batches import RealBatch, VirtualBatch


class FragmentId(NamedTuple):
    """Which fragment: the learner iteration it is meant for, the actor, and the attempt."""

    index: int
    actor: int
    attempt: int = 0


class FragmentMeta(NamedTuple):
    """The tag of a fragment: its id, the policy version that collected it, its sizes."""

    fid: FragmentId
    version: int
    steps: int
    """real transitions (T·B)"""
    virtual_samples: int
    """N"""


class RealArrays(NamedTuple):
    """D_RL fragment, ``[T, B]`` time-major (see `learners.batches.RealBatch`)."""

    obs: np.ndarray
    actions: np.ndarray
    logp: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    next_obs: np.ndarray

    def to_batch(self) -> RealBatch:
        # arrays fetched from the object store are read-only views; torch wants its own
        return RealBatch.from_numpy(**{k: np.array(v) for k, v in self._asdict().items()})


class VirtualArrays(NamedTuple):
    """D_MPPI fragment of ``N`` samples (see `learners.batches.VirtualBatch`)."""

    obs: np.ndarray
    actions: np.ndarray
    logp: np.ndarray
    path_obs: np.ndarray
    path_rewards: np.ndarray
    path_terminated: np.ndarray

    def to_batch(self) -> VirtualBatch:
        return VirtualBatch.from_numpy(**{k: np.array(v) for k, v in self._asdict().items()})


class EpisodeStats(NamedTuple):
    """Episodes that ended inside a fragment (or an evaluation), one entry each."""

    returns: np.ndarray
    lengths: np.ndarray
    success: np.ndarray
    danger_steps: np.ndarray
    extra: dict[str, np.ndarray]
    """env-specific end-of-episode figures (``distance_to_pad``, ``collision_or_offtrack``)"""

    @staticmethod
    def concat(stats: list[EpisodeStats]) -> EpisodeStats:
        keys = sorted({k for s in stats for k in s.extra})
        return EpisodeStats(
            np.concatenate([s.returns for s in stats]) if stats else np.zeros(0),
            np.concatenate([s.lengths for s in stats]) if stats else np.zeros(0, np.int64),
            np.concatenate([s.success for s in stats]) if stats else np.zeros(0, bool),
            np.concatenate([s.danger_steps for s in stats]) if stats else np.zeros(0, np.int64),
            {k: np.concatenate([s.extra.get(k, np.zeros(0)) for s in stats]) for k in keys},
        )


class CollectResult(NamedTuple):
    """What `RolloutWorker.collect` returns to the driver (small: the data went to the shards)."""

    meta: FragmentMeta
    episodes: EpisodeStats
    snapshot: bytes | None
    """the worker's state at the end of the fragment, when asked for (checkpoints)"""
    seconds: float = 0.0
    """wall time the worker spent collecting the fragment"""
