"""Evaluation: the deterministic policy (its mean) + MPPI, N episodes, the paper's table columns.

``python -m rlmpc.run.evaluate --checkpoint RUN_DIR_OR_FILE --episodes 50`` writes ``eval.json``
(success rate, steps, reward: mean and std over the episodes, as Tables 1–2, plus the
env's own column: distance to the pad for Lunar Lander, collision/off-track for Racing) and
``eval_episodes.png``: recorded episodes with the executed path, the MPPI candidates'
planned paths at regular steps, and the danger zone.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from planners.mppi import shift_warm_start
from rlmpc.system.records import EpisodeStats
from rlmpc.system.worker import RolloutWorker, WorkerSpec, _Episodes

#: the actor id that seeds evaluation (apart from every rollout actor)
EVAL_ACTOR_ID = 1_000_000


class Trace(NamedTuple):
    """One recorded episode, in the plane the danger zone lives in."""

    positions: np.ndarray  # [T+1, 2]
    others: np.ndarray  # [T+1, k, 2] the other agents' positions (`PlannerModel.others`)
    plan_steps: np.ndarray  # [P] steps at which candidates were recorded
    plans: np.ndarray  # [P, M, H+1, 2] candidates' planned positions (candidate 0 executed)
    zone: np.ndarray  # [4] (cx, cy, w, h)
    ret: float
    success: bool


@dataclass
class EvalResult:
    env: str
    episodes: EpisodeStats
    traces: list[Trace]


def summarize(env: str, stats: EpisodeStats) -> dict[str, Any]:
    """The paper's columns: mean and (population) std over the episodes."""
    ms = lambda a: {"mean": float(np.mean(a)), "std": float(np.std(a))} if len(a) else None
    out = {
        "env": env,
        "episodes": int(len(stats.returns)),
        "success_rate": ms(stats.success.astype(float)),
        "steps": ms(stats.lengths),
        "reward": ms(stats.returns),
        "danger_steps": ms(stats.danger_steps),
    }
    for k, v in stats.extra.items():
        out[k] = ms(v[np.isfinite(v)])
    return out


def format_table(summary: dict[str, Any]) -> str:
    """A few lines with mean ± std per column."""
    lines = [f"evaluation on {summary['env']}: {summary['episodes']} episodes"]
    for key in (
        "success_rate",
        "steps",
        "reward",
        "distance_to_pad",
        "collision_or_offtrack",
        "danger_steps",
    ):
        v = summary.get(key)
        if v:
            lines.append(f"  {key:22s} {v['mean']:10.3f} ± {v['std']:.3f}")
    return "\n".join(lines)


class Evaluator:
    """Runs the mean policy + MPPI in ``spec.n_envs`` envs at once until N episodes ended."""

    def __init__(self, spec: WorkerSpec, env_kwargs: list[dict[str, Any]] | None = None) -> None:
        self.worker = RolloutWorker(
            EVAL_ACTOR_ID, replace(spec, keep_virtual=False), env_kwargs=env_kwargs
        )
        self.spec = spec

    @torch.inference_mode()
    def run(self, weights: dict[str, Any] | None, episodes: int, seed: int = 10_000,
            record: int = 0, plan_every: int = 10) -> EvalResult:  # fmt: skip
        """N episodes with the policy's mean; ``weights`` None keeps the worker's policy as is."""
        if episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        w = self.worker
        if weights is not None:
            w.set_weights(weights, version=-1)
        model, M = w.model, self.spec.num_candidates
        n = min(self.spec.n_envs, episodes)
        envs_, started = w.envs[:n], n
        obs = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(envs_)]).astype(np.float32)
        episode_of = list(range(n))
        warm = torch.zeros(n, w.horizon, model.nu)
        tracker = _Episodes(n)
        live = np.ones(n, bool)
        recs: dict[int, dict[str, list]] = {}
        traces: dict[int, Trace] = {}
        t = np.zeros(n, np.int64)
        while live.any():
            rows = np.nonzero(live)[0]
            o = torch.as_tensor(obs[rows])
            mean = w.policy.mean(o)[:, None]  # [b, 1, na]
            if M > 1 and record and any(episode_of[r] < record for r in rows):
                extra, _ = w.policy.sample(o, M - 1, generator=w.gen)
                cand = torch.cat([mean, extra], dim=1)
            else:
                cand = mean
            x = torch.as_tensor(
                np.stack([model.planner_state(envs_[r]) for r in rows]), dtype=torch.float32
            )
            plan = w.planner.plan(x, cand, warm[rows], generator=w.gen)
            warm[rows] = shift_warm_start(plan.controls[:, 0])
            u = plan.first[:, 0].numpy()
            for j, r in enumerate(rows):
                ep = episode_of[r]
                if ep < record:
                    rec = recs.setdefault(ep, {"pos": [], "others": [], "steps": [], "plans": []})
                    if not rec["pos"]:
                        rec["pos"].append(model.position(x[j]).numpy())
                        rec["others"].append(model.others(x[j]).numpy())
                        rec["zone"] = torch.stack(model.danger_zone(x[j])).numpy()
                    if t[r] % plan_every == 0:
                        rec["steps"].append(int(t[r]))
                        rec["plans"].append(model.position(plan.paths[j]).numpy())
                env = envs_[r]
                o2, rew, term, trunc, info = env.step(u[j].astype(env.action_space.dtype))
                tracker.step(r, float(rew), info)
                t[r] += 1
                if ep < record:
                    x2 = torch.as_tensor(model.planner_state(env), dtype=torch.float32)
                    recs[ep]["pos"].append(model.position(x2).numpy())
                    recs[ep]["others"].append(model.others(x2).numpy())
                if term or trunc:
                    tracker.end(r, info)
                    if ep < record:
                        rec = recs.pop(ep)
                        traces[ep] = Trace(
                            np.stack(rec["pos"]), np.stack(rec["others"]), np.array(rec["steps"]),
                            np.stack(rec["plans"]) if rec["plans"] else np.zeros((0, 1, 1, 2)),
                            rec["zone"], float(tracker.ended[-1][0]), bool(tracker.ended[-1][2]),
                        )  # fmt: skip
                    if started < episodes:
                        obs[r] = env.reset(seed=seed + started)[0]
                        episode_of[r], started, t[r] = started, started + 1, 0
                        warm[r] = 0.0
                    else:
                        live[r] = False
                else:
                    obs[r] = o2
        return EvalResult(self.spec.env, tracker.pop(), [traces[k] for k in sorted(traces)])


