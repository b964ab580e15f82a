"""Results as data: finished runs recorded as JSON cells under ``results/``, tables built from them.

``python -m rlmpc.reproduce.results add RUN_DIR --experiment E --method NAME`` records a finished run
(its ``eval.json``, resolved config, command, git commit, machine, wall time and learning
curve) as ``results/E/<env>/NAME/seed<k>.json``, and copies its ``eval_episodes.png`` and
``learning_curves.png`` beside it. ``python -m rlmpc.reproduce.results table E`` prints the
experiment's table (markdown): per method, the final evaluation's mean ± std over its 50
episodes for each seed, and the mean ± std of the per-seed means across seeds. The result
tables in docs/results.md (and README's headline table) are this command's output, written in
place by ``... results docs`` (and checked by ``docs --check`` in the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import envs
from rlmpc.reproduce.paper import PAPER

RESULTS = Path(__file__).resolve().parents[2] / "results"


#: what a cell's curve keeps of each ``metrics.jsonl`` row (Alg. 2's and the bound's
#: estimates where the run logged them: ``rho/*``, ``bound/*``)
CURVE_KEYS = ("env_steps", "episode_return", "success_rate", "rho", "ensemble_var")
CURVE_PREFIXES = ("rho/", "bound/")


def learning_curve(run_dir: Path) -> list[dict[str, float]]:
    """Per learner iteration: env steps, the recent episodes' return and success, ρ, σ̄², and
    the ``rho/*`` and ``bound/*`` figures a run logged."""
    rows = []
    with open(run_dir / "metrics.jsonl") as f:
        for line in f:
            d = json.loads(line)
            if "env_steps" in d and "rho" in d:
                row = {k: d.get(k) for k in CURVE_KEYS}
                row.update((k, v) for k, v in d.items() if k.startswith(CURVE_PREFIXES))
                rows.append(row)
    return rows


def add(run_dir: Path, experiment: str, method: str, root: Path = RESULTS) -> Path:
    """Record a finished run as a result cell; returns the JSON's path."""
    run_dir = Path(run_dir)
    evaluation = json.loads((run_dir / "eval.json").read_text())
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    meta_file = run_dir / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    curve = learning_curve(run_dir)
    env = envs.resolve_task(config["run"]["env"], config.get("task_version"))
    env = envs.spec(env).name  # a user's MODULE:ATTRIBUTE is filed under its env's name
    seed = config["run"]["seed"]
    out = root / experiment / env / method
    out.mkdir(parents=True, exist_ok=True)
    cell = {
        "experiment": experiment, "env": env, "env_ref": config["run"]["env"],
        "method": method, "seed": seed,
        "task_version": envs.spec(env).version,
        **meta, "wall_time_s": meta.get("wall_time_s"), "eval": evaluation, "config": config,
        "curve": curve,
    }  # fmt: skip
    path = out / f"seed{seed}.json"
    tmp = path.with_suffix(".json.tmp")  # atomically: a half-written cell never looks finished
    tmp.write_text(json.dumps(cell, indent=1))
    os.replace(tmp, path)
    for png in ("eval_episodes.png", "learning_curves.png"):
        if (run_dir / png).is_file():
            shutil.copyfile(run_dir / png, out / f"seed{seed}_{png}")
    return path


def _ms(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.pstdev(values):.2f}"


def cells(experiment: str, root: Path = RESULTS) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((root / experiment).glob("*/*/seed*.json"))]


