"""One observer for the metrics of a run: ``metrics.jsonl``, W&B, TensorBoard, the progress
bar, the plots, and whoever else listens (a Tune trial).

The learner's ``update()`` and the coordinator return dicts of plain floats; `RunLogger.log` is the
one place they go out. Each evaluation also goes out as a row of ``evaluations.jsonl`` and of
the W&B table ``eval/table``, with its picture and videos where it has them
(`RunLogger.evaluation`). W&B runs online when wandb has credentials (`wandb_credentials`:
``WANDB_API_KEY``, or the key ``wandb login`` wrote into the netrc file), offline (files under
``<run_dir>/wandb``, ``wandb sync`` uploads them) otherwise, unless the mode is forced;
``mode="disabled"`` turns it off. docs/tracking.md lays out the W&B panels.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import platform
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tqdm import tqdm

from common.checks import ConfigError

#: the progress bar's postfix: metric key -> short label
_BAR_KEYS = {
    "sps": "sps",
    "episode_return": "ret",
    "success_rate": "succ",
    "rho": "rho",
}


@dataclass(frozen=True)
class WandbConfig:
    """Weights & Biases settings."""

    wandb_mode: str = "auto"
    """auto (online when wandb has credentials: WANDB_API_KEY or `wandb login`'s netrc entry;
    else offline) | online | offline | disabled"""
    wandb_project: str = "rlmpc"
    """W&B project"""
    wandb_entity: str | None = None
    """W&B entity (team or user); default: the key's default entity"""
    wandb_group: str | None = None
    """W&B group (e.g. one sweep); default: none"""
    wandb_tags: tuple[str, ...] = ()
    """W&B tags"""
    wandb_method: str | None = None
    """the run's method label, W&B's top-level config key method (beside env and seed), e.g.
    set by a sweep; default: ppo-mppi-rho<rho0> (fixed ρ) or ppo-mppi-<mode><rho0>"""

    def __post_init__(self) -> None:
        modes = ("auto", "online", "offline", "disabled")
        if self.wandb_mode not in modes:
            raise ConfigError(
                "wandb_mode", f"wandb_mode must be one of {modes}, got {self.wandb_mode!r}"
            )
        method = self.wandb_method
        if method is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", method):
            raise ConfigError(
                "wandb_method",
                "wandb_method names result directories (results/<experiment>/<env>/<method>): "
                f"letters, digits and . _ + - only, got {method!r}",
            )

    def resolved_mode(self) -> str:
        return resolved_wandb_mode(self.wandb_mode)


#: where wandb talks to unless ``WANDB_BASE_URL`` says otherwise
WANDB_HOST = "https://api.wandb.ai"


def netrc_path() -> Path:
    """The netrc file ``wandb login`` writes its key to: ``$NETRC``, else ``~/.netrc`` (or
    ``~/_netrc`` where only that exists)."""
    if os.environ.get("NETRC"):
        return Path(os.environ["NETRC"]).expanduser()
    unix, windows = Path("~/.netrc").expanduser(), Path("~/_netrc").expanduser()
    return windows if windows.exists() and not unix.exists() else unix


def wandb_credentials() -> str | None:
    """Where wandb finds an API key without asking, checked without the network: the
    environment (``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE``) or the netrc file's entry
    for the W&B host (``WANDB_BASE_URL``, default `WANDB_HOST`), as ``wandb login`` writes
    it. Returns the source's name (the variable or the file), None where there is none."""
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        if os.environ.get(var):
            return var
    path = netrc_path()
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or WANDB_HOST).netloc
    try:
        entry = netrc.netrc(str(path)).authenticators(host) if host else None
    except (OSError, netrc.NetrcParseError):
        return None
    return str(path) if entry and entry[2] else None


def resolved_wandb_mode(mode: str) -> str:
    """``mode``, with ``auto`` resolved: online when wandb has credentials
    (`wandb_credentials`), offline otherwise."""
    if mode != "auto":
        return mode
    return "online" if wandb_credentials() else "offline"


