"""Sweeps a user writes (``--grid FILE.yaml``) and trials Tune can prune: every learner
iteration is reported, an ASHA sweep stops the trial that falls behind, a grid of two
settings makes two cells and a table, and a bad grid file is refused before Ray starts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from rlmpc.reproduce.__main__ import main
from rlmpc.reproduce.catalog import EXPERIMENTS, PRESETS, register_experiment
from rlmpc.reproduce.cells import plan
from rlmpc.reproduce.grid import load_grid
from tests import toy_env

#: options that keep a toy trial short: no videos, no TensorBoard (tests/test_run_media.py has them)
LEAN = ["--eval-video-frames", 0, "--no-tensorboard"]


@pytest.fixture(scope="module")
def local_ray():
    """The toy task and one embedded Ray of two CPUs for the module's sweeps."""
    import ray

    toy_env.register()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
             object_store_memory=256 * 1024**2)  # fmt: skip
    yield
    ray.shutdown()
    toy_env.unregister()


@pytest.fixture
def grid_file(tmp_path):
    """Writes a grid file; the experiments it registers are forgotten afterwards."""
    before = set(EXPERIMENTS)

    def write(**content) -> Path:
        path = tmp_path / f"{content.get('experiment', 'grid')}.yaml"
        path.write_text(yaml.safe_dump(content))
        return path

    yield write
    for name in set(EXPERIMENTS) - before:
        del EXPERIMENTS[name]


def test_an_asha_sweep_stops_the_trial_that_falls_behind(local_ray, grid_file, tmp_path):
    """Four trials of the toy task, 3 iterations each, judged on ρ (fixed at ρ0: a figure whose
    order is known) at 32 and 64 env steps; two at a time, so the last trial (ρ0 = 0) meets
    a rung where others were recorded, and is stopped there. The trials that ran through
    reported every iteration, and only they have cells."""
    from rlmpc.reproduce.sweep import asha, run_sweep

    path = grid_file(experiment="asha", envs=["toy-point"], seeds=[0], args=LEAN,
                     product={"--influence-ratio-rho0": [0.3, 0.2, 0.1, 0.0]})  # fmt: skip
    grid = load_grid(path)
    register_experiment(grid.experiment)
    cells = plan(["asha"], None, [0], PRESETS["paper"], {"ppo-mppi": 96}, 2, serial=True)
    assert [c.method for c in cells] == [f"influence-ratio-rho0_{r}" for r in (0.3, 0.2, 0.1, 0)]
    results, runs = tmp_path / "results", tmp_path / "runs"
    status = run_sweep(cells, results, runs, max_concurrent=2, wandb_mode="disabled",
                       scheduler=asha(cells, "rho", "max", grace_steps=32, reduction_factor=2))  # fmt: skip
    stopped = {k for k, v in status.items() if v.startswith("stopped")}
    assert cells[-1].key in stopped and len(stopped) < 4, status
    assert all(status[c.key] == "done" for c in cells if c.key not in stopped), status
    for c in cells:
        assert c.result_path(results).is_file() == (c.key not in stopped)
    done = next(c for c in cells if status[c.key] == "done")
    (trial,) = [p for p in (runs / "tune").rglob("result.json")
                if json.loads(p.read_text().splitlines()[0])["config"]["cell"]["method"] == done.method]  # fmt: skip
    rows = [json.loads(line) for line in trial.read_text().splitlines()]
    assert [r["env_steps"] for r in rows] == [32, 64, 96]  # every learner iteration
    assert "record_json" in rows[-1] and "final/reward" in rows[-1]
    cell = json.loads(done.result_path(results).read_text())
    assert [r["env_steps"] for r in cell["curve"]] == [32, 64, 96]


def test_a_grid_of_two_settings_makes_two_cells_and_a_table(local_ray, grid_file, tmp_path):
    path = grid_file(experiment="mine", envs="toy-point", seeds=[0], env_steps=64,
                     eval_episodes=2, args=["--num-candidates", 3, *LEAN],
                     methods={"rho0.3": ["--influence-ratio-rho0", 0.3],
                              "adaptive": ["--influence-ratio-mode", "adaptive"]})  # fmt: skip
    results = tmp_path / "results"
    assert main(["--grid", str(path), "--results", str(results), "--runs", str(tmp_path / "runs"),
                 "--serial", "--wandb-mode", "disabled"]) == 0  # fmt: skip
    cells = sorted(results.glob("mine/toy-point/*/seed0.json"))
    assert [c.parent.name for c in cells] == ["adaptive", "rho0.3"]
    record = json.loads(cells[1].read_text())
    assert record["config"]["run"]["num_candidates"] == 3 and record["budget"]["env_steps"] == 64
    assert record["config"]["influence_ratio"]["rho0"] == 0.3
    table = (results / "mine.md").read_text()
    assert "| rho0.3 | 0 | 64 |" in table and "| adaptive | 0 | 64 |" in table
    assert f"python -m rlmpc.reproduce --grid {path} --from-results" in table
    assert (results / "mine_curves.png").is_file()
    (results / "mine.md").unlink()  # the grid file alone rebuilds its table from the cells
    assert main(["--grid", str(path), "--results", str(results), "--from-results"]) == 0
    assert (results / "mine.md").read_text() == table


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ({"methods": {"a": ["--bogus", 1]}}, "launch.py has no option --bogus"),
        ({"methods": {"a": ["--seed", 1]}}, "--seed is set by the sweep"),
        ({"product": {"--num-candidates": [0, 2]}}, "--num-candidates"),  # launch.py's check
        ({"methods": {"a": []}, "colour": "red"}, "colour: unknown key"),
        ({"methods": {"a": []}, "envs": ["mars"]}, "envs: unknown ['mars']"),
        ({"methods": {"a b": []}}, "a method name is a folder name"),
        ({}, "no methods"),
    ],
)
def test_a_bad_grid_file_is_refused_before_ray_naming_it(grid_file, tmp_path, capsys, content,
                                                         named):  # fmt: skip
    path = grid_file(**{"experiment": "bad", "envs": ["acrobot"], **content})
    with pytest.raises(SystemExit) as err:
        main(["--grid", str(path), "--results", str(tmp_path / "r"), "--runs", str(tmp_path / "w")])
    assert err.value.code == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "w").exists()  # nothing ran


def test_a_grid_lists_its_cells_with_the_catalogs_budgets_unless_it_gives_its_own(
    grid_file, capsys
):
    path = grid_file(experiment="listed", envs=["acrobot", "lunarlander"], seeds=[0, 1],
                     product={"--horizon": [10, 20]}, baselines=["mppi"])  # fmt: skip
    assert main(["--grid", str(path), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 * 2 * 3  # envs × seeds × (two settings + MPPI alone)
    assert lines[0].startswith("listed/acrobot/horizon_10/seed0: ppo-mppi, 1,000,000 env steps")
    assert "--horizon 10" in lines[0] and any(line.startswith("listed/lunarlander/mppi/seed1:")
                                              for line in lines)  # fmt: skip
