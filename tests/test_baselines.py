"""The RLlib baselines (`rlmpc.baselines`): the evaluator's protocol, training, resuming.

Tiny budgets on a local 1-CPU Ray shared by the module (the way a Ray Tune trial calls
`train_rllib`: Ray already running). RLlib's SAC costs ~0.2 s an update here, hence the
few hundred steps.
"""

import numpy as np
import pytest

from rlmpc.baselines import evaluate_policy, first_eval_seed

COLUMNS = ("success_rate", "steps", "reward", "danger_steps")


def pump(obs: np.ndarray) -> np.ndarray:
    """Acrobot energy pumping: torque along the second joint's velocity (it swings up)."""
    return np.sign(obs[5:6])


def test_evaluate_policy_runs_n_seeded_episodes():
    a = evaluate_policy("acrobot", pump, 3, seed=5)
    assert a["env"] == "acrobot" and a["episodes"] == 3
    assert all(set(a[k]) == {"mean", "std"} for k in COLUMNS)
    assert a == evaluate_policy("acrobot", pump, 3, seed=5)  # the seed fixes the episodes
    b = evaluate_policy("acrobot", pump, 3, seed=6)
    assert b["steps"] != a["steps"]
    # episode i is reset with seed + i: the 2nd and 3rd of seed 5 are the 1st and 2nd of 6
    one = [evaluate_policy("acrobot", pump, 1, seed=s)["steps"]["mean"] for s in (5, 6, 7)]
    assert a["steps"]["mean"] == pytest.approx(np.mean(one))
    assert evaluate_policy("acrobot", lambda o: np.zeros(1), 2, seed=0)["steps"]["mean"] == 500


def test_evaluate_policy_refuses_bad_input():
    with pytest.raises(ValueError, match="env must be one of"):
        evaluate_policy("cartpole", pump, 1, 0)
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        evaluate_policy("acrobot", pump, 0, 0)
    assert first_eval_seed(3) == 1_030_000


def test_train_rllib_refuses_bad_input(tmp_path):
    from rlmpc.baselines.rllib import train_rllib

    with pytest.raises(ValueError, match=r"algo must be one of \['ppo', 'sac'\]"):
        train_rllib("dqn", "acrobot", 0, 100, tmp_path)
    with pytest.raises(ValueError, match="env must be one of"):
        train_rllib("ppo", "cartpole", 0, 100, tmp_path)
    with pytest.raises(ValueError, match="env_steps must be >= 1"):
        train_rllib("ppo", "acrobot", 0, 0, tmp_path)
    assert not (tmp_path / "checkpoint").exists()


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


PPO_SMALL = {"training": {"train_batch_size_per_learner": 512, "num_epochs": 1}}
SAC_SMALL = {
    "training": {"num_steps_sampled_before_learning_starts": 100,
                 "train_batch_size_per_learner": 32},
}  # fmt: skip


@pytest.mark.parametrize(
    "algo, overrides, budget, more",
    [("ppo", PPO_SMALL, 1024, 1536), ("sac", SAC_SMALL, 200, 300)],
)
def test_train_rllib_trains_evaluates_and_resumes(local_ray, tmp_path, algo, overrides,
                                                  budget, more):  # fmt: skip
    from rlmpc.baselines.rllib import train_rllib

    logged = []
    out = train_rllib(algo, "acrobot", 1, budget, tmp_path, eval_episodes=2,
                      overrides=overrides, log=logged.append)  # fmt: skip
    assert set(out) == {"eval", "curve", "config", "wall_time_s"}
    curve = out["curve"]
    assert curve and logged == curve
    assert set(curve[0]) == {"iteration", "env_steps", "episode_return", "success_rate",
                             "wall_time_s"}  # fmt: skip
    assert [r["iteration"] for r in curve] == list(range(1, len(curve) + 1))
    assert len(curve) >= 2 and curve[-2]["env_steps"] < budget <= curve[-1]["env_steps"]
    ev = out["eval"]
    assert ev["episodes"] == 2 and all(set(ev[k]) == {"mean", "std"} for k in COLUMNS)
    assert ev["env_steps"] == curve[-1]["env_steps"] >= budget
    assert ev["seed"] == 1 and ev["eval_seed"] == 1_010_000
    assert out["config"]["gamma"] == 0.99 and out["config"]["seed"] == 1
    times = [r["wall_time_s"] for r in curve]
    assert 0 < times[0] and times == sorted(times) and out["wall_time_s"] > times[-1]
    assert (tmp_path / "checkpoint").is_dir()
    assert len((tmp_path / "curve.jsonl").read_text().splitlines()) == len(curve)

    # a second call on the same workdir continues from the checkpoint: only the new rows
    logged2 = []
    out2 = train_rllib(algo, "acrobot", 1, more, tmp_path, eval_episodes=2,
                       overrides=overrides, log=logged2.append)  # fmt: skip
    assert out2["curve"][: len(curve)] == curve
    assert logged2 == out2["curve"][len(curve) :] and logged2
    assert logged2[0]["iteration"] == len(curve) + 1
    assert logged2[0]["env_steps"] > curve[-1]["env_steps"]
    assert out2["eval"]["env_steps"] >= more
    # the wall time is the whole training's: the first call's (to its checkpoint) and this one's
    assert logged2[0]["wall_time_s"] > curve[-1]["wall_time_s"]
    assert out2["wall_time_s"] > logged2[-1]["wall_time_s"] > curve[-1]["wall_time_s"]
    assert len((tmp_path / "curve.jsonl").read_text().splitlines()) == len(out2["curve"])


def test_a_baseline_outside_ray_starts_its_own_beside_a_running_one(tmp_path):
    """`train_rllib` called without a Ray (the CLI, a script) starts a fresh one even while
    a ``ray start`` cluster lives on the machine (its address in Ray's temp directory), instead
    of joining it and failing on ``num_cpus`` ('When connecting to an existing cluster,
    num_cpus ... must not be provided'), as it did before."""
    import subprocess
    import sys
    from pathlib import Path

    from ray.cluster_utils import Cluster

    other = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})

    code = (
        "from rlmpc.baselines.rllib import train_rllib\n"
        f"out = train_rllib('ppo', 'acrobot', 0, 64, {str(tmp_path)!r}, eval_episodes=1, "
        "overrides={'training': {'train_batch_size_per_learner': 64, 'minibatch_size': 32, "
        "'num_epochs': 1}})\n"
        "print('episodes', out['eval']['episodes'])\n"
    )
    root = Path(__file__).resolve().parents[1]
    try:
        r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    finally:
        other.shutdown()
    assert r.returncode == 0, r.stderr[-3000:]
    assert "episodes 1" in r.stdout
