"""App. E's "pure MPPI" objective: the reward model r̂, multiplied by −1, as MPPI's cost.

`PlannerConfig.objective = "reward"` plans with `RewardCost` instead of eq. (38): no
high-level target (the RL action is ignored), no J_danger or J_other term, the same K, H, Σ, λ
(Table 5). The planned paths' rewards follow the virtual-data convention of
`rlmpc.system.worker.RolloutWorker._virtual` and the λ-return of
`learners.targets.virtual_lambda_return`, so the cost of a sample is minus the return
PPO-MPPI's value targets would credit that path with (γ = λ = 1, no bootstrap):

    S = −Σ_{k<H} live_k (r̂(x_k, u_k) + [terminal] R_T(x_{k+1}))

* ``r̂`` is ``model.reward_after(x_{k+1})`` where the model has it (Acrobot), else
  ``model.path_reward(states, controls)`` (Lunar Lander: `reward` of each step with
  ``x_{k+1}`` read off the path), else ``model.reward(x_k, u_k)``. The danger zone is carried by r̂ itself (App. B: Acrobot's −50
  per step with the tip in the zone, Lunar Lander's −5), so no w_D·J_danger is added: it
  would count the zone twice.
* ``R_T`` is ``model.terminal_reward`` (Lunar Lander's −100 crash; Acrobot has none), paid
  on the transition into a state ``model.terminated`` flags, when ``terminal`` is True (the
  default ``--virtual-terminal reward`` of training); False is App. B's r̂ as written.
* ``live_k`` is 0 after the first planned terminal state (``x_1..x_k``): an ended episode
  earns nothing more, as the λ-return stops there. Acrobot's −1 per step then rewards
  reaching the goal within H; without it the objective would be flat outside the zone.

The sum needs the state each control started from, which the planner's per-step running
cost (evaluated on the state reached, pytorch-mppi's convention) does not see, so the cost
is given to `planners.mppi.path_cost` as a whole-path ``path_sum``; only the batched backend
uses it (`PlannerConfig` refuses ``backend="pytorch_mppi"`` with this objective).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def path_rewards(
    model: Any, states: Tensor, controls: Tensor, terminal: bool
) -> tuple[Tensor, Tensor]:
    """r̂ along planned paths and the model's terminal flags, both ``[..., H]`` (eqs. 6-7):
    ``r̂_k + [terminal] R_T(x_{k+1})`` and ``terminated(x_{k+1})``. The one rule for the
    virtual data (`rlmpc.system.worker`) and App. E's objective.

    ``states [..., H+1, nx]`` (``states[..., 0, :]`` the planning state), ``controls [..., H, nu]``.
    """
    reached = states[..., 1:, :]
    reward_after = getattr(model, "reward_after", None)  # r̂ read off x_{k+1}, no re-stepping
    path_reward = getattr(model, "path_reward", None)  # r̂ of the path's own transitions
    if reward_after is not None:
        rewards = reward_after(reached)
    elif path_reward is not None:
        rewards = path_reward(states, controls)
    else:
        rewards = model.reward(states[..., :-1, :], controls)
    ended = model.terminated(reached)  # [..., H]: x_{k+1} terminal
    if terminal:
        rewards = rewards + model.terminal_reward(reached)
    return rewards, ended


def reward_path_cost(model: Any, states: Tensor, controls: Tensor, terminal: bool) -> Tensor:
    """``−Σ_k live_k (r̂_k + [terminal] R_T(x_{k+1}))`` ``[...]`` (the module docstring)."""
    rewards, ended = path_rewards(model, states, controls, terminal)
    # live_k: no terminal state among x_1..x_k (x_{k+1} may be one: that transition still pays)
    ended_before = torch.cumsum(ended.to(torch.int32), -1) - ended.to(torch.int32)
    live = (ended_before == 0).to(rewards.dtype)
    return -(rewards * live).sum(-1)


class RewardCost:
    """The planner's running cost for ``objective="reward"`` (App. E): ``−r̂`` summed over a path.

    `planners.mppi.path_cost` calls `path_sum` with whole paths; the target is ignored.
    """

    def __init__(self, model: Any, terminal: bool = True) -> None:
        self.model, self.terminal = model, terminal

    def path_sum(self, states: Tensor, controls: Tensor, target: Tensor) -> Tensor:
        """``states [..., H+1, nx]``, ``controls [..., H, nu]``, ``target`` (unused) -> ``[...]``."""
        return reward_path_cost(self.model, states, controls, self.terminal)

    def __call__(self, x: Tensor, u: Tensor, target: Tensor) -> Tensor:
        raise TypeError(
            "RewardCost is a whole-path cost (path_sum): r̂(x_k, u_k) needs the state each "
            "control starts from, which a per-step running cost does not see"
        )