def run_meta(argv: list[str], program: str = "launch.py") -> dict[str, Any]:
    """What reproduces a run: the command, the code's commit (and whether it had local
    changes) and the machine."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                                  cwd=Path(__file__).parent).stdout.strip()  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return ""

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor()
    return {
        "command": " ".join(["python", program, *argv]),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()},
    }


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class RunLogger:
    """Writes every logged dict to ``metrics.jsonl``, W&B and TensorBoard (``tensorboard``:
    ``<run_dir>/tensorboard``), drives the progress bar and hands each row to ``on_row``."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        config: dict[str, Any],
        wandb_cfg: WandbConfig,
        total_steps: int,
        run_name: str,
        progress: bool = True,
        resume: bool = False,
        initial_steps: int = 0,
        tensorboard: bool = False,
        on_row: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.on_row = on_row
        self._tensorboard = tensorboard
        self._tb: Any = None
        if tensorboard:
            self._open_tensorboard(purge_step=None)
        self._metrics = open(self.run_dir / "metrics.jsonl", "a" if resume else "w")
        self._evaluations = open(self.run_dir / "evaluations.jsonl", "a" if resume else "w")
        self._eval_rows: list[dict[str, Any]] = []  # what ``evaluations.jsonl`` holds
        self._last_iteration = 0
        self._events = open(self.run_dir / "events.log", "a")
        self._bar = tqdm(
            total=total_steps,
            initial=initial_steps,
            unit="step",
            dynamic_ncols=True,
            disable=not progress,
            smoothing=0.1,
        )
        self._last_steps = initial_steps
        self._wandb = None
        mode = wandb_cfg.resolved_mode()
        if mode != "disabled":
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            id_file = self.run_dir / "wandb_id.txt"
            run_id = id_file.read_text().strip() if resume and id_file.exists() else None
            self._wandb = wandb.init(
                project=wandb_cfg.wandb_project,
                entity=wandb_cfg.wandb_entity,
                group=wandb_cfg.wandb_group,
                tags=list(wandb_cfg.wandb_tags),
                name=run_name,
                id=run_id,
                resume="allow" if run_id else None,
                dir=str(self.run_dir),
                mode=mode,
                config=config,
                settings=wandb.Settings(console="off", x_disable_stats=True),
            )
            id_file.write_text(self._wandb.id)

    def log(self, metrics: dict[str, Any]) -> None:
        """Record one learner iteration (must carry ``env_steps``)."""
        row = {k: _jsonable(v) for k, v in metrics.items()}
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        steps = int(metrics["env_steps"])
        self._last_iteration = int(metrics.get("iteration", self._last_iteration))
        if self._wandb is not None:
            self._wandb.log(metrics, step=steps)
        if self._tb is not None:
            for key, value in metrics.items():
                if (
                    isinstance(value, float | int)
                    and not isinstance(value, bool)
                    and math.isfinite(value)
                ):
                    self._tb.add_scalar(key, value, steps)
        if self.on_row is not None:
            self.on_row(row)
        self._bar.update(max(0, steps - self._last_steps))
        self._last_steps = steps
        post = {
            label: f"{metrics[k]:.3g}"
            for k, label in _BAR_KEYS.items()
            if isinstance(metrics.get(k), float | int) and math.isfinite(metrics[k])
        }
        self._bar.set_postfix(post, refresh=False)

    def evaluation(self, row: dict[str, Any], image: Path | None = None,
                   video: Path | None = None, trace: Path | None = None) -> None:  # fmt: skip
        """Record one evaluation (`rlmpc.run.media.table_row`), after the row of the iteration
        it finished at: to ``evaluations.jsonl`` (with that iteration, ``logged_at``) and to
        W&B at that row's step: the table ``eval/table`` of every evaluation so far, the
        picture ``eval/episodes``, the video of a filmed episode ``eval/episode_video`` (the
        env's frames, an MP4) and the animation of its trace ``eval/episode_trace`` (a GIF)."""
        row = {k: _jsonable(v) for k, v in row.items()}
        self._eval_rows.append(row)
        self._evaluations.write(json.dumps({**row, "logged_at": self._last_iteration}) + "\n")
        self._evaluations.flush()
        if self._wandb is None:
            return
        import wandb

        columns = list(dict.fromkeys(k for r in self._eval_rows for k in r))
        media: dict[str, Any] = {"eval/table": wandb.Table(
            columns=columns, data=[[r.get(k) for k in columns] for r in self._eval_rows])}  # fmt: skip
        if image is not None:
            media["eval/episodes"] = wandb.Image(str(image))
        if video is not None:
            media["eval/episode_video"] = wandb.Video(str(video))
        if trace is not None:
            media["eval/episode_trace"] = wandb.Video(str(trace))
        self._wandb.log(media, step=self._last_steps)

    def rewind(self, iteration: int) -> None:
        """Drop the rows of ``metrics.jsonl`` after ``iteration``, and the evaluations logged
        after it (a resume continues from a checkpoint of that iteration, and logs the later
        ones again). W&B keeps what it has: it refuses steps it has seen, whose rows are the
        same again when resume is exact."""
        self._metrics.close()
        self._evaluations.close()
        rows = _keep_rows(self.run_dir / "metrics.jsonl",
                          lambda r: r.get("iteration", 0) <= iteration)  # fmt: skip
        if self._tensorboard:  # TensorBoard hides what it had past the kept rows
            self._open_tensorboard(purge_step=int(rows[-1]["env_steps"]) + 1 if rows else 0)
        kept = _keep_rows(self.run_dir / "evaluations.jsonl",
                          lambda r: r.get("logged_at", 0) <= iteration)  # fmt: skip
        self._eval_rows = [{k: v for k, v in r.items() if k != "logged_at"} for r in kept]
        self._last_iteration = iteration
        self._metrics = open(self.run_dir / "metrics.jsonl", "a")
        self._evaluations = open(self.run_dir / "evaluations.jsonl", "a")

    def _open_tensorboard(self, purge_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if self._tb is not None:
            self._tb.close()
        self._tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=purge_step,
                                 flush_secs=30)  # fmt: skip

    def event(self, message: str) -> None:
        """A notable event (actor restarted, update skipped...): to events.log and the console."""
        self._events.write(message + "\n")
        self._events.flush()
        self._bar.write(message)

    def summary(self, values: dict[str, Any]) -> None:
        if self._wandb is not None:
            for k, v in values.items():
                self._wandb.summary[k] = v

    def close(self) -> None:
        self._bar.close()
        self._metrics.close()
        self._evaluations.close()
        self._events.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _keep_rows(path: Path, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Rewrite the JSON lines file ``path`` (atomically) with the rows ``keep`` accepts;
    returns them."""
    lines = [line for line in path.read_text().splitlines(keepends=True)
             if line.strip() and keep(json.loads(line))]  # fmt: skip
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(lines))
    os.replace(tmp, path)
    return [json.loads(line) for line in lines]


def plot_curves(run_dir: str | os.PathLike, keys: tuple[str, ...] = ()) -> Path | None:
    """Learning curves (env steps on x) of ``metrics.jsonl`` to ``learning_curves.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl") if line.strip()]
    if not rows:
        return None
    keys = keys or ("episode_return", "success_rate", "rho", "ensemble_var", "loss/value", "sps")
    keys = tuple(k for k in keys if any(r.get(k) is not None for r in rows))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.0), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        pts = [(r["env_steps"], r[key]) for r in rows if r.get(key) is not None]
        ax.plot(*zip(*pts, strict=True))
        ax.set_title(key)
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = run_dir / "learning_curves.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
