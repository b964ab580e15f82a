"""Result cells: a finished run recorded as JSON, tables with the paper's rows, speed-ups, curves."""

from __future__ import annotations

import json

import pytest
import yaml

from rlmpc.reproduce import results


def _fake_run(path, seed, success, returns, env="lunarlander"):
    """A run directory as `rlmpc.run.train` leaves it (the files `results.add` reads)."""
    path.mkdir(parents=True)
    stat = lambda m, s: {"mean": m, "std": s}
    evaluation = {"env": env, "episodes": 50, "env_steps": 1000, "success_rate": stat(success, 0.1),
                  "steps": stat(300.0, 5.0), "reward": stat(200.0, 9.0),
                  "distance_to_pad": stat(0.05, 0.01)}  # fmt: skip
    (path / "eval.json").write_text(json.dumps(evaluation))
    (path / "config.yaml").write_text(yaml.safe_dump({"run": {"env": env, "seed": seed}}))
    (path / "meta.json").write_text(
        json.dumps({"command": "python launch.py", "git_commit": "abc"})
    )
    rows = [
        {"env_steps": 100 * (i + 1), "episode_return": r, "rho": 0.3} for i, r in enumerate(returns)
    ]
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))


def test_cells_make_a_table_with_the_papers_row(tmp_path):
    root = tmp_path / "results"
    for seed, success in ((1, 0.9), (2, 0.7)):
        _fake_run(tmp_path / f"run{seed}", seed, success, [1.0, 2.0])
        cell = results.add(tmp_path / f"run{seed}", "table1", "ppo-mppi-rho0.3", root=root)
        assert cell == root / "table1/lunarlander/ppo-mppi-rho0.3" / f"seed{seed}.json"
        recorded = json.loads(cell.read_text())
        assert (
            recorded["command"] == "python launch.py" and recorded["curve"][1]["env_steps"] == 200
        )
    md = results.table("table1", root=root)
    # across seeds: mean ± population std of the per-seed means
    assert "| ppo-mppi-rho0.3 | 1, 2 | 1,000 | 0.80 ± 0.10 | 0.05 ± 0.00 | 200.00 ± 0.00 |" in md
    assert "| *paper* | | 1M | 0.46 ± 0.50 | 0.40 ± 0.35 | 44.20 ± 215.50 |" in md


def test_seeds_of_another_budget_get_their_own_row(tmp_path):
    """A diagnostic seed at 300k beside a 1M seed: two rows (largest budget first), never one
    mean over both; the paper's row once, after them."""
    root = tmp_path / "results"
    for seed, success, steps in ((0, 0.5, 300), (1, 0.9, 1000), (2, 0.7, 1000)):
        _fake_run(tmp_path / f"run{seed}", seed, success, [1.0, 2.0])
        ev = json.loads((tmp_path / f"run{seed}" / "eval.json").read_text())
        (tmp_path / f"run{seed}" / "eval.json").write_text(json.dumps({**ev, "env_steps": steps}))
        results.add(tmp_path / f"run{seed}", "table1", "ppo-mppi-rho0.3", root=root)
    rows = [r for r in results.table("table1", root=root).splitlines() if r.startswith("| ")]
    assert rows[1:] == [
        "| ppo-mppi-rho0.3 | 1, 2 | 1,000 | 0.80 ± 0.10 | 0.05 ± 0.00 | 200.00 ± 0.00 |",
        "| ppo-mppi-rho0.3 | 0 | 300 | 0.50 ± 0.10 | 0.05 ± 0.01 | 200.00 ± 9.00 |",
        "| *paper* | | 1M | 0.46 ± 0.50 | 0.40 ± 0.35 | 44.20 ± 215.50 |",
    ]


def test_speedup_counts_env_steps_to_the_reference_best(tmp_path):
    """Reference reaches its best (smoothed, window 1) at 400 steps; the other run at 200."""
    ref = {"curve": [{"env_steps": s, "episode_return": r} for s, r in
                     ((100, 0.0), (200, 1.0), (300, 2.0), (400, 3.0), (500, 2.5))]}  # fmt: skip
    fast = {"curve": [{"env_steps": s, "episode_return": r} for s, r in
                      ((100, 1.0), (200, 3.5), (300, 4.0))]}  # fmt: skip
    out = results.speedup(ref, fast, window=1)
    assert out["best"] == 3.0 and out["reference_steps"] == 400 and out["other_steps"] == 200
    assert out["factor"] == pytest.approx(2.0)
    never = {"curve": [{"env_steps": 100, "episode_return": 0.0}]}
    assert results.speedup(ref, never, window=1)["factor"] == 0.0  # never reached: no speed-up


def test_curves_plot_one_panel_per_env(tmp_path):
    _fake_run(tmp_path / "run", 1, 0.9, [1.0, 2.0, 3.0])
    cell = results.add(tmp_path / "run", "exp", "m", root=tmp_path / "results")
    out = results.plot_curves([cell], "rho", tmp_path / "rho.png")
    assert out.is_file() and out.stat().st_size > 1000


def test_readme_blocks_are_filled_from_the_cells(tmp_path):
    root = tmp_path / "results"
    _fake_run(tmp_path / "run", 1, 0.9, [1.0])
    results.add(tmp_path / "run", "table1", "ppo-mppi-rho0.3", root=root)
    _fake_run(tmp_path / "acro", 0, 1.0, [1.0], env="acrobot")
    results.add(tmp_path / "acro", "table1", "ppo-mppi-rho0.3", root=root)
    text = "intro\n<!-- results table table1 lunarlander -->\nstale\n<!-- /results -->\nend\n"
    new = results.refresh_tables(text, root=root)
    assert "stale" not in new and new.startswith("intro\n") and new.endswith("\nend\n")
    assert "| ppo-mppi-rho0.3 | 1 | 1,000 | 0.90 ± 0.10 |" in new and "acrobot" not in new
    assert results.refresh_tables(new, root=root) == new  # idempotent


def test_the_docs_tables_match_the_committed_results():
    """`python -m rlmpc.reproduce.results docs` was run after the last cell was added."""
    docs = results.documents()
    assert results.RESULTS.parent / "docs" / "results.md" in docs
    stale = results.refresh_documents(check=True)
    assert stale == [], "run: python -m rlmpc.reproduce.results docs"
