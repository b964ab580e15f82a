"""What a rollout worker makes of the plans it did not execute, once per fragment.

Acting needs only each plan's controls; the planned *paths* are wanted twice, and both are
rolled out for all T steps of a fragment in one batched call instead of T calls:

* step 4 of `rlmpc.system.worker`: the M-1 kept candidates become virtual samples (eqs. 6-7),
  their paths observed through ψ and re-scored with r̂ (`virtual_arrays`);
* step 5, with PO-MPC's planner prior: all M candidates get one planned return each,
  G^(m) = Σ_k γ^k r̂_k + γ^H V̄(ψ(x̂_H)) (`scored_candidates`, `learners.pompc.candidate_returns`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from envs.base import PlannerModel
from learners.policy import ValueEnsemble
from learners.pompc import candidate_returns
from planners.mppi import MPPI
from planners.reward_cost import path_rewards
from rlmpc.system.records import VirtualArrays


class Kept(NamedTuple):
    """One step's M-1 candidates that were not executed, before their paths are rolled out."""

    obs: np.ndarray
    """``[B, nobs]`` s_t, where every kept candidate was drawn."""
    x: torch.Tensor
    """``[B, nx]`` the planner states the plans start from."""
    actions: torch.Tensor
    """``[B, M-1, na]`` the candidates a^(m)."""
    logp: torch.Tensor
    """``[B, M-1]`` their log-probabilities."""
    controls: torch.Tensor
    """``[B, M-1, H, nu]`` their planned control sequences."""


class Scored(NamedTuple):
    """One step's M candidates, for their returns G^(m) (PO-MPC's planner prior)."""

    x: torch.Tensor
    """``[B, nx]`` the planner states the plans start from."""
    actions: torch.Tensor
    """``[B, M, na]`` all M candidates a^(m)."""
    controls: torch.Tensor
    """``[B, M, H, nu]`` their planned control sequences."""


def rollout(
    planner: MPPI, model: PlannerModel, x: torch.Tensor, seqs: torch.Tensor, terminal: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Planned paths ``[T, B, m, H+1, nx]`` of ``seqs [T, B, m, H, nu]`` from ``x [T, B, nx]``,
    r̂ along them ``[T, B, m, H]`` (plus the env's terminal reward on a transition into a
    terminal state when ``terminal``) and the model's terminal flags ``[T, B, m, H]``
    (eqs. 6-7)."""
    x = x.unsqueeze(2)  # [T, B, 1, nx]
    paths = planner.paths(x.expand(*seqs.shape[:3], x.shape[-1]), seqs)
    rewards, terminated = path_rewards(model, paths, seqs, terminal=terminal)
    return paths, rewards, terminated


@torch.inference_mode()
def virtual_arrays(
    planner: MPPI, model: PlannerModel, steps: list[Kept], terminal: bool
) -> VirtualArrays:
    """Step 4 for T steps' kept candidates at once: arrays ``[T, B, M-1, ...]``.

    The planned paths (`PlanResult.paths` of the kept candidates) and r̂ along them are
    one batched rollout of ``T·B·(M-1)`` rows instead of T rollouts of ``B·M``.
    """
    seqs = torch.stack([s.controls for s in steps])  # [T, B, M-1, H, nu]
    x = torch.stack([s.x for s in steps])
    paths, rewards, terminated = rollout(planner, model, x, seqs, terminal)
    M1 = seqs.shape[2]
    return VirtualArrays(
        obs=np.repeat(np.stack([s.obs for s in steps])[:, :, None], M1, axis=2),
        actions=torch.stack([s.actions for s in steps]).cpu().numpy(),
        logp=torch.stack([s.logp for s in steps]).cpu().numpy(),
        path_obs=model.observe(paths).cpu().numpy(),
        path_rewards=rewards.cpu().numpy(),
        path_terminated=terminated.cpu().numpy(),
    )


@torch.inference_mode()
def scored_candidates(
    planner: MPPI, model: PlannerModel, values: ValueEnsemble, steps: list[Scored],
    gamma: float, terminal: bool,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Step 5 for T steps at once: the candidates ``[T, B, M, na]`` and their planned
    returns G ``[T, B, M]`` (`learners.pompc.candidate_returns`, the critic ``values`` at x̂_H)."""
    seqs = torch.stack([s.controls for s in steps])  # [T, B, M, H, nu]
    x = torch.stack([s.x for s in steps])
    paths, rewards, terminated = rollout(planner, model, x, seqs, terminal)
    end = values.mean(model.observe(paths[..., -1, :]).to(torch.float32))
    g = candidate_returns(rewards.to(torch.float32), end, terminated, gamma)
    actions = torch.stack([s.actions for s in steps])
    return actions.cpu().numpy(), g.cpu().numpy()
