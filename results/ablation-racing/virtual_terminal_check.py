"""Virtual-data optimism on Racing: the same policy, virtual data from the bounded vs the unbounded kinematic model."""

import sys, numpy as np, torch
from dataclasses import replace
from rlmpc.checkpoint import load_checkpoint
from rlmpc.worker import RolloutWorker
from rlmpc.fragments import FragmentId
from learners.ppo import PPOLearner
from learners.batches import RealBatch, VirtualBatch
from learners.targets import virtual_lambda_return
import envs.racing_dz as R

ck, variant, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
if variant == "unbounded":
    R.RacingTaskEnv.planner_model = lambda self: R.RacingModel(self.track, self.task, self.car)
torch.set_num_threads(1)
st = load_checkpoint(ck)
spec = replace(st["worker_spec"], n_envs=64, seed=777)
cfg = st["config"]
from learners.ppo import PPOConfig
from learners.policy import NetworkConfig
from learners.rho import InfluenceRatioConfig

tup = lambda d: {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
lrn = PPOLearner(
    37,
    2,
    PPOConfig(**tup(cfg["ppo"])),
    NetworkConfig(**tup(cfg["networks"])),
    InfluenceRatioConfig(**tup(cfg["influence_ratio"])),
)
lrn.load_state_dict(st["learner"]["ppo"])
w = RolloutWorker(0, spec)
ends = dict(off=0, coll=0, goal=0)
real, virt, res = w.collect(FragmentId(0, 0), steps, st["learner"]["weights"], 0)
vb = virt.to_batch()
rb = real.to_batch()
with torch.no_grad():
    vbar = lrn.values.mean(vb.obs)
    pv = torch.cat((vbar[:, None], lrn.values.mean(vb.path_obs[:, 1:])), 1)
    ret = virtual_lambda_return(vb.path_rewards, pv, vb.path_terminated, 0.99, 0.95)
    adv = ret - vbar
std = float(lrn.values.scale.std)
H = vb.path_rewards.shape[1]
real_term = float(rb.terminated.float().mean())
e = res.episodes
print(
    f"{variant}: real terminal per step {real_term:.4f} (per {H} steps ~{1 - (1 - real_term) ** H:.3f}); virtual paths ending within H {float(vb.path_terminated.any(-1).float().mean()):.3f}; "
    f"virtual advantage mean {float(adv.mean()):.1f} ({float(adv.mean()) / std:.2f} critic std), median {float(adv.median()):.1f}; episodes ended {len(e.returns)}, success {e.success.mean() if len(e.success) else float('nan'):.2f}"
)