def plot_traces(result: EvalResult, path: str | Path, model: Any = None) -> Path:
    """Recorded episodes: the env's scene (`PlannerModel.draw`: track, pad), the danger zone,
    the candidates' planned paths, the executed path and the other agents' paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt

    n = max(1, len(result.traces))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.0), squeeze=False)
    for ax, tr in zip(axes[0], result.traces, strict=False):
        if model is not None:
            model.draw(ax)
        cx, cy, w, h = tr.zone
        ax.add_patch(patches.Rectangle((cx - w / 2, cy - h / 2), w, h, color="tab:red", alpha=0.3,
                                       label="danger zone"))  # fmt: skip
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
    from rlmpc.system.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    if seed is None:
        run = state["config"]["run"]
        seed = RunConfig(
            env=run["env"], seed=run["seed"], eval_seed=run.get("eval_seed")
        ).first_eval_seed
    spec: WorkerSpec = replace(state["worker_spec"], n_envs=min(n_envs, episodes))
    evaluator = Evaluator(spec)
    result = evaluator.run(state["learner"]["weights"], episodes, seed=seed, record=record)
    summary = summarize(spec.env, result.episodes)
    summary["checkpoint"] = str(checkpoint)
    summary["eval_seed"] = seed
    summary["env_steps"] = int(state["counters"]["env_steps"])
    ckpt_path = Path(checkpoint)
    out = Path(out) if out else (ckpt_path if ckpt_path.is_dir() else ckpt_path.parent.parent)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(summary, indent=2))
    plot_traces(result, out / "eval_episodes.png", evaluator.worker.model)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a checkpoint file or a run directory")
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes (1..10000)")
    parser.add_argument("--out", default=None, help="output directory (default: the run directory)")
    parser.add_argument(
        "--seed", type=int, default=None,
        help="seed of the first episode (default: the run's own evaluation episodes)",
    )  # fmt: skip
    parser.add_argument("--record", type=int, default=3, help="episodes drawn in the PNG (0..8)")
    parser.add_argument("--n-envs", type=int, default=10, help="episodes run side by side (1..256)")
    args = parser.parse_args(argv)
    if not 1 <= args.episodes <= 10_000:
        parser.error(f"argument --episodes: must be in [1, 10000], got {args.episodes}")
    if not 0 <= args.record <= 8:
        parser.error(f"argument --record: must be in [0, 8], got {args.record}")
    if not 1 <= args.n_envs <= 256:
        parser.error(f"argument --n-envs: must be in [1, 256], got {args.n_envs}")
    torch.set_num_threads(1)
    summary = evaluate_checkpoint(args.checkpoint, args.episodes, args.out, args.seed, args.record,
                                  args.n_envs)  # fmt: skip
    print(format_table(summary))


if __name__ == "__main__":
    main()
