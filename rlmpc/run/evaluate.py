"""Evaluation: the deterministic policy (its mean) + MPPI, N episodes, the paper's table columns.

``python -m rlmpc.evaluate --checkpoint RUN_DIR_OR_FILE --episodes 50`` writes ``eval.json``
(success rate, steps, reward: mean and std over the episodes, as Tables 1–2, plus the
env's own column: distance to the pad for Lunar Lander, collision/off-track for Racing) and
``eval_episodes.png``: recorded episodes with the executed path, the MPPI candidates'
planned paths at regular steps, and the danger zone.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from common.checks import SEED_MAX, episode_seeds_problem, int_in, seed_arg, writable_dir
from rlmpc.system.checkpoint import CheckpointError, load_checkpoint
from rlmpc.system.records import EvalResult, Trace, summarize
from rlmpc.system.worker import EVAL_ACTOR_ID, RolloutWorker

__all__ = [
    "EvalResult", "Trace", "draw_scene", "evaluate_checkpoint", "format_table", "plot_traces",
    "summarize",
]  # fmt: skip

_FIRST, _LAST = ("success_rate", "steps", "reward"), ("danger_steps",)


def format_table(summary: dict[str, Any]) -> str:
    """A few lines with mean ± std per column: success, steps, reward, the env's own, danger."""
    figure = lambda v: isinstance(v, dict) and "mean" in v  # a column: mean and std
    keys = [k for k, v in summary.items() if figure(v) and k not in _FIRST + _LAST]
    lines = [f"evaluation on {summary['env']}: {summary['episodes']} episodes"]
    for key in (*_FIRST, *keys, *_LAST):
        v = summary.get(key)
        if v:
            lines.append(f"  {key:22s} {v['mean']:10.3f} ± {v['std']:.3f}")
    return "\n".join(lines)


def draw_scene(ax: Any, model: Any, zone: Any) -> None:
    """The env's fixed scene (`PlannerModel.draw`; ``model`` None: none) and the danger zone
    ``(cx, cy, w, h)`` on a matplotlib axis."""
    import matplotlib.patches as patches

    if model is not None:
        model.draw(ax)
    cx, cy, w, h = (float(v) for v in zone)
    ax.add_patch(patches.Rectangle((cx - w / 2, cy - h / 2), w, h, color="tab:red", alpha=0.3,
                                   label="danger zone"))  # fmt: skip


def plot_traces(result: EvalResult, path: str | Path, model: Any = None) -> Path:
    """Recorded episodes: the env's scene (`PlannerModel.draw`: track, pad), the danger zone,
    the candidates' planned paths, the executed path, the other agents' paths and the env's
    marked events (`PlannerModel.marks`: overtakes). ``model`` draws the scene (default: the
    one the evaluation sent)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = model if model is not None else result.model
    n = max(1, len(result.traces))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.0), squeeze=False)
    for ax, tr in zip(axes[0], result.traces, strict=False):
        draw_scene(ax, model, tr.zone)
        for p in tr.plans:
            for m in range(p.shape[0]):
                ax.plot(p[m, :, 0], p[m, :, 1], lw=0.8, alpha=0.6,
                        color="tab:green" if m == 0 else "tab:orange")  # fmt: skip
        ax.plot(tr.positions[:, 0], tr.positions[:, 1], color="tab:blue", lw=1.5, label="executed")
        for k in range(tr.others.shape[1]):
            ax.plot(tr.others[:, k, 0], tr.others[:, k, 1], color="tab:purple", lw=1.0, ls=":",
                    label="other agent" if k == 0 else None)  # fmt: skip
            ax.plot(*tr.others[-1, k], "s", color="tab:purple", ms=4)
        ax.plot(*tr.positions[0], "ko", ms=4)
        if model is not None:  # the env's events (overtakes), as stars on the executed path
            label, steps = model.marks(tr.positions, tr.others)
            if len(steps):
                ax.plot(*tr.positions[steps].T, "*", color="tab:orange", ms=10, mec="k",
                        mew=0.5, label=label, zorder=5)  # fmt: skip
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(
            f"return {tr.ret:.1f}, {'success' if tr.success else 'no success'}", fontsize=9
        )
    axes[0][0].legend(loc="best", fontsize=7)
    fig.suptitle(f"{result.env}: executed path (blue), planned candidates (green: executed, orange: others)",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def evaluate_checkpoint(checkpoint: str | Path, episodes: int, out: str | Path | None = None,
                        seed: int | None = None, record: int = 3, n_envs: int = 10) -> dict[str, Any]:  # fmt: skip
    """Evaluate a checkpoint (file or run directory); writes eval.json and the PNG to ``out``.

    ``seed`` None: the run's own evaluation episodes (`RunConfig.first_eval_seed`)."""
    from rlmpc.run.config import RunConfig

    state = load_checkpoint(checkpoint)
    if seed is None:
        run = state.config["run"]
        seed = RunConfig(
            env=run["env"], seed=run["seed"], eval_seed=run.get("eval_seed")
        ).first_eval_seed
    spec = replace(state.worker, n_envs=min(n_envs, episodes), keep_virtual=False)
    result = RolloutWorker(EVAL_ACTOR_ID, spec).evaluate(state.weights, episodes, seed, record)
    summary = summarize(spec.env, result.episodes)
    summary["checkpoint"] = str(checkpoint)
    summary["eval_seed"] = seed
    summary["env_steps"] = int(state.counters["env_steps"])
    ckpt_path = Path(checkpoint)
    out = Path(out) if out else (ckpt_path if ckpt_path.is_dir() else ckpt_path.parent.parent)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(summary, indent=2))
    plot_traces(result, out / "eval_episodes.png")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a checkpoint file or a run directory")
    parser.add_argument("--episodes", type=int_in(1, 10_000), default=50,
                        help="evaluation episodes (1..10000)")  # fmt: skip
    parser.add_argument("--out", default=None, help="output directory (default: the run directory)")
    parser.add_argument(
        "--seed", type=seed_arg, default=None,
        help=f"seed of the first episode, 0..{SEED_MAX} with the episodes' (default: the run's "
        "own evaluation episodes)",
    )  # fmt: skip
    parser.add_argument("--record", type=int_in(0, 8), default=3,
                        help="episodes drawn in the PNG (0..8)")  # fmt: skip
    parser.add_argument("--n-envs", type=int_in(1, 256), default=10,
                        help="episodes run side by side (1..256)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.seed is not None and (problem := episode_seeds_problem(args.seed, args.episodes)):
        parser.error(f"argument --seed/--episodes: {problem}")
    if args.out is not None and (problem := writable_dir(args.out)):
        parser.error(f"argument --out: {problem}")
    if not Path(args.checkpoint).exists():
        parser.error(f"argument --checkpoint: {args.checkpoint} does not exist")
    torch.set_num_threads(1)
    try:
        summary = evaluate_checkpoint(args.checkpoint, args.episodes, args.out, args.seed,
                                      args.record, args.n_envs)  # fmt: skip
    except (CheckpointError, FileNotFoundError) as err:  # the file and why, no traceback
        parser.exit(1, f"{parser.prog}: error: {err}\n")
    print(format_table(summary))


if __name__ == "__main__":
    main()
