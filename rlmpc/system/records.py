"""Typed records at the system's hot boundaries: steps, fragments, episodes, weights, evaluations.

A rollout worker produces one `RealStep` per step of its ``B`` envs and, every
``fragment_len`` steps, ships one `RealArrays` (D_RL, eq. 5, time-major ``[T, B]``) and one
`VirtualArrays` (D_MPPI, eq. 7: the ``M-1`` non-executed candidates of every step with their
planned paths, flattened to ``N`` samples) to the replay shards. Field names match
`learners.batches.RealBatch` / `VirtualBatch`. `FragmentMeta` is the tag the shards index
fragments by and the coordinator counts with; `CollectResult` is what the coordinator gets
back from a worker. `Weights` is what the learner ships to the workers; `EvalResult` is an
evaluation's episodes and pictures. Everything here is numpy arrays, tensors and plain data:
no behaviour crosses the object store.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from torch import Tensor

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


class RealStep(NamedTuple):
    """One step of every env of a worker (eq. 5), ``[B, ...]``; `RealArrays` stacks T of them."""

    obs: np.ndarray
    """``[B, nobs]`` s_t"""
    actions: np.ndarray
    """``[B, na]`` the executed candidate a^(m*)"""
    logp: np.ndarray
    """``[B]`` its log-probability under the acting policy"""
    rewards: np.ndarray
    """``[B]``"""
    terminated: np.ndarray
    """``[B]`` bool"""
    truncated: np.ndarray
    """``[B]`` bool"""
    next_obs: np.ndarray
    """``[B, nobs]`` the env's observation after the step, before any reset"""


class RealArrays(NamedTuple):
    """D_RL fragment, ``[T, B]`` time-major (the fields of `RealStep`; `learners.batches.RealBatch`)."""

    obs: np.ndarray
    actions: np.ndarray
    logp: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    next_obs: np.ndarray
    candidates: np.ndarray | None = None
    """``[T, B, M, na]`` every candidate drawn at s_t (PO-MPC's planner prior; None: not scored)"""
    candidate_returns: np.ndarray | None = None
    """``[T, B, M]`` their planned returns G^(m) (`learners.pompc.candidate_returns`)"""
    model_obs: np.ndarray | None = None
    """``[T, B, nobs]`` the bound's diagnostics (`rlmpc.system.worker.StepDiagnostics`; None:
    not shipped): the model's next observation at the executed control"""
    model_rewards: np.ndarray | None = None
    """``[T, B]`` the model's reward for it"""
    plan_kl: np.ndarray | None = None
    """``[T, B]`` eq. (35)'s sampling term of the executed plan"""

    @staticmethod
    def stack(steps: list[RealStep]) -> RealArrays:
        """T steps ``[B, ...]`` -> one fragment ``[T, B, ...]`` (candidates are added after)."""
        return RealArrays(*(np.stack(column) for column in zip(*steps, strict=True)))

    def to_batch(self) -> RealBatch:
        # arrays fetched from the object store are read-only views; torch wants its own
        return RealBatch.from_numpy(
            **{k: None if v is None else np.array(v) for k, v in self._asdict().items()}
        )


class VirtualArrays(NamedTuple):
    """D_MPPI samples (see `learners.batches.VirtualBatch`): ``[N, ...]`` in a fragment,
    ``[T, B, M-1, ...]`` as the worker builds them."""

    obs: np.ndarray
    """s_t of the step each candidate was drawn at"""
    actions: np.ndarray
    """the candidate a^(m)"""
    logp: np.ndarray
    """its log-probability"""
    path_obs: np.ndarray
    """``[..., H+1, nobs]`` ψ of its planned path (eq. 6)"""
    path_rewards: np.ndarray
    """``[..., H]`` r̂ along the path (plus terminal rewards, by the run's rule)"""
    path_terminated: np.ndarray
    """``[..., H]`` where the model deems the path's episode over"""

    def flatten(self) -> VirtualArrays:
        """``[T, B, M-1, ...]`` -> ``[T·B·(M-1), ...]``."""
        return VirtualArrays(*(v.reshape(-1, *v.shape[3:]) for v in self))

    def to_batch(self) -> VirtualBatch:
        return VirtualBatch.from_numpy(**{k: np.array(v) for k, v in self._asdict().items()})


#: how an episode can be cut short (`rlmpc.system.worker.RolloutWorker._act`): a step raised,
#: returned a non-finite observation or reward, or took longer than the worker's env step
#: timeout; or the env lost its simulator (a server: the registry's ``episode_lost``)
FAULT_KINDS = ("raise", "nan", "stall", "lost")


