"""Watch a trained agent: ``python -m rlmpc.enjoy RUN_DIR [--episodes N] [--video out.mp4]``.

Plays a checkpoint's policy (a run directory's newest, or a checkpoint file) as the
evaluations do, its mean through MPPI, on the run's own evaluation episodes (seeds
``--seed``, ``--seed + 1``...), one episode at a time, and films them in the env's own frames
with the planner's candidate paths (green: executed, orange: the others) and the danger zone
drawn over them: the final evaluation's mechanism (`RolloutWorker.evaluate` with a
`rlmpc.system.records.Filming`), so filming changes none of the episodes. All episodes go
into one MP4 (default ``RUN_DIR/enjoy.mp4``), played at the env's own frame rate; each
episode's return, steps and success are printed. An env whose frames cannot be mapped
(`envs.base.Pixels`) is filmed without the overlay; one that renders no ``rgb_array`` frames
is refused.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import envs
from common.checks import SEED_MAX, episode_seeds_problem, int_in, prog_name, seed_arg, writable_dir
from rlmpc.run.media import Mp4, overlaid
from rlmpc.system.checkpoint import CheckpointError, load_checkpoint
from rlmpc.system.records import Filming
from rlmpc.system.shells import node_env_kwargs
from rlmpc.system.worker import EVAL_ACTOR_ID, RolloutWorker

#: seconds the last frame of each episode is held in the video
HOLD_S = 0.5


class NoFrames(ValueError):
    """The checkpoint's env renders no ``rgb_array`` frames."""

    def __init__(self, env: str) -> None:
        super().__init__(f"{env} renders no rgb_array frames: there is nothing to film")
        self.env = env


def enjoy(checkpoint: str | Path, episodes: int = 3, video: str | Path | None = None,
          seed: int | None = None, max_steps: int | None = None, max_frames: int = 1000,
          width: int = 600, fps: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Film ``episodes`` episodes of ``checkpoint``'s policy into the MP4 ``video`` (module
    docstring). ``seed`` None: the run's own evaluation episodes; ``max_steps``: cut each
    episode after that many steps (None: the env's own length); ``max_frames`` and
    ``width`` bound each episode's frames (`Filming`); ``fps`` None: the env's
    ``render_fps``. Returns ``{"video", "fps", "episodes": [{"seed", "return", "steps",
    "success", "frames"}]}``."""
    from rlmpc.run.config import RunConfig

    state = load_checkpoint(checkpoint)
    spec = replace(state.worker, n_envs=1, keep_virtual=False, render=True)
    if "rgb_array" not in envs.spec(spec.env).render_modes():
        raise NoFrames(spec.env)
    if seed is None:
        run = state.config["run"]
        seed = RunConfig(env=spec.env, seed=run["seed"],
                         eval_seed=run.get("eval_seed")).first_eval_seed  # fmt: skip
    kwargs = node_env_kwargs(spec) or [{}]
    if max_steps is not None:
        kwargs = [{**kw, "max_episode_steps": max_steps} for kw in kwargs]
    path = Path(checkpoint)
    run_dir = path if path.is_dir() else path.parent.parent
    video = Path(video) if video is not None else run_dir / "enjoy.mp4"
    video.parent.mkdir(parents=True, exist_ok=True)
    worker = RolloutWorker(EVAL_ACTOR_ID, spec, env_kwargs=kwargs)
    fps = float(fps or worker.envs[0].metadata.get("render_fps", 30))
    played = []
    try:
        with Mp4(video, fps) as mp4:
            for i in range(episodes):
                result = worker.evaluate(state.weights, 1, seed + i, record=1,
                                         film=Filming(1, max_frames, width))  # fmt: skip
                filmed = result.traces[0].video
                frames = overlaid(filmed)
                mp4.add(frames)
                mp4.add(np.repeat(frames[-1:], max(1, math.ceil(HOLD_S * fps)), axis=0))
                stats = result.episodes
                played.append({"seed": seed + i, "return": float(stats.returns[0]),
                               "steps": int(stats.lengths[0]), "success": bool(stats.success[0]),
                               "frames": len(frames)})  # fmt: skip
    finally:
        for env in worker.envs:
            env.close()
    return {"video": str(video), "fps": fps, "episodes": played}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=prog_name("python -m rlmpc.enjoy"), description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    parser.add_argument("checkpoint", metavar="RUN_DIR",
                        help="a run directory (its newest checkpoint) or a checkpoint file")  # fmt: skip
    parser.add_argument("--episodes", type=int_in(1, 100), default=3, help="episodes, 1..100")
    parser.add_argument("--video", default=None,
                        help="the MP4 to write (default: RUN_DIR/enjoy.mp4)")  # fmt: skip
    parser.add_argument(
        "--seed", type=seed_arg, default=None,
        help=f"seed of the first episode, 0..{SEED_MAX} with the episodes' (default: the run's "
        "own evaluation episodes)",
    )  # fmt: skip
    parser.add_argument("--max-steps", type=int_in(1), default=None,
                        help="cut each episode after this many steps (default: the env's own)")  # fmt: skip
    parser.add_argument("--max-frames", type=int_in(2, 100_000), default=1000,
                        help="frames per episode at most: a longer one shows every 2nd, 4th... "
                        "step (and plays faster), 2..100000")  # fmt: skip
    parser.add_argument("--width", type=int_in(64, 1920), default=600,
                        help="frames scaled down to at most this many pixels across, 64..1920")  # fmt: skip
    parser.add_argument("--fps", type=float, default=None,
                        help="frames per second of the video (default: the env's render_fps)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.seed is not None and (problem := episode_seeds_problem(args.seed, args.episodes)):
        parser.error(f"argument --seed/--episodes: {problem}")
    if args.fps is not None and not (math.isfinite(args.fps) and 0 < args.fps <= 240):
        parser.error(f"argument --fps: must be in (0, 240], got {args.fps}")
    if args.video is not None and (problem := writable_dir(Path(args.video).parent)):
        parser.error(f"argument --video: {problem}")
    torch.set_num_threads(1)
    try:
        out = enjoy(args.checkpoint, args.episodes, args.video, args.seed, args.max_steps,
                    args.max_frames, args.width, args.fps)  # fmt: skip
    except (CheckpointError, FileNotFoundError, NoFrames) as err:  # the reason, no traceback
        parser.exit(1, f"{parser.prog}: error: {err}\n")
    for ep in out["episodes"]:
        print(f"episode seed {ep['seed']}: return {ep['return']:.1f}, {ep['steps']} steps, "
              f"{'success' if ep['success'] else 'no success'} ({ep['frames']} frames)")  # fmt: skip
    print(f"video: {out['video']} ({out['fps']:g} fps)")


if __name__ == "__main__":
    main()
