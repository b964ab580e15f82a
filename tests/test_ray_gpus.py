"""GPU shares of rollout actors in Ray's scheduler (`RunConfig.actor_gpus`), on a real local
Ray that declares one GPU. No GPU is needed: Ray's accounting is what is checked, the actors
act on the CPU. The options' refusals: `tests/test_system.py`."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import ray

from learners.policy import NetworkConfig
from learners.ppo_loss import PPOConfig
from learners.rho import InfluenceRatioConfig
from rlmpc.run.config import RunConfig, TrainConfig
from rlmpc.run.runlog import WandbConfig
from rlmpc.system.backend import actor_name
from rlmpc.system.ray_backend import RayBackend, RayPlacement
from tests import toy_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def ray_with_a_gpu():
    toy_env.register()
    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False,
             object_store_memory=200 * 1024**2, log_to_driver=False)  # fmt: skip
    yield
    ray.shutdown()
    toy_env.unregister()


def _gpus_free(expected: float, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if abs(ray.available_resources().get("GPU", 0.0) - expected) < 1e-9:
            return True
        time.sleep(0.2)
    return False


def test_actors_with_a_gpu_share_reserve_it_and_two_halves_fill_one_gpu(tmp_path):
    cfg = TrainConfig(
        run=RunConfig(env="toy-point", num_actors=2, envs_per_actor=2, runs_dir=str(tmp_path)),
        ppo=PPOConfig(n_steps=64, batch_size=16, n_epochs=1),
        influence_ratio=InfluenceRatioConfig(), networks=NetworkConfig(hidden_sizes=(8,)),
        planner=toy_env.ToyPlannerConfig(), wandb=WandbConfig(wandb_mode="disabled"),
    )  # fmt: skip
    backend = RayBackend(
        cfg.worker_spec(), cfg.learner_spec(), 2, cfg.eval_spec(2), cfg.eval_spec(2),
        RayPlacement(actor_gpus=0.5),
    )  # fmt: skip
    try:
        for i in range(2):  # both up (built, acting)
            backend.get(backend.call(actor_name(i), "snapshot"))
        assert _gpus_free(0.0)  # 2 × 0.5 of the one GPU
    finally:
        backend.close()
    assert _gpus_free(1.0)  # given back with the actors
