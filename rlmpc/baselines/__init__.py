"""The paper's Table 1 baselines: PPO and SAC acting on the env's low-level actions (no planner).

* `evaluate_policy` (`rlmpc.baselines.evaluate`): N seeded episodes of any ``act(obs)``,
  summarised with the project's evaluation columns (`rlmpc.system.records.summarize`), so a
  baseline's table compares like with like with PPO-MPPI's;
* `train_rllib` (`rlmpc.baselines.rllib`): train RLlib's PPO or SAC (new API stack, Tables
  3-4 hyperparameters in SB3's meaning), resumable from its work directory, and evaluate the
  final mean policy with `evaluate_policy`;
* `train_sb3` (`rlmpc.baselines.sb3`): the same with Stable-Baselines3, the paper's own
  library (Tables 3-4 as its arguments), checkpointed with SAC's replay buffer and continued
  after a kill;
* `run_pure_mppi_cell` (`rlmpc.baselines.mppi`): App. E's pure MPPI (Fig. 10), the planner
  alone with −r̂ as its cost, evaluated on the same protocol.

Shapes: ``nobs`` observation size, ``nu`` low-level action size (the env's action space).
"""

from rlmpc.baselines.evaluate import evaluate_policy, first_eval_seed

__all__ = ["evaluate_policy", "first_eval_seed", "train_rllib", "train_sb3"]


def __getattr__(name: str):
    # RLlib and SB3 are heavy to import: load one only when its trainer is asked for
    if name == "train_rllib":
        from rlmpc.baselines.rllib import train_rllib

        return train_rllib
    if name == "train_sb3":
        from rlmpc.baselines.sb3 import train_sb3

        return train_sb3
    raise AttributeError(name)
