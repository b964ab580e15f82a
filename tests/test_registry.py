"""The env registry: what the system reads of an env, and an env the system has never heard of."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import envs
from learners.policy import NetworkConfig
from rlmpc.run.cli import main, parse
from tests import toy_env


@pytest.fixture
def toy():
    yield toy_env.register()
    toy_env.unregister()


def test_the_papers_envs_are_registered_with_their_presets_and_columns():
    # the built-in tasks come first; tests that bring their own env (test_custom_env) may have
    # registered more in this process
    assert envs.names()[:5] == [
        "acrobot",
        "lunarlander",
        "racing",
        "racing-stadium",
        "carla-racing",
    ]
    assert envs.names(local=True)[:4] == ["acrobot", "lunarlander", "racing", "racing-stadium"]
    carla = envs.spec("carla-racing")
    assert carla.planner is envs.spec("racing").planner and carla.probe == "racing"
    assert carla.resources(3) == {"carla": 3.0} and envs.spec("racing").resources(3) == {}
    assert envs.spec("lunarlander").presets["ppo"]["gamma"] == 0.999
    assert envs.spec("rlmpc/RacingCircuitDZ-v0").name == "racing"
    assert envs.spec("rlmpc/RacingDZ-v0").name == "racing-stadium"  # the committed results' id
    # App. B.3's r̂ excludes the terminal reward: the circuit's virtual data too
    for name in ("racing", "carla-racing"):
        assert envs.spec(name).presets["run"]["virtual_terminal"] == "exclude"
    assert "virtual_terminal" not in envs.spec("racing-stadium").presets["run"]
    assert envs.spec("lunarlander").episode_metrics({"distance_to_pad": 0.5}) == {
        "distance_to_pad": 0.5
    }
    assert envs.spec("racing").episode_metrics({"collision": False, "off_track": True}) == {
        "collision_or_offtrack": 1.0
    }
    with pytest.raises(ValueError, match="unknown env"):
        envs.spec("cartpole")


def test_an_env_registered_from_the_tests_trains_two_iterations(toy, tmp_path, capsys):
    """Registered here, unknown to `rlmpc/`: the command line offers it with its presets, the
    system trains it (serially), and its own episode figure reaches the evaluation."""
    argv = ["--env", "toy-point", "--serial", "--runs-dir", str(tmp_path), "--run-name", "toy",
            "--no-progress", "--wandb-mode", "disabled"]  # fmt: skip
    invocation = parse(argv)
    assert invocation.serial and invocation.cfg.iterations == 2
    assert type(invocation.cfg.planner) is toy_env.ToyPlannerConfig
    main(argv)
    run_dir = tmp_path / "toy"
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    assert [r["env_steps"] for r in rows] == [32, 64]
    assert all(r["virtual_samples"] == 3 * r["env_steps"] for r in rows)
    assert {"eval/success_rate", "eval/final_distance"} <= set(rows[1])  # started after 1
    final = json.loads((run_dir / "eval.json").read_text())
    assert final["env"] == "toy-point" and final["episodes"] == 2
    assert final["final_distance"]["mean"] > 0  # the env's own figure (its registry entry)
    assert "final_distance" in capsys.readouterr().out


def test_recorded_data_resolve_to_the_task_they_ran_at_its_version(toy):
    """A task that changes under its name gets a new version; the old one, kept under another
    name, lists the (name, version) it was. Data without a version are version 1."""
    from dataclasses import replace

    from rlmpc.system.checkpoint import spec_from_plain, spec_to_plain
    from rlmpc.system.worker import WorkerSpec

    old = envs.spec("toy-point")
    envs.register(replace(old, name="toy-point-v1", id="rlmpc/ToyPointV1-v0",
                          formerly=(("toy-point", 1),)))  # fmt: skip
    envs.register(replace(old, version=2))
    try:
        assert envs.resolve_task("toy-point", 2) == "toy-point"
        assert envs.resolve_task("toy-point", 1) == envs.resolve_task("toy-point") == "toy-point-v1"
        with pytest.raises(ValueError, match="version 3 is not registered"):
            envs.resolve_task("toy-point", 3)
        spec = WorkerSpec("toy-point", 2, 2, toy_env.ToyPlannerConfig(), NetworkConfig(), 0)
        plain = spec_to_plain(spec)
        assert plain["task_version"] == 2 and spec_from_plain(plain).env == "toy-point"
        del plain["task_version"]  # a checkpoint written before versions were recorded
        assert spec_from_plain(plain).env == "toy-point-v1"
    finally:
        envs.register(old)
        envs.registry._REGISTRY.pop("toy-point-v1")
        envs.registry.ENV_IDS.pop("toy-point-v1", None)


def test_the_stadium_keeps_the_racing_task_of_before_the_circuit():
    """`racing` is the circuit (version 3); data recorded as `racing` without a version (or at
    version 1) are the stadium's, now `racing-stadium`; the first circuit's (version 2) are no
    task's now, and say so."""
    assert envs.spec("racing").version == 3 and envs.spec("racing-stadium").version == 1
    assert envs.resolve_task("racing") == envs.resolve_task("racing", 1) == "racing-stadium"
    assert envs.resolve_task("racing", 3) == "racing"
    with pytest.raises(ValueError, match="'racing' version 2 is not registered"):
        envs.resolve_task("racing", 2)
    assert envs.spec("racing-stadium").id == "rlmpc/RacingDZ-v0"  # the old gymnasium id


@pytest.mark.parametrize("task, now", [("racing", "racing-stadium"), ("acrobot", "acrobot")])
def test_a_run_written_before_the_re_cut_loads_and_resumes_on_the_task_it_trained(
    task, now, tmp_path
):
    """Run directories written at f5e2454, before the house re-cut and the task versions
    (``tests/data/before-recut``: ``launch.py --env TASK --serial --total-env-steps 2048
    --hidden-sizes 8 8 --ensemble-size 2 --checkpoint-every 1``, one iteration each): their
    checkpoints load (the planner preset resolved by the env's name), and ``--resume``
    continues them on the task they trained — the stadium for the old ``racing``."""
    import shutil

    from rlmpc.run.train import train
    from rlmpc.system.checkpoint import load_checkpoint

    run = tmp_path / f"{task}-f5e2454"
    shutil.copytree(Path(__file__).parent / "data" / "before-recut" / run.name, run)
    assert load_checkpoint(run).counters["iteration"] == 1
    invocation = parse(["--resume", str(run), "--total-env-steps", "4096"])
    assert invocation.cfg.run.env == now
    train(invocation.cfg, resume=invocation.resume, serial=True)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    assert "resumed at iteration 1, 2048 env steps" in (run / "events.log").read_text()
    assert f"task_version: {envs.spec(now).version}" in (run / "config.yaml").read_text()
