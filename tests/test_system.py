"""The whole system on a real local Ray: counters, weights, ρ, faults, resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import ray
import torch
import yaml

from learners.policy import NetworkConfig
from learners.ppo_loss import PPOConfig
from learners.rho import InfluenceRatioConfig
from rlmpc.run.cli import parse
from rlmpc.run.config import RunConfig, TrainConfig
from rlmpc.run.evaluate import main as evaluate_main
from rlmpc.run.runlog import WandbConfig
from rlmpc.run.train import Run, train
from rlmpc.system.backend import ComponentDied, actor_name
from rlmpc.system.checkpoint import latest_checkpoint, load_checkpoint
from rlmpc.system.learner import TrainingDiverged
from tests import toy_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    toy_env.register()  # seconds-long episodes: evaluations in the runs below cost little
    ray.init(address="local", num_cpus=6, include_dashboard=False, object_store_memory=200 * 1024**2,
             log_to_driver=False)  # fmt: skip
    yield
    ray.shutdown()
    toy_env.unregister()


def tiny(tmp_path: Path, name: str, **run) -> TrainConfig:
    """The test suite's point mass (episodes of at most 40 steps), 2 actors × 2 envs, 16-step
    fragments, K = 16: a fraction of a second per iteration."""
    base = dict(
        env="toy-point", num_actors=2, envs_per_actor=2, total_env_steps=64 * 4, eval_every=2,
        eval_episodes=2, final_eval_episodes=2, checkpoint_every=2, run_name=name,
        runs_dir=str(tmp_path), progress=False, threads=1,
    )  # fmt: skip
    base.update(run)
    return TrainConfig(
        run=RunConfig(**base),
        ppo=PPOConfig(n_steps=64, batch_size=16, n_epochs=2),
        influence_ratio=InfluenceRatioConfig(mode="adaptive", rho0=0.3, lam=0.5),
        networks=NetworkConfig(hidden_sizes=(32, 32)),
        planner=toy_env.ToyPlannerConfig(),
        wandb=WandbConfig(wandb_mode="offline"),
    )


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in open(run_dir / "metrics.jsonl")]


def test_training_run_counters_weights_rho_and_run_dir(tmp_path):
    cfg = tiny(tmp_path, "run")
    run_dir = train(cfg)
    r = rows(run_dir)
    assert [x["iteration"] for x in r] == [1, 2, 3, 4]
    # env steps learned on = real transitions produced; virtual = (M-1) × real
    assert [x["env_steps"] for x in r] == [64, 128, 192, 256]
    assert all(x["virtual_samples"] == 3 * x["env_steps"] for x in r)
    assert all(x["real_samples"] == 64 for x in r)
    # the learner's weight version advances and actors act with at most one version of lag
    assert [x["version"] for x in r] == [1, 2, 3, 4]
    assert r[0]["policy_lag"] == 0 and all(0 <= x["policy_lag"] <= 1 for x in r)
    # Alg. 2 anneals ρ monotonically
    rho = [x["rho"] for x in r]
    assert all(b < a for a, b in zip([0.3, *rho], rho, strict=False))
    for name in ("config.yaml", "metrics.jsonl", "eval.json", "learning_curves.png",
                 "eval_episodes.png", "events.log"):  # fmt: skip
        assert (run_dir / name).is_file(), name
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "ckpt_000002.pt", "ckpt_000004.pt",
    ]  # fmt: skip
    assert any(p.name.startswith("offline-run") for p in (run_dir / "wandb").iterdir())
    ev = json.loads((run_dir / "eval.json").read_text())
    assert ev["episodes"] == 2 and set(ev["success_rate"]) == {"mean", "std"}
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["run"]["num_candidates"] == 4
    # the evaluation command on the run's newest checkpoint
    out = tmp_path / "evaluated"
    evaluate_main(
        ["--checkpoint", str(run_dir), "--episodes", "3", "--out", str(out), "--record", "2"]
    )
    ev = json.loads((out / "eval.json").read_text())
    assert ev["episodes"] == 3 and ev["env_steps"] == 256 and ev["steps"]["mean"] > 0
    assert (out / "eval_episodes.png").stat().st_size > 10_000


def test_killed_actor_is_restarted_and_counters_stay_exact(tmp_path):
    cfg = tiny(tmp_path, "fault", total_env_steps=64 * 8, eval_every=0, checkpoint_every=100)
    run_dir = Path(cfg.run.runs_dir) / "fault"
    run_dir.mkdir()
    run = Run(cfg, run_dir)
    actor = run.backend.handles[actor_name(1)]
    victim = ray.get(actor.pid.remote())
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("summary", run.train()))
    thread.start()
    deadline = time.time() + 120
    while run.coordinator.counters.iteration < 2 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive() and outcome["summary"] is not None
    assert ray.get(actor.pid.remote()) != victim  # Ray restarted it
    run.close()
    r = rows(run_dir)
    assert [x["env_steps"] for x in r] == [64 * i for i in range(1, 9)]
    assert r[-1]["virtual_samples"] == 3 * 64 * 8
    assert r[-1]["actor_restarts"] >= 1 and r[-1]["actors_live"] == 2
    assert "actor 1 died" in (run_dir / "events.log").read_text()


def test_resume_continues_exactly(tmp_path, uninterrupted):
    """Stopped after 2 of 6 iterations and resumed: the same rows, evaluations included, as
    the run that was never stopped (episodes end and restart on both sides of the stop)."""
    part = tiny(tmp_path, "part", total_env_steps=64 * 6, stop_after=2)
    part_dir = train(part)
    assert len(rows(part_dir)) == 2 and not (part_dir / "eval.json").exists()
    train(replace(part, run=replace(part.run, stop_after=0)), resume=part_dir)
    a, b = rows(uninterrupted), rows(part_dir)
    for key in ("iteration", "env_steps", "virtual_samples", "rho", "episodes"):
        assert [x[key] for x in a] == [x[key] for x in b], key
    assert _numbers(part_dir) == _numbers(uninterrupted)
    assert "resumed at iteration 2" in (part_dir / "events.log").read_text()


def test_serial_and_ray_runs_give_the_same_metrics(tmp_path, monkeypatch):
    """The same config on Ray and in one process (--serial): the same rows, evaluations
    included, and the same final evaluation. The env is the test suite's own (registered for
    here, shipped to the actors with its registry entry).

    On Ray the learner's weights go to the actors and evaluators through the object store:
    the driver pulls them once as the run starts (a learner that cannot start fails there),
    then only to write a checkpoint and for the final evaluation (which runs in the driver),
    never per iteration."""
    from rlmpc.system.coordinator import Coordinator
    from rlmpc.system.evaluations import Evaluations
    from rlmpc.system.records import Weights

    pulls, where, ray_get = [], ["loop"], ray.get

    def counted_get(refs, *args, **kwargs):
        out = ray_get(refs, *args, **kwargs)
        pulls.extend(where[-1] for o in (out if isinstance(out, list) else [out])
                     if isinstance(o, Weights))  # fmt: skip
        return out

    def inside(name, method):
        def wrapped(*args, **kwargs):
            where.append(name)
            try:
                return method(*args, **kwargs)
            finally:
                where.pop()

        return wrapped

    cfg = parse(
        ["--env", "toy-point", "--num-actors", "2", "--envs-per-actor", "2",
         "--total-env-steps", "128", "--eval-every", "1", "--checkpoint-every", "100",
         "--runs-dir", str(tmp_path), "--run-name", "on-ray", "--no-progress",
         "--wandb-mode", "disabled"]
    ).cfg  # fmt: skip
    with monkeypatch.context() as m:
        m.setattr(ray, "get", counted_get)
        m.setattr(Coordinator, "_checkpoint", inside("checkpoint", Coordinator._checkpoint))
        m.setattr(Evaluations, "final", inside("final", Evaluations.final))
        on_ray = train(cfg)
    assert pulls.count("loop") == 1 and {"checkpoint", "final"} <= set(pulls), pulls
    serial = train(replace(cfg, run=replace(cfg.run, run_name="serial")), serial=True)
    numbers = lambda d: [
        {k: v for k, v in r.items() if not (k.startswith("time/") or k in ("sps", "time"))}
        for r in rows(d)
    ]
    assert numbers(on_ray) == numbers(serial)
    assert [r["iteration"] for r in rows(serial) if "eval/reward" in r] == [2, 3, 4]
    assert (on_ray / "eval.json").read_text() == (serial / "eval.json").read_text()


def test_adaptive_rho_with_one_value_head_is_refused_naming_both_options():
    """A rule between two sections (Alg. 2 reads the heads' variance), checked before Ray starts."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), "--influence-ratio-mode", "adaptive",
         "--ensemble-size", "1"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "--influence-ratio-mode" in proc.stderr and "--ensemble-size" in proc.stderr
    assert "Ray" not in proc.stderr and "ray" not in proc.stdout.lower()


def test_a_learner_that_cannot_start_is_reported_as_the_learner(tmp_path):
    """Past validation (forced here), the learner's constructor fails on its Ray actor: the run
    stops naming the learner and its error, not the rollout actors that wait for weights."""
    cfg = tiny(tmp_path, "no-learner", eval_every=0)
    object.__setattr__(cfg, "networks", NetworkConfig(hidden_sizes=(32, 32), ensemble_size=1))
    run_dir = Path(cfg.run.runs_dir) / "no-learner"
    run_dir.mkdir()
    run = Run(cfg, run_dir)
    try:
        with pytest.raises(ComponentDied) as err:
            run.train()
    finally:
        run.close()
    assert err.value.component == "learner" and "ensemble_size" in str(err.value.cause)
    assert "learner died" in (run_dir / "events.log").read_text()


@pytest.mark.parametrize(
    "args, option",
    [
        (["--num-candidates", "0"], "--num-candidates"),
        (["--influence-ratio-rho0", "1.5"], "--influence-ratio-rho0"),
        (["--influence-ratio-lam", "1.0"], "--influence-ratio-lam"),
        (["--learner-device", "tpu"], "--learner-device"),
        (["--actor-device", "cuda"], ("--actor-device", "--actor-gpus")),
        (["--num-samples", "0"], "--num-samples"),
        (["--env", "racing", "--boundary-margin", "7"], "--boundary-margin"),  # the env's track
        (["--n-steps", "100", "--num-actors", "3"], "n_steps"),
        (["--env", "pong"], "--env"),
        (["--resume", "/nonexistent/run"], "--resume"),
        # GPU shares of the rollout actors (`tests/test_ray_gpus.py` checks Ray's accounting)
        (["--actor-gpus", "0.25"], ("--actor-device", "--actor-gpus")),
        (["--actor-gpus", "1.5", "--actor-device", "cuda"], "--actor-gpus"),
        (["--actor-gpus", "-1", "--actor-device", "cuda"], "--actor-gpus"),
        pytest.param(
            ["--actor-device", "cuda", "--actor-gpus", "0.5"],
            "--actor-device",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present"),
        ),
    ],
)
def test_bad_options_are_refused_before_ray_starts(args, option):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    options = (option,) if isinstance(option, str) else option
    assert all(o in error for o in options), error
    assert "Ray" not in proc.stderr and "ray" not in proc.stdout.lower()


@pytest.mark.parametrize("serial", [False, True])
def test_a_run_that_goes_non_finite_stops_there_naming_its_last_good_checkpoint(tmp_path, serial):
    """Adam at a learning rate of 1e30 leaves finite but huge weights after iteration 1; the
    next iteration's losses overflow. The run stops in that iteration (nothing logged or
    checkpointed from it), naming the newest checkpoint, whose weights are finite."""
    cfg = tiny(tmp_path, "diverges", checkpoint_every=1, eval_every=0)
    cfg = replace(cfg, ppo=replace(cfg.ppo, learning_rate=1e30))
    with pytest.raises(TrainingDiverged) as err:
        train(cfg, serial=serial)
    run_dir = tmp_path / "diverges"
    logged = rows(run_dir)
    assert err.value.iteration == len(logged) + 1 <= cfg.iterations
    newest = latest_checkpoint(run_dir)
    assert err.value.checkpoint == str(newest) and str(newest) in str(err.value)
    state = load_checkpoint(newest)
    assert state.iteration == len(logged)
    for part in (state.weights.policy, state.weights.values):
        assert all(bool(torch.isfinite(t).all()) for t in part.values() if t.is_floating_point())
    assert "non-finite" in (run_dir / "events.log").read_text()


def test_evaluate_refuses_bad_options(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rlmpc.run.evaluate", "--checkpoint", str(tmp_path), "--episodes", "0"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2 and "--episodes" in proc.stderr


def _kill(run: Run, component: str, timeout: float = 120) -> int:
    """SIGKILL a component's process, found through the run's current backend (during an
    in-place restore the old backend is closed and the new one not there yet: wait)."""
    deadline = time.time() + timeout
    while True:
        handle = run.backend.handles.get(component)
        try:
            if handle is not None:
                pid = ray.get(handle.pid.remote(), timeout=30)
                break
        except ray.exceptions.RayError:
            pass
        assert time.time() < deadline, f"{component} not found"
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return pid


def _train_killing(run: Run, kills: list[tuple[int, str]], timeout: float = 900) -> dict:
    """Train ``run`` in a thread; kill each ``(iteration, component)`` once the run has
    reached that iteration, and wait for its effect (an actor restart, an in-place restore)
    before the next. Returns ``{"summary": ...}`` or ``{"error": ...}``."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["summary"] = run.train()
        except BaseException as err:  # reported to the test
            outcome["error"] = err

    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.time() + timeout
    seen = lambda: (run.coordinator.counters.actor_restarts, run.restores)
    for iteration, component in kills:
        while run.coordinator.counters.iteration < iteration and time.time() < deadline:
            time.sleep(0.02)
        before = seen()
        _kill(run, component)
        while seen() == before and thread.is_alive() and time.time() < deadline:
            time.sleep(0.02)
    thread.join(timeout=max(1.0, deadline - time.time()))
    assert not thread.is_alive(), "the run did not finish"
    return outcome


#: figures that depend on the machine's timing, or count the failures themselves
_TIMING = ("sps", "time", "actor_restarts", "restores")


def _numbers(run_dir: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if not (k.startswith("time/") or k in _TIMING)}
        for r in rows(run_dir)
    ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The run the recovery tests compare against: 6 iterations, evaluations every 2."""
    return train(tiny(tmp_path_factory.mktemp("whole"), "whole", total_env_steps=64 * 6))


def test_a_killed_learner_is_restored_in_place_and_the_run_ends_as_if_nothing_happened(
    tmp_path, uninterrupted
):
    whole = uninterrupted
    cfg = tiny(tmp_path, "killed", total_env_steps=64 * 6)
    run_dir = Path(cfg.run.runs_dir) / "killed"
    run_dir.mkdir()
    run = Run(cfg, run_dir)
    outcome = _train_killing(run, [(3, "learner")])
    run.close()
    assert "summary" in outcome, outcome
    assert _numbers(run_dir) == _numbers(whole)  # evaluations included
    events = (run_dir / "events.log").read_text()
    assert "learner died" in events and "restored in place from iteration 2" in events
    assert rows(run_dir)[-1]["restores"] == 1
    assert json.loads((run_dir / "eval.json").read_text()) == json.loads(
        (whole / "eval.json").read_text()
    )


def test_when_restores_are_used_up_the_last_line_says_how_to_resume(tmp_path):
    cfg = tiny(tmp_path, "gives-up", total_env_steps=64 * 6, max_restores=0)
    proc_dir = Path(cfg.run.runs_dir) / "gives-up"
    proc_dir.mkdir()
    run = Run(cfg, proc_dir)
    outcome = _train_killing(run, [(3, "real_shard")])
    run.close()
    err = outcome.get("error")
    assert err is not None and "real_shard died" in str(err)
    assert "--max-restores 0" in (proc_dir / "events.log").read_text()


@pytest.mark.slow
def test_chaos_every_component_killed_once_and_the_run_ends_as_if_nothing_happened(tmp_path):
    """The issue's chaos run: the learner, a shard, the evaluator and an actor killed by PID
    at different iterations; the run finishes on its own and its rows equal an
    uninterrupted run's (Acrobot's snapshots are exact, so actor replays are too)."""
    kw = dict(total_env_steps=64 * 14, checkpoint_every=3, eval_every=2)
    whole = train(tiny(tmp_path, "whole", **kw))
    cfg = tiny(tmp_path, "chaos", **kw)
    run_dir = Path(cfg.run.runs_dir) / "chaos"
    run_dir.mkdir()
    run = Run(cfg, run_dir)
    kills = [(2, actor_name(1)), (4, "learner"), (7, "real_shard"), (9, "evaluator"),
             (11, actor_name(0))]  # fmt: skip
    outcome = _train_killing(run, kills)
    run.close()
    assert "summary" in outcome, outcome
    assert _numbers(run_dir) == _numbers(whole)
    last = rows(run_dir)[-1]
    assert last["restores"] == 3 and last["actor_restarts"] == 2
    assert json.loads((run_dir / "eval.json").read_text()) == json.loads(
        (whole / "eval.json").read_text()
    )


def test_a_stalled_actor_is_killed_replaced_and_replayed(tmp_path, uninterrupted):
    """An actor frozen mid-run (SIGSTOP: alive, silent) is declared stalled after
    --actor-timeout, killed, restarted by Ray and replayed: the run ends as if nothing
    happened."""
    whole = uninterrupted
    cfg = tiny(tmp_path, "stalled", total_env_steps=64 * 6, actor_timeout=10.0)
    run_dir = Path(cfg.run.runs_dir) / "stalled"
    run_dir.mkdir()
    run = Run(cfg, run_dir)
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("summary", run.train()))
    thread.start()
    deadline = time.time() + 300
    while run.coordinator.counters.iteration < 2 and time.time() < deadline:
        time.sleep(0.02)
    os.kill(ray.get(run.backend.handles[actor_name(0)].pid.remote()), signal.SIGSTOP)
    thread.join(timeout=max(1.0, deadline - time.time()))
    run.close()
    assert not thread.is_alive() and outcome.get("summary") is not None
    events = (run_dir / "events.log").read_text()
    assert "actor 0 sent no fragment for 10 s; killed as stalled" in events
    assert "actor 0 died" in events and rows(run_dir)[-1]["actor_restarts"] == 1
    assert _numbers(run_dir) == _numbers(whole)
