"""``python -m rlmpc.run.demo``: the task envs under random controls, as filmstrips.

Steps every registered env that runs on this machine alone (no simulator server) under
uniform random controls, renders frames with the danger zone drawn, and writes filmstrips and
one summary line per episode (``episodes.jsonl``) to a run directory.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

import envs


@dataclass(frozen=True)
class EpisodeSummary:
    env: str
    episode: int
    seed: int
    steps: int
    episode_return: float
    terminated: bool
    truncated: bool
    danger_steps: int


def _filmstrip(frames: list[np.ndarray], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(frames), figsize=(3 * len(frames), 3.2))
    for ax, (t, frame) in zip(np.atleast_1d(axes), frames, strict=True):
        ax.imshow(frame)
        ax.set_title(f"t={t}", fontsize=9)
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run_episode(name: str, episode: int, seed: int, out: Path, n_frames: int = 6) -> EpisodeSummary:
    """One episode under uniform random controls; saves a filmstrip PNG of ``n_frames`` frames."""
    env = envs.make(name, render_mode="rgb_array")
    model = env.unwrapped.planner_model()
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    frames, total, steps, danger = [], 0.0, 0, 0
    terminated = truncated = False
    snapshots: list[tuple[int, np.ndarray]] = [(0, env.render())]
    while not (terminated or truncated):
        action = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        _, reward, terminated, truncated, _ = env.step(action)
        x = torch.as_tensor(model.planner_state(env))
        danger += int(model.in_danger(x))
        total += float(reward)
        steps += 1
        frames.append(steps)
    env.close()
    # replay with the same seed to grab evenly spaced frames without storing every one
    env = envs.make(name, render_mode="rgb_array")
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    keep = set(np.linspace(1, steps, n_frames - 1).astype(int).tolist())
    for t in range(1, steps + 1):
        action = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        env.step(action)
        if t in keep:
            snapshots.append((t, env.render()))
    env.close()
    _filmstrip(
        snapshots,
        out / f"{name}_episode{episode}.png",
        f"{name} (random controls), return {total:.1f}",
    )
    return EpisodeSummary(
        name, episode, seed, steps, total, bool(terminated), bool(truncated), danger
    )


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        description="rlmpc: roll out the task environments under random controls, as filmstrips.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--env", default="all", choices=["all", *sorted(envs.names(local=True))], help="environment"
    )
    parser.add_argument("--episodes", type=int, default=1, help="episodes per environment (1..100)")
    parser.add_argument("--seed", type=int, default=0, help="base seed")
    parser.add_argument(
        "--run-name", default=None, help="run directory name (default: demo-<time>)"
    )
    parser.add_argument("--runs-dir", default="runs", help="where run directories go")
    args = parser.parse_args(argv)
    if not 1 <= args.episodes <= 100:
        parser.error(f"--episodes must be in [1, 100], got {args.episodes}")
    names = sorted(envs.names(local=True)) if args.env == "all" else [args.env]
    out = Path(args.runs_dir) / (args.run_name or time.strftime("demo-%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for name in names:
        for ep in range(args.episodes):
            s = run_episode(name, ep, args.seed + ep, out)
            summaries.append(s)
            print(
                f"{name:12s} episode {ep}: {s.steps:4d} steps, return {s.episode_return:9.1f}, "
                f"{s.danger_steps} steps in the danger zone, "
                f"{'terminated' if s.terminated else 'truncated'}"
            )
    with open(out / "episodes.jsonl", "w") as f:
        for s in summaries:
            f.write(json.dumps(asdict(s)) + "\n")
    print(f"wrote {len(summaries)} episode summaries and filmstrips to {out.resolve()}")
    return out


if __name__ == "__main__":
    main()
