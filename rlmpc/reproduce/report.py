"""Tables and figures of a sweep, built from the cells' JSON alone.

For each experiment: ``results/<experiment>.md`` (per env, a row per method: each seed's
mean ± std over its evaluation episodes, or across seeds the mean ± std of the per-seed
means; the paper's figures beside ours, `rlmpc.reproduce.paper`) and
``results/<experiment>_curves.png`` (Fig. 3's style: the smoothed training return against
env steps, mean and a band of ± std over seeds, one panel per env, one line per method).
Table 7 reports wall time per 1M env steps; Figs. 6–8 add Table 6's Welch t-tests.
Findings written by hand about an experiment's runs live in ``results/<experiment>.notes.md``
and are carried into its report, after the table, each time it is rebuilt.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from rlmpc.reproduce.catalog import EXPERIMENTS
from rlmpc.reproduce.results import by_budget, cells, smoothed, table


def _seed_cells(experiment: str, root: Path) -> list[dict[str, Any]]:
    """The experiment's cells, each read from the experiment that owns it, in method order."""
    exp = EXPERIMENTS[experiment]
    by_owner = {o: cells(o, root) for o in {exp.owner(m.name) for m in exp.methods}}
    envs_ = {*exp.envs, *exp.reported}
    own = lambda c, m: exp.owner(m.name) == experiment or c["env"] in envs_  # shared: its envs
    return [c for m in exp.methods for c in by_owner[exp.owner(m.name)]
            if c["method"] == m.name and own(c, m)]  # fmt: skip


def _plot_seeds(ax: Any, runs: list[dict[str, Any]], key: str, window: int, label: str,
                colour: Any, style: str) -> None:  # fmt: skip
    """The mean over ``runs``' smoothed curves (on their common range) and a ± std band."""
    series = [s for s in (smoothed(c["curve"], key, window) for c in runs) if s]
    if not series or len(series[0]) < 2:
        return
    end = min(s[-1][0] for s in series)
    if end <= 0:
        return
    grid = np.linspace(max(s[0][0] for s in series), end, 100)
    ys = np.stack([np.interp(grid, [p[0] for p in s], [p[1] for p in s]) for s in series])
    mean, std = ys.mean(0), ys.std(0)
    (line,) = ax.plot(grid, mean, lw=1.3, color=colour, ls=style, label=label)
    if len(series) > 1:
        ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2)


