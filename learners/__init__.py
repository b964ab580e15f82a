"""PPO over real and virtual data with a value ensemble and the influence ratio ρ (paper §4.1–4.4).

Pure torch, no Ray: the learner actor wraps `PPOLearner`; tests drive it in-process.

Shape letters (as in `envs.base`):

| letter | meaning |
|---|---|
| ``T`` | steps in a real fragment (time-major batches are ``[T, B, ...]``) |
| ``B`` | envs (or, in Alg. 2, the states a batch of values is taken on) |
| ``M`` | candidate high-level actions per state (eq. 4) |
| ``N`` | virtual samples (M-1 per real step), or flat training samples |
| ``H`` | planning horizon: a virtual sample's path has H rewards and H+1 observations |
| ``D`` | value heads in the ensemble |
| ``nobs`` | observation size; ``na`` high-level action size |

Modules:

* `learners.policy` — `GaussianPolicy` (``sample(obs [B, nobs], M) -> ([B, M, na], [B, M])``,
  ``mean``, ``log_prob``) and `ValueEnsemble` (``values(obs) -> [..., D]``, ``mean``).
* `learners.targets` — `gae` (real, ``[T, B]``) and `virtual_lambda_return` (virtual paths).
* `learners.rho` — `FixedRho`, `AdaptiveRho` (Alg. 2), `InfluenceRatioConfig`.
* `learners.batches` — `RealBatch`, `VirtualBatch`, `TrainBatch`; `bernoulli_mix` (eq. 8).
* `learners.ppo_loss` — `PPOConfig` (Table 3), L_PPO's terms, `weighted_loss` (eq. 10).
* `learners.ppo` — `PPOLearner` (one iteration: `update`), re-exporting `learners.ppo_loss`.
* `learners.pompc` — PO-MPC's KL prior: `KLPriorConfig`, the Gaussian KL, the planner prior
  π_P from the M scored candidates, the intermediate prior π_θp.
* configs raise `common.checks.ConfigError` naming their fields.
"""

from learners.batches import RealBatch, TrainBatch, VirtualBatch, bernoulli_mix, mix_batches
from learners.policy import GaussianPolicy, NetworkConfig, ValueEnsemble, build_networks
from learners.ppo import PPOLearner
from learners.ppo_loss import PPOConfig, weighted_loss
from learners.rho import (
    AdaptiveRho,
    FixedRho,
    InfluenceRatioConfig,
    adaptive_rho_step,
    make_influence_ratio,
)
from learners.targets import gae, virtual_lambda_return

__all__ = [
    "AdaptiveRho",
    "FixedRho",
    "GaussianPolicy",
    "InfluenceRatioConfig",
    "NetworkConfig",
    "PPOConfig",
    "PPOLearner",
    "RealBatch",
    "TrainBatch",
    "ValueEnsemble",
    "VirtualBatch",
    "adaptive_rho_step",
    "bernoulli_mix",
    "build_networks",
    "gae",
    "make_influence_ratio",
    "mix_batches",
    "virtual_lambda_return",
    "weighted_loss",
]
