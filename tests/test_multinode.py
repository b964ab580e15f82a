"""A multi-node Ray cluster simulated on this machine: CARLA-bound actors, a node lost mid-run.

Racing stands in for CARLA racing (no CARLA server here): the rollout actors request the
same ``carla`` resource a carla-racing run does, so placement and node loss are the real
mechanisms; only the simulator differs.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from envs import planner_config
from learners.policy import NetworkConfig
from learners.ppo_loss import PPOConfig
from learners.rho import InfluenceRatioConfig
from rlmpc.run.config import RunConfig, TrainConfig
from rlmpc.run.runlog import WandbConfig
from rlmpc.run.train import Run
from rlmpc.system.backend import EVALUATOR, actor_name


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 3,
            "_system_config": {
                "health_check_initial_delay_ms": 0,
                "health_check_period_ms": 500,
                "health_check_failure_threshold": 4,
            },
        },
    )
    nodes = [c.add_node(num_cpus=2, resources={"carla": 1}) for _ in range(2)]
    ray.init(address=c.address, log_to_driver=False)
    c.wait_for_nodes()
    yield c, nodes
    ray.shutdown()
    c.shutdown()


def config(tmp_path: Path, iterations: int) -> TrainConfig:
    return TrainConfig(
        run=RunConfig(
            env="racing", num_actors=2, envs_per_actor=2, total_env_steps=64 * iterations,
            actor_resources=("carla=1",), actor_restart_timeout=5.0, eval_every=0,
            final_eval_episodes=0, checkpoint_every=1000, run_name="multinode",
            runs_dir=str(tmp_path), progress=False, learner_device="cpu",
        ),
        ppo=PPOConfig(n_steps=64, batch_size=16, n_epochs=1),
        influence_ratio=InfluenceRatioConfig(rho0=0.3),
        networks=NetworkConfig(hidden_sizes=(16,)),
        planner=planner_config("racing", num_samples=16),
        wandb=WandbConfig(wandb_mode="disabled"),
    )  # fmt: skip


def start(tmp_path: Path) -> tuple[Run, Path, list[str]]:
    """A 10-iteration run built (not started), its directory, its actors' nodes."""
    cfg = config(tmp_path, iterations=10)
    run_dir = tmp_path / "multinode"
    run_dir.mkdir()
    run = Run(cfg, run_dir)
    actors = [run.backend.handles[actor_name(i)] for i in range(cfg.run.num_actors)]
    return run, run_dir, ray.get([a.node_id.remote() for a in actors])


def lose_mid_run(c: Cluster, run: Run, node, also=None) -> None:
    """Train ``run`` in a thread; at iteration 3 call ``also`` (if any), then remove ``node``;
    the run must finish. The coordinator waits at iteration 3 until both are done: a run of
    0.1 s iterations (Racing's with per-fragment diagnostics) otherwise finished its 10
    iterations inside ``also``, before the node was lost."""
    at, go, gather = threading.Event(), threading.Event(), run.coordinator._gather

    def gated(index: int):
        if index == 3 and not go.is_set():
            at.set()
            go.wait(timeout=120)
        return gather(index)

    run.coordinator._gather = gated
    thread = threading.Thread(target=run.train)
    thread.start()
    try:
        assert at.wait(timeout=120), "the run never reached iteration 3"
        if also is not None:
            also()
        c.remove_node(node)
    finally:
        go.set()
    thread.join(timeout=300)
    run.close()
    assert not thread.is_alive()


def test_carla_actors_land_on_carla_nodes_and_survive_a_lost_node(cluster, tmp_path):
    c, nodes = cluster
    run, run_dir, placed = start(tmp_path)
    assert sorted(placed) == sorted(
        n.node_id for n in nodes
    )  # one per CARLA node, none on the head
    lose_mid_run(c, run, next(n for n in nodes if n.node_id == placed[1]))
    events = (run_dir / "events.log").read_text()
    # the evaluator (a core component) has no resources of its own and usually sits on the
    # head; where it landed on the lost node the run restored in place (the next test)
    restored = "restored in place" in events
    check_rows(run_dir, {32} if restored else {64, 32})
    assert "actor 1" in events and "dropped" in events


def check_rows(run_dir: Path, samples: set[int]) -> None:
    """10 iterations, one actor live at the end, every iteration learned on exactly the
    fragments it counted (``samples``: 2 actors' worth, then 1's)."""
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    assert len(rows) == 10 and rows[-1]["actors_live"] == 1
    steps = [r["env_steps"] for r in rows]
    assert all(
        b - a == r["real_samples"] for a, b, r in zip([0, *steps], steps, rows, strict=False)
    )
    assert {r["real_samples"] for r in rows} == samples and rows[-1]["real_samples"] == 32
    assert all(r["virtual_samples"] == 3 * r["env_steps"] for r in rows)


def test_a_restore_in_place_after_a_lost_node_drops_the_actor_it_cannot_place(cluster, tmp_path):
    """A node is lost together with a core component (here the evaluator, killed at the same
    moment): the run restores in place, and of the two CARLA-bound actors it builds again
    only one finds a CARLA node. The other is dropped after --actor-restart-timeout (it
    used to wait for a place forever, and the run with it), and the run finishes on one."""
    c, nodes = cluster
    carla = lambda: [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("carla")]
    while len(carla()) < 2:  # the test above took one away
        nodes.append(c.add_node(num_cpus=2, resources={"carla": 1}))
    c.wait_for_nodes()
    run, run_dir, placed = start(tmp_path)

    def kill_the_evaluator() -> None:
        ray.kill(run.backend.handles[EVALUATOR], no_restart=True)
        time.sleep(1.0)

    lose_mid_run(c, run, next(n for n in nodes if n.node_id == placed[1]), kill_the_evaluator)
    events = (run_dir / "events.log").read_text()
    assert "evaluator died" in events and "restored in place" in events, events
    assert "within --actor-restart-timeout 5 s; dropped, 1 actors left" in events, events
    check_rows(run_dir, {32})
