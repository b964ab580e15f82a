"""`python -m rlmpc.reproduce`: the catalog, validation before Ray, reports from JSON, the
smoke sweep on Ray Tune, and a sweep killed (``kill -9``) and re-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rlmpc.reproduce.catalog import EXPERIMENTS, PRESETS
from rlmpc.reproduce.cells import parse_env_steps, plan, portable
from rlmpc.reproduce.report import welch, write_reports

ROOT = Path(__file__).resolve().parents[1]
PY = [sys.executable, "-m", "rlmpc.reproduce"]


def test_catalog_has_the_papers_methods():
    t1 = {m.name for m in EXPERIMENTS["table1"].methods}
    assert t1 == {"ppo", "sac", "sb3-ppo", "sb3-sac", "ppo-mppi-rho0", "ppo-mppi-rho0.3", "mppi"}
    t2 = EXPERIMENTS["table2"]
    ad3 = t2.method("ppo-mppi-adaptive0.3")
    assert ad3.argv("acrobot")[-2:] == ["--influence-ratio-lam", "0.99"]
    assert ad3.argv("racing")[-2:] == ["--influence-ratio-lam", "0.98"]
    assert t2.method("ppo-mppi-adaptive0.5").argv("racing")[-1] == "0.95"
    # Fig. 9 scales Table 5's H = 10 and K = 100
    fig9 = EXPERIMENTS["fig9"]
    assert fig9.method("ppo-mppi-H0.5x").argv("lunarlander")[-2:] == ["--horizon", "5"]
    assert fig9.method("ppo-mppi-K2x").argv("acrobot")[-2:] == ["--num-samples", "200"]
    assert "--mixing" in EXPERIMENTS["fig6-8"].method("ppo-mppi-sample-rho0.5").argv("acrobot")


def test_plan_shares_cells_and_reserves_bundles():
    cells = plan(["table1", "table2"], ["acrobot"], [1, 2], PRESETS["paper"])
    keys = [c.key for c in cells]
    assert len(keys) == len(set(keys))
    # Table 2's ρ = 0.3 is Table 1's cell: run once
    assert "table2/acrobot/ppo-mppi-rho0.3/seed1" not in keys
    assert "table1/acrobot/ppo-mppi-rho0.3/seed1" in keys
    assert len(cells) == 2 * (7 + 4)
    ppo_mppi = next(c for c in cells if c.kind == "ppo-mppi")
    # the trial, its learner, its one rollout actor (launch.py's defaults)
    assert [b["CPU"] for b in ppo_mppi.bundles] == [1.0, 1.0, 1.0]
    assert ppo_mppi.env_steps == 1_000_000 and ppo_mppi.eval_episodes == 50
    mppi = next(c for c in cells if c.kind == "mppi")
    assert mppi.env_steps == 0 and mppi.args == ()
    custom = plan(["table2"], ["lunarlander"], [0], PRESETS["paper"], env_steps=4096,
                  methods=["ppo-mppi-rho0.5"])  # fmt: skip
    assert [(c.key, c.env_steps) for c in custom] == [
        ("table2/lunarlander/ppo-mppi-rho0.5/seed0", 4096)
    ]
    # one kind's budget: SAC with less, the others as the preset (or as a plain N) says
    steps = {c.method: c.env_steps for c in plan(["table1"], ["acrobot"], [0], PRESETS["paper"],
             env_steps=parse_env_steps(["rllib-sac=50000"]))}  # fmt: skip
    assert steps == {"ppo": 1_000_000, "sac": 50_000, "sb3-ppo": 1_000_000,
                     "sb3-sac": 1_000_000, "ppo-mppi-rho0": 1_000_000,
                     "ppo-mppi-rho0.3": 1_000_000, "mppi": 0}  # fmt: skip
    assert parse_env_steps(["4096", "rllib-sac=64"]) == {"*": 4096, "rllib-sac": 64}


def test_every_experiment_plans_on_every_env():
    """Every method's options on every env pass launch.py's own checks (before any Ray)."""
    cells = plan(list(EXPERIMENTS), None, [0], PRESETS["paper"])
    assert {c.experiment for c in cells} == set(EXPERIMENTS)  # Table 7's SAC is Table 1's
    assert {c.method for c in cells if c.experiment == "table7"} == {"sb3-ppo", "ppo-mppi-rho0.3"}
    assert len({c.key for c in cells}) == len(cells)


def test_a_finished_cell_of_another_budget_is_refused(tmp_path):
    cell = plan(["table2"], ["acrobot"], [0], PRESETS["paper"], methods=["ppo-mppi-rho0.5"])[0]
    path = cell.result_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"budget": {"env_steps": 4096, "eval_episodes": 50},
                                "eval": {"episodes": 50}}))  # fmt: skip
    r = subprocess.run([*PY, "table2", "--envs", "acrobot", "--methods", "ppo-mppi-rho0.5",
                        "--seeds", "0", "--results", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "another budget" in r.stderr and "4,096 env steps" in r.stderr
    ok = subprocess.run([*PY, "table2", "--envs", "acrobot", "--methods", "ppo-mppi-rho0.5",
                         "--seeds", "0", "--results", str(tmp_path), "--env-steps", "4096",
                         "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert ok.returncode == 0


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["table9"], "EXPERIMENT"),
        (["table1", "--envs", "carla-racing"], "no cells"),
        (["table1", "--wandb-mode", "online"], "WANDB_API_KEY or `wandb login`"),
        (["table1", "--envs", "mars"], "--envs"),
        (["table1", "--seeds", "-1"], "--seeds"),
        (["table1", "--env-steps", "0"], "--env-steps"),
        (["table1", "--env-steps", "sac=64"], "--env-steps"),
        (["table1", "--env-steps", "10", "20"], "--env-steps"),
        (["table1", "--eval-episodes", "0"], "--eval-episodes"),
        (["table1", "--methods", "ppo-mppi-rho0.5"], "--methods"),
        (["table1", "--max-concurrent", "0"], "--max-concurrent"),
        (
            ["table1", "--scheduler", "asha", "--reduction-factor", "inf", "--dry-run"],
            "--reduction-factor",
        ),
    ],
)
def test_bad_input_is_refused_before_ray(args, named):
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    env["NETRC"] = "/nonexistent/netrc"  # no `wandb login` credential either
    r = subprocess.run([*PY, *args, "--results", "/nonexistent/never-written"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert named in r.stderr
    assert "Ray" not in r.stdout + r.stderr.replace("before Ray", "")  # nothing started


def test_online_mode_is_accepted_with_wandb_logins_netrc_entry(tmp_path, monkeypatch, capsys):
    """The same rule as a run's: `wandb login`'s netrc entry is a credential (no network)."""
    from rlmpc.reproduce.__main__ import main

    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_IDENTITY_TOKEN_FILE", raising=False)
    args = ["table1", "--envs", "acrobot", "--wandb-mode", "online", "--from-results",
            "--results", str(tmp_path / "results")]  # fmt: skip
    monkeypatch.setenv("NETRC", str(netrc))
    assert main(args) in (None, 0)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    with pytest.raises(SystemExit) as refused:
        main(args)
    assert refused.value.code == 2 and "wandb login" in capsys.readouterr().err


def _cell(root: Path, experiment: str, env: str, method: str, seed: int, rewards: np.ndarray,
          wall: float = 100.0, steps: int = 1_000_000, load: dict | None = None) -> None:  # fmt: skip
    d = root / experiment / env / method
    d.mkdir(parents=True, exist_ok=True)
    ms = lambda a: {"mean": float(np.mean(a)), "std": float(np.std(a))}
    curve = [{"env_steps": s, "episode_return": float(rewards.mean()) * s / steps} for s in
             range(2048, steps + 1, steps // 20)]  # fmt: skip
    (d / f"seed{seed}.json").write_text(json.dumps({
        "experiment": experiment, "env": env, "method": method, "seed": seed,
        "wall_time_s": wall, "machine": {"cpu": "test cpu", "cores": 2}, "machine_load": load,
        "eval": {"episodes": len(rewards), "success_rate": ms(rewards > -100), "steps": ms(-rewards),
                 "reward": ms(rewards), "env_steps": steps},
        "curve": curve, "git_commit": "abc",
    }))  # fmt: skip


def test_reports_from_results_alone(tmp_path):
    from scipy.stats import ttest_ind

    rng = np.random.default_rng(0)
    base = {s: rng.normal(-90, 20, 50) for s in (1, 2)}
    other = {s: rng.normal(-120, 30, 50) for s in (1, 2)}
    for s in (1, 2):
        _cell(tmp_path, "table2", "acrobot", "ppo-mppi-adaptive0.3", s, base[s])
        _cell(tmp_path, "table2", "acrobot", "ppo-mppi-rho0.5", s, other[s], wall=3600.0)
        _cell(tmp_path, "table1", "acrobot", "ppo-mppi-rho0.3", s, other[s], wall=7200.0)
        _cell(
            tmp_path,
            "table7",
            "acrobot",
            "ppo-mppi-rho0.3",
            s,
            other[s],
            wall=1800.0,
            load={"measured": True, "other_cores": 0.02, "wall_s": 1800.0},
        )
    _cell(
        tmp_path,
        "table1",
        "acrobot",
        "sb3-sac",
        1,
        other[1],
        wall=18000.0,
        load={"measured": True, "other_cores": 0.9, "wall_s": 9000.0},
    )
    # Table 6: Welch's test from the cells' means/stds equals the test on the episodes
    t, p = ttest_ind(np.concatenate(list(base.values())), np.concatenate(list(other.values())),
                     equal_var=False)  # fmt: skip
    row = next(r for r in welch("fig6-8", tmp_path).splitlines() if "ppo-mppi-rho0.5" in r)
    assert f"| {t:.2f} | {p:.3g} |" in row
    (tmp_path / "table2.notes.md").write_text("Adaptive ρ wins on this seed.\n")
    paths = write_reports(["table2", "table7", "fig6-8"], tmp_path, "test")
    text = (tmp_path / "table2.md").read_text()
    assert "Adaptive ρ wins on this seed." in text  # hand-written findings carried over
    assert "Adaptive ρ" not in (tmp_path / "table7.md").read_text()
    # Table 2 reads Table 1's ρ = 0.3 cell, and puts the paper's figures beside ours
    assert "ppo-mppi-rho0.3" in text and "`results/table1/acrobot/`" in text
    mean_of_means = np.mean([other[s].mean() for s in (1, 2)])
    assert f"{mean_of_means:.2f}" in text
    assert "*paper*" in text
    assert (tmp_path / "table2_curves.png").stat().st_size > 5000
    # Table 7: its own cells, and Table 1's SAC, each with the load it was timed beside
    rows = {r[1]: r for r in _table_rows((tmp_path / "table7.md").read_text()) if len(r) == 7}
    assert rows["ppo-mppi-rho0.3"][3] == "0.50 h (1,800 s)"
    assert rows["ppo-mppi-rho0.3"][4] == "15.17 h (30× ours)"  # 15 h 9 min 58 s, Acrobot
    assert rows["ppo-mppi-rho0.3"][6] == "0.02 (alone); 0.02 (alone)"
    assert rows["sb3-sac"][3] == "5.00 h (18,000 s)" and rows["sb3-sac"][4] == "—"
    assert rows["sb3-sac"][6] == "0.90 (not alone, over 50% of its time)"
    assert tmp_path / "fig6-8.md" in paths


def _table_rows(md: str) -> list[list[str]]:
    return [[x.strip() for x in line.strip("|").split("|")] for line in md.splitlines()
            if line.startswith("| ") and not line.startswith("| method") and "*paper*" not in line]  # fmt: skip


def _wait_for(paths: list[Path], proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if all(p.is_file() for p in paths):
            return
        time.sleep(0.2)
    raise AssertionError(f"{[str(p) for p in paths if not p.is_file()]} never written")


#: one method of each kind (RLlib, SB3, PPO-MPPI fixed and adaptive, MPPI alone) over both
#: tables: the default suite's sweep; the whole preset (11 cells, ~4 min alone and up to 11
#: beside other Ray tests) is `slow`
ONE_OF_EACH_KIND = ("ppo", "sb3-ppo", "ppo-mppi-rho0.3", "mppi", "ppo-mppi-adaptive0.3")


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("methods", [ONE_OF_EACH_KIND, pytest.param(None, marks=pytest.mark.slow)],
                         ids=["one-of-each-kind", "every-method"])  # fmt: skip
def test_smoke_preset_killed_and_rerun(tmp_path, methods):
    """The acceptance, in one sweep: ``--preset smoke`` runs its methods on Acrobot through
    Tune; the driver is killed (``kill -9``) once some cells finished; the same command then
    finishes without redoing them; every table cell is a trial's JSON."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    results = tmp_path / "results"
    args = [*PY, "--preset", "smoke", "--results", str(results), "--runs", str(tmp_path / "runs")]
    if methods:
        args += ["--methods", *methods]
    every = {m.name for e in ("table1", "table2") for m in EXPERIMENTS[e].methods}
    wanted = set(methods or every)
    n = len(wanted)
    early = [
        results / f"table1/acrobot/{m}/seed0.json" for m in ("ppo", "sb3-ppo" if methods else "sac")
    ]
    driver = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True, env=env)  # fmt: skip
    try:
        _wait_for(early, driver)
        os.kill(driver.pid, signal.SIGKILL)  # the driver only, mid-sweep
        driver.wait()
    finally:
        try:  # what the dead driver left (its Ray, the trials)
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    finished = {p: (p.read_text(), p.stat().st_mtime_ns) for p in results.glob("*/*/*/seed*.json")}
    assert 2 <= len(finished) < n
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for p, before in finished.items():  # not run again, not rewritten
        assert f"skip {p.relative_to(results).with_suffix('')}: finished" in r.stdout
        assert (p.read_text(), p.stat().st_mtime_ns) == before
    counts = f"{n - len(finished)} cells run, {len(finished)} already finished, 0 stopped early"
    assert counts in r.stdout and "0 failed" in r.stdout
    # Tune ran each cell as a trial: each JSON names its trial, and the trials of the second
    # sweep reported their JSON (the first sweep's last reports may have died with it); a
    # trial reports every iteration, and only its last report names the JSON
    reported = set()
    for f in (tmp_path / "runs" / "tune").rglob("result.json"):
        for line in f.read_text().splitlines():
            reported.add(json.loads(line).get("result"))
    cells = sorted(results.glob("*/*/*/seed*.json"))
    assert all(json.loads(c.read_text())["tune_trial"].startswith("_trial_") for c in cells)
    # each cell recorded the load it ran beside, seeing its own trial (Table 7's wall times)
    loads = [json.loads(c.read_text())["machine_load"] for c in cells]
    assert all(ld["measured"] and ld["max_trials"] >= 1 for ld in loads), loads
    assert {str(c) for c in cells if c not in finished} <= reported
    assert {c.parent.name for c in cells} == wanted  # every method, once
    for name in ("table1", "table2"):
        for row in _table_rows((results / f"{name}.md").read_text()):
            method, seed = row[0], int(row[1])
            owner = EXPERIMENTS[name].owner(method)
            cell = json.loads(
                (results / owner / "acrobot" / method / f"seed{seed}.json").read_text()
            )
            assert row[3] == f"{cell['eval']['success_rate']['mean']:.2f} ± " \
                             f"{cell['eval']['success_rate']['std']:.2f}"  # fmt: skip
            assert cell["git_commit"] and cell["eval"]["episodes"] == 1
    # the baselines logged through Tune's W&B callback, offline
    assert list((tmp_path / "runs" / "wandb").rglob("*.wandb"))