def _by_env_and_method(found: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The cells that have a curve, grouped by env, then by method (in the order found)."""
    by_env: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for c in found:
        if c.get("curve"):
            by_env.setdefault(c["env"], {}).setdefault(c["method"], []).append(c)
    return by_env


def plot_experiment(experiment: str, root: Path, out: Path, key: str = "episode_return",
                    window: int = 10) -> Path | None:  # fmt: skip
    """Fig. 3-style curves: mean and ± std band over seeds per method, a panel per env."""
    by_env = _by_env_and_method(_seed_cells(experiment, root))
    if not by_env:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(by_env), figsize=(4.8 * len(by_env), 3.4), squeeze=False)
    # one colour per method in every panel, in the experiment's order of methods
    order = [m.name for m in EXPERIMENTS[experiment].methods]
    palette = plt.get_cmap("tab10").colors
    colour = {m: palette[i % len(palette)] for i, m in enumerate(order)}
    for ax, (env, methods) in zip(axes[0], by_env.items(), strict=True):
        for method, all_runs in sorted(methods.items(), key=lambda kv: order.index(kv[0])
                                       if kv[0] in order else len(order)):  # fmt: skip
            groups = by_budget(all_runs)
            for g, runs in enumerate(groups):  # a line per budget: means never mix budgets
                steps = runs[0]["eval"].get("env_steps")
                budget = f", {steps / 1000:,.0f}k steps" if len(groups) > 1 and steps else ""
                seeds = f"{len(runs)} seed{'s' if len(runs) > 1 else ''}"
                _plot_seeds(ax, runs, key, window, f"{method} ({seeds}{budget})",
                            colour.get(method), ("-", "--", ":")[min(g, 2)])  # fmt: skip
        ax.set_title(env, fontsize=10)
        ax.set_xlabel("env steps")
        ax.set_ylabel(f"{key} (moving average, {window} iterations)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{experiment}: training {key}", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def wall_times(experiment: str, root: Path) -> str:
    """Table 7: wall time per 1M env steps, per env and method (mean over seeds), with the
    machine each came from and what else ran on it meanwhile (`rlmpc.reproduce.load`: the
    other processes' mean cores; "alone" when at most `QUIET_CORES` and no other trial of the
    sweep ran beside it)."""
    from rlmpc.reproduce.load import QUIET_CORES
    from rlmpc.reproduce.paper import paper_wall_s

    rows = [
        "| env | method | seeds | wall time per 1M env steps | paper (Table 7; its machine "
        "unstated) | machine "
        "| other load (cores) |",
        "|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in _seed_cells(experiment, root):
        groups.setdefault((c["env"], c["method"]), []).append(c)
    for (env, method), runs in sorted(groups.items()):
        per_m = [c["wall_time_s"] / c["eval"]["env_steps"] * 1e6 for c in runs
                 if c.get("wall_time_s") and c["eval"].get("env_steps")]  # fmt: skip
        if not per_m:
            continue
        s = statistics.fmean(per_m)
        machines = sorted(
            {
                f"{c['machine'].get('cpu', '?')}, {c['machine'].get('cores', '?')} cores"
                if isinstance(c.get("machine"), dict)
                else "?"
                for c in runs
            }
        )
        loads = []
        for c in runs:
            load = c.get("machine_load") or {}
            if not load.get("measured"):
                loads.append("not measured")
            else:
                trials = load.get("max_trials", 0)
                alone = load["other_cores"] <= QUIET_CORES and trials <= 1
                beside = f", {trials} trials at once" if trials > 1 else ""
                if c.get("wall_time_s") and load["wall_s"] < 0.9 * c["wall_time_s"]:
                    # parts run before cells recorded their load: measured over less
                    beside += f", over {load['wall_s'] / c['wall_time_s']:.0%} of its time"
                loads.append(f"{load['other_cores']:.2f} ({'alone' if alone else 'not alone'}"
                             f"{beside})")  # fmt: skip
        paper = paper_wall_s(env, method)
        theirs = "—" if paper is None else f"{paper / 3600:.2f} h ({paper / s:,.0f}× ours)"
        rows.append(f"| {env} | {method} | {len(per_m)} | {s / 3600:.2f} h ({s:,.0f} s) | "
                    f"{theirs} | {'; '.join(machines)} | {'; '.join(loads)} |")  # fmt: skip
    return "\n".join(rows)


#: Table 6's baseline per env (the paper's: adaptive ρ0 = 0.3 on Acrobot and Racing, ρ = 0.5
#: on Lunar Lander)
TABLE6_BASELINE = {"lunarlander": "ppo-mppi-rho0.5"}


def welch(experiment: str, root: Path, baseline: str = "ppo-mppi-adaptive0.3") -> str:
    """Table 6: Welch's t-test of each method's evaluation reward against the env's baseline
    (`TABLE6_BASELINE`, else ``baseline``), for ρ on the loss (eq. 10) and on the samples
    (eq. 8); each side pools all its seeds' evaluation episodes (from their means, stds and
    counts)."""
    from scipy.stats import ttest_ind_from_stats

    def pooled(runs: list[dict[str, Any]]) -> tuple[float, float, int]:
        n = [c["eval"]["episodes"] for c in runs]
        m = [c["eval"]["reward"]["mean"] for c in runs]
        v = [c["eval"]["reward"]["std"] ** 2 for c in runs]
        total = sum(n)
        mean = sum(ni * mi for ni, mi in zip(n, m, strict=True)) / total
        second = sum(ni * (vi + mi**2) for ni, vi, mi in zip(n, v, m, strict=True)) / total
        return mean, float(np.sqrt(max(second - mean**2, 0.0) * total / max(total - 1, 1))), total

    groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for c in _seed_cells(experiment, root):
        groups.setdefault(c["env"], {}).setdefault(c["method"], []).append(c)
    rows = ["| env | baseline | method | t | p |", "|---|---|---|---|---|"]
    for env, methods in sorted(groups.items()):
        for prefix in ("ppo-mppi-", "ppo-mppi-sample-"):
            base = TABLE6_BASELINE.get(env, baseline).replace("ppo-mppi-", prefix, 1)
            if base not in methods:
                continue
            b = pooled(methods[base])
            for method, runs in sorted(methods.items()):
                if (
                    method == base
                    or not method.startswith(prefix)
                    or (prefix == "ppo-mppi-" and method.startswith("ppo-mppi-sample-"))
                ):
                    continue
                t, p = ttest_ind_from_stats(*b, *pooled(runs), equal_var=False)
                rows.append(f"| {env} | {base} | {method} | {t:.2f} | {p:.3g} |")
    return "\n".join(rows)


#: the panels of the ``rho`` experiment's figure: (curve key, title, log scale)
RHO_PANELS = (
    ("rho", "ρ", True), ("rho/confidence", "ω = Alg. 2's confidence", False),
    ("rho/Omega", "Ω (its EMA)", False), ("ensemble_var", "σ̄² (critic units)", True),
    ("bound/alpha_r", "α̂_r: mean |r - r̂|", True), ("bound/alpha_P", "α̂_P: one-step error", True),
    ("bound/eps_V", "ε̂_V: |V̄ - G| (raw)", True), ("bound/model", "eq. 12: ρ × model terms", True),
)  # fmt: skip


def plot_rho(root: Path, out: Path, window: int = 5,
             found: list[dict[str, Any]] | None = None) -> Path | None:  # fmt: skip
    """The ``rho`` experiment's ρ, ω, Ω, σ̄² and the bound's terms over env steps (or those of
    the cells ``found``, e.g. ``cells("rho-terms", root)``): a row of panels per env, a line
    (mean ± std over seeds) per method."""
    by_env = _by_env_and_method(_seed_cells("rho", root) if found is None else found)
    if not by_env:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = len(by_env), len(RHO_PANELS)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.6 * rows), squeeze=False)
    for r, (env, methods) in enumerate(by_env.items()):
        for k, (key, title, log) in enumerate(RHO_PANELS):
            ax = axes[r][k]
            for i, (method, runs) in enumerate(methods.items()):
                _plot_seeds(ax, runs, key, window, method, f"C{i}", "-")
            ax.set_title(f"{env}: {title}", fontsize=8)
            if log and ax.lines:
                ax.set_yscale("log")
            ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def rho_summary(root: Path, at: int = 500_000) -> str:
    """Per env, method and seed: ρ at ``at`` env steps, its ratio to the ω ≡ 1 twin's of the
    same seed, and the interquartile range of Alg. 2's confidence ω after iteration 5."""
    found = [c for c in _seed_cells("rho", root) if c.get("curve")]
    rho_at = lambda c: float(np.interp(at, [p["env_steps"] for p in c["curve"]],
                                       [p["rho"] for p in c["curve"]]))  # fmt: skip
    twins = {(c["env"], c["seed"]): rho_at(c) for c in found if "-decay" in c["method"]}
    rows = [f"| env | method | seed | ρ at {at:,} | ρ / its twin's | ω: 25-75 % after iteration 5 (IQR) |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for c in found:
        conf = [p.get("rho/confidence") for p in c["curve"][5:]]
        conf = np.array([v for v in conf if v is not None and np.isfinite(v)])
        iqr = "—"
        if conf.size:
            q1, q3 = np.percentile(conf, [25, 75])
            iqr = f"{q1:.2f}-{q3:.2f} ({q3 - q1:.2f})"
        twin = twins.get((c["env"], c["seed"]))
        ratio = f"{rho_at(c) / twin:.2f}" if twin else "—"
        rows.append(
            f"| {c['env']} | {c['method']} | {c['seed']} | {rho_at(c):.4f} | {ratio} | {iqr} |"
        )
    return "\n".join(rows)


def write_reports(experiments: list[str], root: Path, command: str) -> list[Path]:
    """``results/<experiment>.md`` (and its curves PNG) for each experiment with cells."""
    written = []
    for name in experiments:
        exp = EXPERIMENTS[name]
        found = _seed_cells(name, root)
        if not found:
            continue
        curves = plot_experiment(name, root, root / f"{name}_curves.png")
        lines = [f"# {exp.paper}: `{name}`", "",
                 f"Rebuilt from the JSON cells under `results/` by `{command}`.", ""]  # fmt: skip
        if name == "table7":
            lines += [wall_times(name, root), ""]
        elif name == "rho":
            lines += [table(name, root, footnote=True, found=found), "",
                      "## ρ, its confidence and its twin", "", rho_summary(root), ""]  # fmt: skip
            panels = plot_rho(root, root / "rho_terms.png")
            if panels is not None:
                lines += [f"![ρ, ω, Ω and the bound's terms]({panels.name})", ""]
        else:
            lines += [table(name, root, footnote=True, found=found), ""]
        if name == "fig6-8":
            lines += ["## Table 6: Welch's t-test of the evaluation reward against the paper's "
                      "baseline (adaptive ρ0 = 0.3; ρ = 0.5 on Lunar Lander), per mixing", "",
                      welch(name, root), ""]  # fmt: skip
        notes = root / f"{name}.notes.md"
        if notes.is_file():
            lines += [
                f"## Findings (`{notes.name}`, by hand)",
                "",
                notes.read_text(encoding="utf-8").strip(),
                "",
            ]
        if curves is not None:
            lines += [f"![{name} learning curves]({curves.name})", ""]
        seeds = sorted({c["seed"] for c in found})
        commits = sorted({str(c.get("git_commit", "?"))[:10] for c in found})
        lines += [f"{len(found)} cells; seeds {seeds}; code at commit(s) {', '.join(commits)}."]
        path = root / f"{name}.md"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written.append(path)
    return written
