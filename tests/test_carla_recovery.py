"""CARLA servers that come back, on stand-in server processes (`tests.carla_standin`): the env
claims a replacement, a missing town stops a run before it trains, and, on a real local Ray
cluster, a server killed mid-run by PID is restarted by the node's watchdog while the run goes
on, and one that stays away costs fragments, not the actors nor the run.

The cluster: a head (learner, shards) and one "CARLA node" whose raylet runs the actors with
``RLMPC_CARLA_STATE_DIR`` set to this module's registry and ``tests/standin_client`` first on
its PYTHONPATH (its ``carla`` talks to the stand-in servers; the driver's is the real one).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray
from ray.cluster_utils import Cluster

from envs import planner_config
from envs.racing.carla_client import CarlaMapMissing, ClientParams
from envs.racing.carla_env import CarlaRacingEnv
from envs.racing.carla_servers import claim_server, release_server
from learners.policy import NetworkConfig
from learners.ppo_loss import PPOConfig
from learners.rho import InfluenceRatioConfig
from rlmpc.ops import carla_servers as cs
from rlmpc.ops import watchdog as wd
from rlmpc.run.config import RunConfig, TrainConfig
from rlmpc.run.runlog import WandbConfig
from rlmpc.run.train import Run
from rlmpc.system.backend import ComponentFailed, actor_name
from tests.carla_standin import REPO, client_module, free_base, wait_for, write_launcher

K = 3  # servers: two actors' envs and the evaluator's


def start_servers(carla_root: Path, state_dir: Path, count: int, *extra: str,
                  env_wait_s: float = 60.0) -> list[cs.ServerStatus]:  # fmt: skip
    cfg = cs.ServerConfig(count=count, carla_root=str(carla_root), base_port=free_base(3 * count + 3),
                          tm_base_port=free_base(count + 1), startup_timeout_s=30.0,
                          env_wait_s=env_wait_s, extra_args=extra)  # fmt: skip
    statuses = cs.start_servers(cfg, state_dir)
    assert all(s.state == "healthy" for s in statuses), statuses
    return statuses


# ---------------------------------------------------------------- the env alone (no Ray)


@pytest.fixture
def standin(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "carla", client_module())
    root, state = tmp_path / "carla", tmp_path / "state"
    write_launcher(root)
    yield root, state
    cs.stop_servers(state, grace_s=2.0)


def test_an_env_whose_server_stays_away_claims_another_free_one(standin):
    root, state = standin
    start_servers(root, state, 2)
    claim = claim_server(state)  # what claim_env_kwargs does in a rollout actor
    fast = ClientParams(timeout=1.0, attempts=2, backoff=0.1, reconnect_wait=1.0)
    env = CarlaRacingEnv(host=claim.host, port=claim.port, tm_port=claim.tm_port,
                         servers=str(state), client=fast)  # fmt: skip
    env.reset(seed=0)
    assert not env.step(np.zeros(2, np.float32))[4]["server_lost"]
    mine = next(r for r in cs._read_registry(state) if r.rpc_port == claim.port)
    os.killpg(mine.pid, signal.SIGKILL)  # no watchdog: it stays away
    assert wait_for(lambda: not cs.is_running(mine))
    assert env.step(np.zeros(2, np.float32))[4]["server_lost"]
    env.reset(seed=1)  # waits reconnect_wait, then moves to the other server
    assert env.sim.port != claim.port and not env.step(np.zeros(2, np.float32))[4]["server_lost"]
    claimers = {s.record.rpc_port: s.claimed_by for s in cs.server_status(state)}
    assert claimers == {claim.port: None, env.sim.port: os.getpid()}  # old one given back
    env.close()
    release_server(claim._replace(port=env.sim.port), state)


def test_a_server_without_the_town_is_named_before_anything_is_loaded(standin):
    root, state = standin
    (status,) = start_servers(root, state, 1, "-standin-maps=Town01,Town10HD_Opt")
    port = status.record.rpc_port
    with pytest.raises(CarlaMapMissing, match=f"127.0.0.1:{port} has no map Town07"):
        CarlaRacingEnv(port=port, tm_port=status.record.tm_port,
                       client=ClientParams(timeout=2.0, attempts=1))  # fmt: skip


# ---------------------------------------------------------------- runs on a local Ray cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("carla-node")
    root, state = base / "carla", base / "state"
    write_launcher(root)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 3})
    path = os.pathsep.join([str(REPO / "tests" / "standin_client"), str(REPO)])
    c.add_node(num_cpus=3, resources={"carla": K},
               env_vars={"RLMPC_CARLA_STATE_DIR": str(state), "PYTHONPATH": path})  # fmt: skip
    ray.init(address=c.address, log_to_driver=False)
    c.wait_for_nodes()
    yield root, state
    ray.shutdown()
    c.shutdown()


@pytest.fixture
def servers(cluster):
    root, state = cluster
    yield root, state
    cs.stop_servers(state, grace_s=2.0)  # and the watchdog


def config(tmp_path: Path, name: str, iterations: int, **run) -> TrainConfig:
    return TrainConfig(
        run=RunConfig(
            env="carla-racing", num_actors=2, envs_per_actor=1, total_env_steps=32 * iterations,
            eval_every=0, final_eval_episodes=0, checkpoint_every=1000, run_name=name,
            runs_dir=str(tmp_path), progress=False, learner_device="cpu", **run,
        ),
        ppo=PPOConfig(n_steps=32, batch_size=16, n_epochs=1),
        influence_ratio=InfluenceRatioConfig(rho0=0.3),
        networks=NetworkConfig(hidden_sizes=(16,)),
        planner=planner_config("racing", num_samples=16),
        wandb=WandbConfig(wandb_mode="disabled"),
    )  # fmt: skip


def train_in_thread(cfg: TrainConfig, tmp_path: Path) -> tuple[Run, threading.Thread, Path]:
    run_dir = tmp_path / cfg.run.run_name
    run_dir.mkdir()
    run = Run(cfg, run_dir)
    errors: list[BaseException] = []

    def target():
        try:
            run.train()
        except BaseException as err:  # the test fails on it below
            errors.append(err)

    thread = threading.Thread(target=target)
    thread.errors = errors
    thread.start()
    return run, thread, run_dir


def actors_server(run: Run, state: Path) -> cs.ServerRecord:
    """The server rollout actor 0 claimed (not the evaluator's)."""
    pid = ray.get(run.backend.handles[actor_name(0)].pid.remote())
    (rec,) = [s.record for s in cs.server_status(state) if s.claimed_by == pid]
    return rec


def finish(run: Run, thread: threading.Thread, run_dir: Path) -> list[dict]:
    thread.join(timeout=600)
    run.close()
    assert not thread.is_alive() and not thread.errors, thread.errors
    return [json.loads(line) for line in open(run_dir / "metrics.jsonl")]


def test_a_server_killed_mid_run_is_restarted_by_the_watchdog_and_the_run_finishes(servers, tmp_path):
    """Acceptance (issue 16): the watchdog restarts a server killed by PID on its own ports;
    the env that lost it drops its episode (counted as lost) and gets it back; the actor
    stays alive, no fragment is lost, the run finishes."""
    root, state = servers
    start_servers(root, state, K)
    wd.start_detached(state, wd.WatchConfig(interval_s=0.5, check_timeout_s=2.0))
    run, thread, run_dir = train_in_thread(config(tmp_path, "killed", iterations=12), tmp_path)
    c = run.coordinator.counters
    assert wait_for(lambda: c.iteration >= 3, timeout=300)
    victim = actors_server(run, state)
    kills = 0
    while c.episodes_faulted == 0 and kills < 3:  # a kill that lands in a reset costs no episode
        os.killpg(cs._read_registry(state)[victim.index].pid, signal.SIGKILL)  # as a crash would
        kills += 1
        back = lambda n=kills: cs._read_registry(state)[victim.index].restarts == n
        assert wait_for(back, timeout=120)
        later = lambda at=c.iteration: c.iteration >= at + 2 or not thread.is_alive()
        assert wait_for(later, timeout=300)  # the fragments that hold the loss are learned on
    rows = finish(run, thread, run_dir)
    after = cs._read_registry(state)[victim.index]
    assert after.restarts == kills and after.pid != victim.pid and after.rpc_port == victim.rpc_port
    log = (state / wd.LOG).read_text()
    assert f"server {victim.index}" in log and "dead; restarted" in log
    assert len(rows) == 12 and rows[-1]["iteration"] == 12
    last = rows[-1]
    # the episodes it cost: dropped and counted as lost, never in the returns
    assert last["episodes_faulted"] == 1 and sum(r["faults/lost"] for r in rows) == 1
    assert last["actor_restarts"] == 0 and last["actors_live"] == 2  # the actors stayed
    assert last["lost_fragments"] == 0 and all(r["real_samples"] == 32 for r in rows)
    events = (run_dir / "events.log").read_text()
    assert "actor 0 dropped 1 episode(s) to faults" in events and "lost: 1" in events


@pytest.mark.slow  # ~1-2 min: a run that waits out a server twice
def test_a_server_that_stays_away_costs_fragments_not_the_actor(servers, tmp_path):
    """No watchdog: the env gives up after the node's env wait (1 s) and finds no free server;
    its actor's calls fail with CarlaUnavailable (a RayTaskError on the driver), counted as
    lost fragments while the other actor's are learned on, until the server is restarted."""
    root, state = servers
    start_servers(root, state, K, env_wait_s=1.0)
    cfg = config(tmp_path, "away", iterations=12, max_actor_failures=100)
    run, thread, run_dir = train_in_thread(cfg, tmp_path)
    assert wait_for(lambda: run.coordinator.counters.iteration >= 2, timeout=300)
    victim = actors_server(run, state)
    os.killpg(victim.pid, signal.SIGKILL)
    assert wait_for(lambda: run.coordinator.counters.lost_fragments >= 2, timeout=300)
    cs.restart_unhealthy(state, startup_timeout_s=30.0)  # back, by hand
    rows = finish(run, thread, run_dir)
    last = rows[-1]
    assert last["lost_fragments"] >= 2 and last["actor_restarts"] == 0
    assert last["actors_live"] == 2 and len(rows) == 12
    assert {r["real_samples"] for r in rows} == {16, 32}  # one actor's fragment, or both
    assert rows[-1]["real_samples"] == 32  # both again at the end
    assert "lost its fragment (CarlaUnavailable" in (run_dir / "events.log").read_text()


def test_a_missing_town_stops_the_run_before_it_trains(servers, tmp_path):
    root, state = servers
    start_servers(root, state, K, "-standin-maps=Town01,Town02,Town10HD_Opt")
    run_dir = tmp_path / "nomap"
    run_dir.mkdir()
    run = Run(config(tmp_path, "nomap", iterations=4), run_dir)
    start = time.monotonic()
    try:
        with pytest.raises(ComponentFailed) as err:
            run.train()
    finally:
        run.close()
    assert isinstance(err.value.cause, CarlaMapMissing)
    msg = str(err.value)
    assert "no map Town07" in msg and "AdditionalMaps_0.9.16" in msg and "ImportAssets.sh" in msg
    assert run.coordinator.counters.iteration == 0 and run.coordinator.version == 0
    metrics = run_dir / "metrics.jsonl"
    assert not metrics.exists() or metrics.read_text() == ""  # nothing trained
    assert "stopped: actor" in (run_dir / "events.log").read_text()
    assert time.monotonic() - start < 300