def by_budget(runs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``runs`` (cells of one method and env) grouped by the env steps they ran, largest
    budget first, each group by seed: a mean over seeds never mixes budgets."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for c in runs:
        groups.setdefault(c["eval"].get("env_steps"), []).append(c)
    return [sorted(groups[k], key=lambda c: c["seed"])
            for k in sorted(groups, key=lambda k: -1 if k is None else k, reverse=True)]  # fmt: skip


def table(experiment: str, root: Path = RESULTS, env: str | None = None,
          footnote: bool = True, found: list[dict[str, Any]] | None = None) -> str:  # fmt: skip
    """Markdown: one table per env (or only ``env``'s), a row per method (seeds' figures and
    their mean ± std). ``found``: these cells instead of the experiment's directory's."""
    by_env: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for c in cells(experiment, root) if found is None else found:
        if env is None or c["env"] == env:
            by_env.setdefault(c["env"], {}).setdefault(c["method"], []).append(c)
    lines = []
    for name, methods in by_env.items():
        try:  # the env's table columns (registry; a user's env by the reference it ran as)
            cols = envs.spec(name).columns
        except ValueError:
            ref = next(c.get("env_ref", name) for m in methods.values() for c in m)
            cols = envs.spec(ref).columns
        where = sorted(
            {f"`results/{c['experiment']}/{name}/`" for m in methods.values() for c in m}
        )
        lines += [f"**{name}** ({', '.join(where)})", ""]
        lines.append("| method | seeds | env steps | " + " | ".join(h for _, h in cols) + " |")
        lines.append("|---|---|---|" + "---|" * len(cols))
        for method, all_runs in methods.items():
            for runs in by_budget(all_runs):  # seeds of one budget per row, never mixed
                seeds = ", ".join(str(c["seed"]) for c in runs)
                steps = runs[0]["eval"].get("env_steps")
                figures = []
                for key, _ in cols:
                    per_seed = [c["eval"][key]["mean"] for c in runs if c["eval"].get(key)]
                    if len(runs) == 1 and runs[0]["eval"].get(key):
                        e = runs[0]["eval"][key]
                        figures.append(f"{e['mean']:.2f} ± {e['std']:.2f}")
                    else:
                        figures.append(_ms(per_seed))
                steps_s = "" if steps is None else f"{steps:,}"
                lines.append(f"| {method} | {seeds} | {steps_s} | " + " | ".join(figures) + " |")
            paper = PAPER.get(name, {}).get(method)
            if paper:
                figures = [f"{paper[k][0]:.2f} ± {paper[k][1]:.2f}" if k in paper else "—"
                           for k, _ in cols]  # fmt: skip
                lines.append("| *paper* | | 1M | " + " | ".join(figures) + " |")
        lines.append("")
    if not footnote:
        return "\n".join(lines).rstrip("\n")
    lines.append("One seed: mean ± std over its evaluation episodes. Several seeds: mean ± std "
                 "across seeds of each seed's mean over its evaluation episodes.")  # fmt: skip
    return "\n".join(lines)


_BLOCK = re.compile(r"(<!-- results table (\S+)(?: (\S+))? -->\n)(.*?)(<!-- /results -->)", re.S)


def refresh_tables(text: str, root: Path = RESULTS) -> str:
    """``text`` with every block between ``<!-- results table EXPERIMENT [ENV] -->`` and
    ``<!-- /results -->`` replaced by ``table(EXPERIMENT, env=ENV)``: the docs' result
    tables are generated from ``results/``, never typed."""

    def fill(m: re.Match[str]) -> str:
        body = table(m.group(2), root, m.group(3), footnote=False)
        return f"{m.group(1)}\n{body}\n\n{m.group(5)}"

    return _BLOCK.sub(fill, text)


def documents(root: Path = RESULTS) -> list[Path]:
    """The repository's markdown files that hold generated result tables (README.md, docs/)."""
    repo = root.parent
    paths = [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]
    return [p for p in paths if p.is_file() and _BLOCK.search(p.read_text())]


def refresh_documents(root: Path = RESULTS, check: bool = False) -> list[Path]:
    """Rewrite every document's result tables from ``root`` (or, with ``check``, write nothing);
    returns the documents whose tables were (or would be) changed."""
    stale = []
    for path in documents(root):
        text = path.read_text()
        new = refresh_tables(text, root)
        if new != text:
            stale.append(path)
            if not check:
                path.write_text(new)
    return stale


def smoothed(curve: list[dict[str, Any]], key: str, window: int = 10) -> list[tuple[int, float]]:
    """``(env_steps, moving average of key over window iterations)``, where defined."""
    rows = [(r["env_steps"], r[key]) for r in curve if r.get(key) is not None]
    out = []
    for i in range(len(rows)):
        chunk = [v for _, v in rows[max(0, i - window + 1) : i + 1]]
        out.append((rows[i][0], statistics.fmean(chunk)))
    return out


def speedup(reference: dict[str, Any], other: dict[str, Any], key: str = "episode_return",
            window: int = 10) -> dict[str, float]:  # fmt: skip
    """The paper's §5.2 figure: the reference run's best smoothed ``key``, the env steps at
    which each run first reaches it, and their ratio (reference / other; 0: the other run never
    reaches it)."""
    ref, oth = smoothed(reference["curve"], key, window), smoothed(other["curve"], key, window)
    best = max(v for _, v in ref)
    first = lambda rows: next((s for s, v in rows if v >= best), None)
    r, o = first(ref), first(oth)
    return {"best": best, "reference_steps": r, "other_steps": o,
            "factor": (r / o) if o else 0.0}  # fmt: skip


def plot_curves(paths: list[Path], key: str, out: Path, window: int = 10) -> Path:
    """One panel per env: ``key`` (smoothed) against env steps, one line per cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loaded = [json.loads(Path(p).read_text()) for p in paths]
    by_env: dict[str, list[dict[str, Any]]] = {}
    for c in loaded:
        by_env.setdefault(c["env"], []).append(c)
    fig, axes = plt.subplots(1, len(by_env), figsize=(4.5 * len(by_env), 3.3), squeeze=False)
    for ax, (env, group) in zip(axes[0], by_env.items(), strict=True):
        for c in group:
            rows = smoothed(c["curve"], key, window)
            label = f"{c['method']} seed {c['seed']}"
            ax.plot([s for s, _ in rows], [v for _, v in rows], lw=1.2, label=label)
        ax.set_title(env, fontsize=10)
        ax.set_xlabel("env steps")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add", help="record a finished run as a result cell")
    a.add_argument("run_dir", type=Path)
    a.add_argument("--experiment", required=True, help="e.g. table1, lunarlander-terminal")
    a.add_argument("--method", required=True, help="e.g. ppo-mppi-rho0.3")
    t = sub.add_parser("table", help="print an experiment's table (markdown)")
    t.add_argument("experiment")
    c = sub.add_parser("curves", help="plot a metric of result cells against env steps")
    c.add_argument("cells", nargs="+", type=Path, help="seed<k>.json files")
    c.add_argument("--key", default="episode_return", help="episode_return | success_rate | rho")
    c.add_argument("--window", type=int, default=10, help="moving-average window (iterations)")
    c.add_argument("--out", type=Path, required=True, help="PNG to write")
    s = sub.add_parser("speedup", help="env steps to reach a reference run's best smoothed return")
    s.add_argument("reference", type=Path)
    s.add_argument("other", type=Path)
    s.add_argument("--window", type=int, default=10)
    r = sub.add_parser(
        "docs",
        aliases=["readme"],
        help="regenerate the result tables of docs/results.md and README.md from results/",
    )
    r.add_argument("--check", action="store_true", help="exit 1 if a document is out of date")
    args = parser.parse_args(argv)
    if args.cmd in ("docs", "readme"):
        stale = refresh_documents(check=args.check)
        names = ", ".join(str(p.relative_to(RESULTS.parent)) for p in stale) or "none"
        if args.check:
            if stale:
                sys.exit(f"result tables differ from results/ in {names}: run "
                         "`python -m rlmpc.reproduce.results docs`")  # fmt: skip
            print("the documents' result tables match results/")
            return
        print(f"regenerated the result tables of: {names}")
        return
    if args.cmd == "curves":
        print(plot_curves(args.cells, args.key, args.out, args.window))
        return
    if args.cmd == "speedup":
        ref, oth = (json.loads(p.read_text()) for p in (args.reference, args.other))
        for k, v in speedup(ref, oth, window=args.window).items():
            print(f"{k}: {v}")
        return
    if args.cmd == "add":
        if not (args.run_dir / "eval.json").is_file():
            parser.error(f"{args.run_dir} has no eval.json: not a finished run")
        print(add(args.run_dir, args.experiment, args.method))
    else:
        if not (RESULTS / args.experiment).is_dir():
            parser.error(f"no experiment {args.experiment!r} under {RESULTS}")
        print(table(args.experiment))


if __name__ == "__main__":
    main(sys.argv[1:])