def test_a_trials_learner_and_actors_live_in_its_placement_group(tmp_path):
    """A PPO-MPPI trial reserves its coordinator, learner and actor bundles together, and its
    components are scheduled into them: with Ray holding exactly those 3 CPUs, a component
    placed outside the group would wait forever."""
    import ray

    from rlmpc.reproduce.sweep import run_sweep

    cells = plan(["table2"], ["acrobot"], [0], PRESETS["smoke"], methods=["ppo-mppi-rho0.5"],
                 serial=False)  # fmt: skip
    assert sum(b["CPU"] for b in cells[0].bundles) == 3
    ray.init(address="local", num_cpus=3, include_dashboard=False,
             object_store_memory=256 * 1024**2)  # fmt: skip
    try:
        status = run_sweep(cells, tmp_path / "results", tmp_path / "runs", wandb_mode="disabled")
    finally:
        ray.shutdown()
    assert status == {cells[0].key: "done"}
    cell = json.loads(cells[0].result_path(tmp_path / "results").read_text())
    assert cell["eval"]["episodes"] == 1 and cell["curve"][-1]["env_steps"] == 1024


def test_a_cell_names_no_folder_of_the_machine_it_ran_on(tmp_path):
    """An absolute ``--runs`` is spelled RUNS in the committed commands; a relative one stays."""
    runs = tmp_path / "sweep" / "runs"
    cmd = f"python launch.py --env acrobot --runs-dir {runs}/table1/acrobot/ppo-mppi-rho0"
    record = {"command": cmd, "invocations": [{"command": cmd, "git_commit": "abc"}], "seed": 1,
              "config": {"run": {"runs_dir": f"{runs}/table1/acrobot/ppo-mppi-rho0"}}}  # fmt: skip
    out = portable(record, runs)
    assert out["config"]["run"]["runs_dir"] == "RUNS/table1/acrobot/ppo-mppi-rho0"
    expected = "python launch.py --env acrobot --runs-dir RUNS/table1/acrobot/ppo-mppi-rho0"
    assert out["command"] == out["invocations"][0]["command"] == expected
    assert out["invocations"][0]["git_commit"] == "abc" and out["seed"] == 1
    assert str(tmp_path) not in json.dumps(out) and record["command"] == cmd
    assert portable(record, Path("runs/reproduce")) == record
