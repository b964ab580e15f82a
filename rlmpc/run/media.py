"""What an evaluation shows besides its scalars: a table row of the paper's columns, a video
of a filmed episode in the env's own frames, and a short animation of a recorded episode's trace.

`table_row` turns an evaluation's `rlmpc.system.records.summarize` into one row (the policy's
iteration, env steps, episodes, each column's mean and std); `RunLogger.evaluation`
(`rlmpc.run.runlog`) collects the rows into ``evaluations.jsonl`` and a ``wandb.Table``.
`overlaid` draws a filmed episode's (`Video`) candidate paths (green: executed, orange: the
others) and the danger zone's outline over its frames; `Mp4` writes frames to an H.264 MP4
(imageio-ffmpeg's ffmpeg). `episode_gif` draws a recorded `Trace` step by step, as
`rlmpc.run.evaluate.plot_traces` draws it whole: the scene, the danger zone, the executed path
so far, the other agents, the env's marked events so far (`PlannerModel.marks`: overtakes), and
the candidates' planned paths as last recorded (every ``plan_every`` steps of the episode).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rlmpc.run.evaluate import draw_scene
from rlmpc.system.records import Trace, Video

#: keys of `summarize`'s output that are not columns
_NOT_COLUMNS = ("env", "episodes")


def table_row(summary: dict[str, Any], iteration: int, env_steps: int,
              final: bool) -> dict[str, Any]:  # fmt: skip
    """One evaluation as a table row: ``iteration`` (of the policy evaluated), ``env_steps``,
    ``final``, ``episodes``, and ``<column>_mean``, ``<column>_std`` for each column of
    ``summary`` (`summarize`'s output; None where no episode had the figure)."""
    row: dict[str, Any] = {"iteration": iteration, "env_steps": env_steps, "final": final,
                           "episodes": summary["episodes"]}  # fmt: skip
    for key, value in summary.items():
        if key in _NOT_COLUMNS or not (value is None or isinstance(value, dict)):
            continue
        row[f"{key}_mean"] = None if value is None else value["mean"]
        row[f"{key}_std"] = None if value is None else value["std"]
    return row


#: colours over a video's frames: the executed candidate's path, the others', the zone
EXECUTED, OTHERS, ZONE = (40, 170, 40), (255, 140, 0), (220, 30, 30)


def overlaid(video: Video) -> np.ndarray:
    """``video``'s frames ``[F, h, w, 3]`` with the danger zone's outline and, on each frame,
    the candidates' planned paths from its state (the executed one on top) drawn over them;
    the frames alone where the env maps no points (`envs.base.Pixels`)."""
    from PIL import Image, ImageDraw

    if video.plans.shape[1] == 0 and len(video.zone) == 0:
        return video.frames
    width = max(2, round(video.frames.shape[2] / 150))
    out = np.empty_like(video.frames)
    for k, frame in enumerate(video.frames):
        image = Image.fromarray(frame)
        draw = ImageDraw.Draw(image)
        if len(video.zone):
            draw.polygon([tuple(p) for p in video.zone.tolist()], outline=ZONE, width=width)
        plans = video.plans[k]
        for m in reversed(range(plans.shape[0])):
            if np.isfinite(plans[m]).all():
                draw.line([tuple(p) for p in plans[m].tolist()], width=width,
                          fill=EXECUTED if m == 0 else OTHERS, joint="curve")  # fmt: skip
        out[k] = np.asarray(image)
    return out


class Mp4:
    """An H.264 MP4 at ``path``, ``fps`` frames per second, written frame by frame
    (``add``); every frame ``[h, w, 3]`` uint8 of one size, ``h`` and ``w`` even."""

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path, self.fps = Path(path), float(fps)
        self._writer: Any = None
        self._size: tuple[int, int] | None = None

    def add(self, frames: np.ndarray) -> None:
        import imageio_ffmpeg

        for frame in frames:
            size = (frame.shape[1], frame.shape[0])
            if self._writer is None:
                self._size = size
                self._writer = imageio_ffmpeg.write_frames(
                    str(self.path), size, fps=self.fps, codec="libx264", macro_block_size=1,
                    quality=7, ffmpeg_log_level="error",
                )  # fmt: skip
                self._writer.send(None)
            if size != self._size:
                raise ValueError(
                    f"frames of one video must share a size: {size} after {self._size}"
                )
            self._writer.send(np.ascontiguousarray(frame, dtype=np.uint8))

    def close(self) -> Path:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return self.path

    def __enter__(self) -> Mp4:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def playback_fps(video: Video) -> float:
    """A filmed episode's playback rate: real time (`Video.fps`), within 5..30 frames a second."""
    return float(min(30.0, max(5.0, video.fps)))


def episode_mp4(video: Video, path: str | Path) -> Path:
    """``video`` with its overlay (`overlaid`) as an MP4 at ``path``, played at
    `playback_fps`."""
    with Mp4(path, playback_fps(video)) as mp4:
        mp4.add(overlaid(video))
    return Path(path)


def frame_steps(steps: int, max_frames: int) -> np.ndarray:
    """The steps ``0..steps`` an animation shows: all of them, or ``max_frames`` evenly spread
    (the first and the last always)."""
    if max_frames < 2:
        raise ValueError(f"max_frames must be >= 2, got {max_frames}")
    if steps + 1 <= max_frames:
        return np.arange(steps + 1)
    return np.unique(np.round(np.linspace(0, steps, max_frames)).astype(np.int64))


def episode_gif(trace: Trace, model: Any, path: str | Path, env: str = "",
                max_frames: int = 100, fps: int = 10, size: float = 3.2, dpi: int = 80) -> Path:  # fmt: skip
    """Animate ``trace`` into an animated GIF at ``path``: ``max_frames`` at most, ``size``
    inches square at ``dpi`` (default 256 × 256 pixels). ``model`` draws the scene
    (`PlannerModel.draw`; None: none). The still parts are drawn once and each frame only
    redraws the moving lines (blitting), and every frame shares one palette: about a second
    for 100 frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    pos, others, plans = trace.positions, trace.others, trace.plans
    steps = len(pos) - 1
    has_plans = plans.ndim == 4 and len(trace.plan_steps) > 0
    fig, ax = plt.subplots(figsize=(size, size), dpi=dpi)
    draw_scene(ax, model, trace.zone)
    extent = [pos, others.reshape(-1, 2)] + ([plans.reshape(-1, 2)] if has_plans else [])
    ax.update_datalim(np.concatenate(extent))
    ax.autoscale_view()
    ax.set_aspect("equal", adjustable="datalim")
    ax.plot(*pos[0], "ko", ms=3)
    ax.tick_params(labelsize=6)
    outcome = f"return {trace.ret:.1f}, {'success' if trace.success else 'no success'}"
    ax.set_title(f"{env}: {outcome}" if env else outcome, fontsize=7)
    fig.tight_layout()
    moving = lambda *args, **kw: ax.plot(*args, animated=True, **kw)[0]
    num_candidates = plans.shape[1] if has_plans else 0
    cands = [moving([], [], lw=1.2, alpha=0.9, color="tab:green" if m == 0 else "tab:orange")
             for m in range(num_candidates)]  # fmt: skip
    trails = [moving([], [], color="tab:purple", lw=1.0, ls=":") for _ in range(others.shape[1])]
    _, marked = model.marks(pos, others) if model is not None else ("", np.zeros(0, np.int64))
    stars = moving([], [], "*", color="tab:orange", ms=8, mec="k", mew=0.5)
    path_line = moving([], [], color="tab:blue", lw=1.5)
    head = moving([], [], "o", color="tab:blue", ms=4)
    label = ax.text(0.02, 0.98, "", transform=ax.transAxes, va="top", fontsize=6, animated=True)
    canvas = fig.canvas
    canvas.draw()  # the still parts, once
    background = canvas.copy_from_bbox(fig.bbox)
    frames = []
    for t in frame_steps(steps, max_frames):
        canvas.restore_region(background)
        path_line.set_data(pos[: t + 1, 0], pos[: t + 1, 1])
        head.set_data(pos[t : t + 1, 0], pos[t : t + 1, 1])
        for k, line in enumerate(trails):
            line.set_data(others[: t + 1, k, 0], others[: t + 1, k, 1])
        if has_plans:  # the plan recorded last at or before step t
            j = max(0, int(np.searchsorted(trace.plan_steps, t, side="right")) - 1)
            for m, line in enumerate(cands):
                line.set_data(plans[j, m, :, 0], plans[j, m, :, 1])
        shown = marked[marked <= t]  # the env's events so far (overtakes)
        stars.set_data(pos[shown, 0], pos[shown, 1])
        label.set_text(f"step {t}/{steps}")
        for artist in (*cands, *trails, path_line, stars, head, label):
            ax.draw_artist(artist)
        frames.append(Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy()))
    plt.close(fig)
    # one palette for all frames, from a few of them side by side (the octree keeps the
    # colours of thin lines, which a median cut folds into grey)
    probe = frames[:: max(1, len(frames) // 4)] + frames[-1:]
    sheet = Image.new("RGB", (frames[0].width * len(probe), frames[0].height))
    for k, f in enumerate(probe):
        sheet.paste(f, (k * f.width, 0))
    palette = sheet.quantize(colors=255, method=Image.Quantize.FASTOCTREE)
    frames = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    path = Path(path)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / fps),
                   loop=0)  # fmt: skip
    return path