class EpisodeStats(NamedTuple):
    """Episodes that ended inside a fragment (or an evaluation), one entry each."""

    returns: np.ndarray
    lengths: np.ndarray
    success: np.ndarray
    danger_steps: np.ndarray
    extra: dict[str, np.ndarray]
    """the env's own end-of-episode figures (`envs.registry.EnvSpec.episode_metrics`)"""
    faults: dict[str, int] = {}  # shared, never mutated
    """episodes dropped (not in the figures above) because a step failed, by kind
    (`FAULT_KINDS`)"""

    @staticmethod
    def concat(stats: list[EpisodeStats]) -> EpisodeStats:
        keys = sorted({k for s in stats for k in s.extra})
        faults = {k: sum(s.faults.get(k, 0) for s in stats) for k in FAULT_KINDS}
        return EpisodeStats(
            np.concatenate([s.returns for s in stats]) if stats else np.zeros(0),
            np.concatenate([s.lengths for s in stats]) if stats else np.zeros(0, np.int64),
            np.concatenate([s.success for s in stats]) if stats else np.zeros(0, bool),
            np.concatenate([s.danger_steps for s in stats]) if stats else np.zeros(0, np.int64),
            {k: np.concatenate([s.extra.get(k, np.zeros(0)) for s in stats]) for k in keys},
            {k: n for k, n in faults.items() if n},
        )


def summarize(env: str, stats: EpisodeStats) -> dict[str, Any]:
    """The paper's table columns of some episodes: mean and (population) std of each figure."""
    ms = lambda a: {"mean": float(np.mean(a)), "std": float(np.std(a))} if len(a) else None
    out = {
        "env": env,
        "episodes": int(len(stats.returns)),
        "success_rate": ms(stats.success.astype(float)),
        "steps": ms(stats.lengths),
        "reward": ms(stats.returns),
        "danger_steps": ms(stats.danger_steps),
    }
    for k, v in stats.extra.items():
        out[k] = ms(v[np.isfinite(v)])
    return out


class CollectResult(NamedTuple):
    """What a worker's ``collect`` returns to the coordinator (small: the data went to the shards)."""

    meta: FragmentMeta
    episodes: EpisodeStats
    snapshot: dict[str, Any] | None
    """the worker's state at the end of the fragment as plain data, when asked for
    (checkpoints; `rlmpc.system.worker.RolloutWorker.snapshot`)"""
    seconds: float = 0.0
    """wall time the worker spent collecting the fragment"""


class Weights(NamedTuple):
    """What the learner ships to the workers: CPU state dicts (`learners.PPOLearner.get_weights`)."""

    policy: dict[str, Tensor]
    """the Gaussian policy (with the observation statistics)"""
    values: dict[str, Tensor] | None = None
    """the value ensemble, for eq. (41)'s terminal cost (None: not shipped)"""
    rho: float | None = None
    """the learner's influence ratio ρ when these weights were made (Alg. 1-2; the design
    card's "weights and ρ"). ρ = 0 tells the workers to build no virtual samples: ρ never
    grows (`learners.rho`), so the learner would never use them. None: unknown, build them."""


class Filming(NamedTuple):
    """What an evaluation films (`rlmpc.system.episodes.Reel`): its first ``episodes``
    episodes in the env's own frames, at most ``max_frames`` frames each (a frame every
    ``s`` steps, ``s`` doubling whenever an episode outgrows them; the last step always),
    scaled down to at most ``width`` pixels across."""

    episodes: int = 1
    max_frames: int = 100
    width: int = 400


class Video(NamedTuple):
    """One filmed evaluation episode: the env's frames, and what to draw over them in their
    pixels (`envs.base.Pixels`; none where the env cannot map its plane onto its frames)."""

    frames: np.ndarray
    """``[F, h, w, 3]`` uint8, ``h`` and ``w`` even"""
    steps: np.ndarray
    """``[F]`` the step each frame shows (the state before that step's action)"""
    plans: np.ndarray
    """``[F, M, H+1, 2]`` (column, row) of the candidates' planned paths from the frame's
    state, candidate 0 executed; NaN where the frame has none (the episode's last state);
    ``[F, 0, 0, 2]`` where the env maps no points"""
    zone: np.ndarray
    """``[4, 2]`` (column, row) of the danger zone's corners; ``[0, 2]`` where none"""
    fps: float
    """frames per second that play the episode in real time (the env's ``render_fps`` over
    the steps between frames)"""


class Trace(NamedTuple):
    """One recorded evaluation episode, in the plane the danger zone lives in."""

    positions: np.ndarray
    """``[T+1, 2]``"""
    others: np.ndarray
    """``[T+1, k, 2]`` the other agents' positions (`PlannerModel.others`)"""
    plan_steps: np.ndarray
    """``[P]`` steps at which candidates were recorded"""
    plans: np.ndarray
    """``[P, M, H+1, 2]`` candidates' planned positions (candidate 0 executed)"""
    zone: np.ndarray
    """``[4]`` (cx, cy, w, h)"""
    ret: float
    success: bool
    video: Video | None = None
    """the episode filmed (`Filming`), or None"""


class EvalResult(NamedTuple):
    """An evaluation: its episodes, the recorded ones, and the model that draws their scene."""

    env: str
    episodes: EpisodeStats
    traces: list[Trace]
    model: Any = None
    """the env's planner model (`PlannerModel.draw`), sent when episodes were recorded"""
