"""What an evaluation shows besides its scalars: a table row of the paper's columns, and a
short animation of one recorded episode.

`table_row` turns an evaluation's `rlmpc.system.records.summarize` into one row (the policy's
iteration, env steps, episodes, each column's mean and std); `RunLogger.evaluation`
(`rlmpc.run.runlog`) collects the rows into ``evaluations.jsonl`` and a ``wandb.Table``.
`episode_gif` draws a recorded `Trace` step by step, as `rlmpc.run.evaluate.plot_traces` draws
it whole: the scene, the danger zone, the executed path so far, the other agents, the env's
marked events so far (`PlannerModel.marks`: overtakes), and the candidates' planned paths as
last recorded (every ``plan_every`` steps of the episode).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rlmpc.run.evaluate import draw_scene
from rlmpc.system.records import Trace

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
