"""Training a run: its directory, its log, a backend, the coordinator, the final evaluation.

`train` is what ``python launch.py`` calls; `Run` is the same assembled step by step (tests
drive it to kill components mid-run). The backend is Ray (`rlmpc.system.ray_backend`; embedded
or a cluster) or serial (``--serial``: every component in this process); the coordinator
(`rlmpc.system.coordinator`) is the same for both, and so are the numbers.

When a core component dies (the learner, a replay shard, the evaluator), `Run.train`
restores the run in place: the components are built again and the newest checkpoint is
loaded, as ``--resume`` would, without restarting this process; ``metrics.jsonl`` is cut
back to the checkpoint's iteration, so (resume being exact) the finished run's rows equal
an uninterrupted run's. At most ``max_restores`` times; then, or when this process is
stopped, the last line printed is the command that resumes the run.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

import envs
from rlmpc.run.checks import RunSpecs, resolve, run_dir_of, run_specs
from rlmpc.run.config import TrainConfig
from rlmpc.run.evaluate import format_table, plot_traces
from rlmpc.run.media import episode_gif, episode_mp4, table_row
from rlmpc.run.runlog import RunLogger, plot_curves, run_meta
from rlmpc.system.backend import Backend, ComponentFailed, RestoreNeeded, brief
from rlmpc.system.checkpoint import (
    Checkpoint,
    CheckpointError,
    latest_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
)
from rlmpc.system.coordinator import Coordinator
from rlmpc.system.learner import TrainingDiverged
from rlmpc.system.records import EvalResult, summarize
from rlmpc.system.shells import serial_backend


def make_backend(
    cfg: TrainConfig, specs: RunSpecs, serial: bool = False, ray_address: str | None = None
) -> Backend:
    """The components of ``cfg``'s run (built from ``specs``), in this process (``serial``)
    or as Ray actors."""
    run = cfg.run
    parts = dict(
        worker=specs.worker, learner=specs.learner, num_actors=run.num_actors,
        eval_worker=specs.eval_worker, final_eval_worker=specs.final_eval_worker,
    )  # fmt: skip
    if serial:
        return serial_backend(**parts)
    from rlmpc.system.ray_backend import RayBackend, RayPlacement, init_ray

    gpu = parts["learner"].device.startswith("cuda") or run.actor_gpus > 0
    init_ray(ray_address, run.num_actors * run.actor_cpus + 2, gpu=gpu)
    placement = RayPlacement(
        actor_cpus=run.actor_cpus, actor_gpus=run.actor_gpus,
        actor_resources=run.actor_resource_dict,
        max_restarts=run.max_actor_failures,
        eval_resources=envs.spec(run.env).resources(1) or None,
    )  # fmt: skip
    return RayBackend(**parts, placement=placement)


class Run:
    """A training run assembled: directory, log, backend, coordinator (the coordinator's
    observer: rows, events and checkpoints go to the run directory)."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, resume: bool = False,
                 serial: bool = False, ray_address: str | None = None,
                 specs: RunSpecs | None = None,
                 on_row: Callable[[dict[str, Any]], None] | None = None) -> None:  # fmt: skip
        self.cfg, self.run_dir, self.resume = cfg, run_dir, resume
        self.specs = specs if specs is not None else run_specs(cfg)
        self._backend_args = (serial, ray_address)
        self.backend = make_backend(cfg, self.specs, serial, ray_address)
        self.logger = RunLogger(
            run_dir, cfg.wandb_config(), cfg.wandb, cfg.run.total_env_steps, run_dir.name,
            progress=cfg.run.progress, resume=resume, tensorboard=cfg.run.tensorboard,
            on_row=on_row,
        )  # fmt: skip
        self.restores = 0
        self.coordinator = self._coordinator()

    def _coordinator(self) -> Coordinator:
        record = {"worker": self.specs.worker, "config": self.cfg.to_dict()}
        return Coordinator(self.specs.schedule, self.backend, self, record)

    # -- the coordinator's observer --
    def log(self, row: dict[str, Any]) -> None:
        self.logger.log({**row, "restores": self.restores})

    def event(self, message: str) -> None:
        self.logger.event(message)

    def evaluated(self, result: EvalResult, iteration: int, env_steps: int) -> None:
        """A periodic evaluation: its table row, and the video of the episode it filmed
        (``videos/eval_<env steps>.mp4``; `RunConfig.eval_video_every`)."""
        summary = summarize(result.env, result.episodes)
        video = None
        if result.traces and result.traces[0].video is not None:
            (self.run_dir / "videos").mkdir(exist_ok=True)
            video = episode_mp4(result.traces[0].video,
                                self.run_dir / "videos" / f"eval_{env_steps}.mp4")  # fmt: skip
        self.logger.evaluation(table_row(summary, iteration, env_steps, final=False), video=video)

    def checkpoint(self, state: Checkpoint) -> None:
        save_checkpoint(self.run_dir, state.iteration, state, keep=self.cfg.run.keep_checkpoints)

    # -- the run --
    def train(self) -> dict[str, Any] | None:
        """Train (from the newest checkpoint that loads when resuming, and again after each
        in-place restore); the final evaluation's summary."""
        try:
            if self.resume:
                self._load_newest()
            while True:
                try:
                    result = self.coordinator.run()
                    break
                except RestoreNeeded as err:
                    if self.restores >= self.cfg.run.max_restores:
                        self.logger.event(
                            f"stopped: {err}; {self.restores} in-place restore(s) used of "
                            f"--max-restores {self.cfg.run.max_restores}"
                        )
                        raise
                    self.restores += 1
                    self._restore_in_place(err)
        except RestoreNeeded:
            raise
        except ComponentFailed as err:
            if not isinstance(err.cause, TrainingDiverged):
                self.logger.event(f"stopped: {err}")
                raise
            newest = latest_checkpoint(self.run_dir)
            cause = err.cause
            diverged = TrainingDiverged(cause.iteration, cause.names, str(newest or ""))
            self.logger.event(f"stopped: {diverged}")
            raise diverged from None
        except (RuntimeError, CheckpointError) as err:  # the run's end: on record
            self.logger.event(f"stopped: {err}")
            raise
        return None if result is None else self._final(result)

    def _load_newest(self) -> tuple[int, int]:
        """Restore the coordinator from the newest checkpoint (none: a fresh start); cut
        ``metrics.jsonl`` back to its iteration. Returns that iteration and the checkpoint's
        count of actor restarts."""
        iteration, restarts = 0, 0
        if latest_checkpoint(self.run_dir) is not None:
            state, notes = load_latest_checkpoint(self.run_dir)
            for line in notes:
                self.logger.event(line)
            iteration, restarts = state.iteration, state.counters.get("actor_restarts", 0)
            self.logger.rewind(iteration)
            self.coordinator.restore(state)
        else:
            self.logger.rewind(0)
        return iteration, restarts

    def _restore_in_place(self, err: RestoreNeeded) -> None:
        """Build the components again and load the newest checkpoint (see the module doc)."""
        at, restarts = self.coordinator.counters.iteration, self.coordinator.counters.actor_restarts
        self.backend.close()
        self.backend = make_backend(self.cfg, self.specs, *self._backend_args)
        self.coordinator = self._coordinator()
        iteration, saved = self._load_newest()
        c = self.coordinator.counters  # actor restarts over the run's life, not rolled back
        c.actor_restarts = restarts + c.actor_restarts - saved
        self.logger.event(
            f"iteration {at}: {', '.join(err.components)} died ({brief(err.cause)}); restored in "
            f"place from iteration {iteration} (restore {self.restores} of at most "
            f"{self.cfg.run.max_restores})"
        )

    def _final(self, result: EvalResult) -> dict[str, Any]:
        """eval.json, eval_episodes.png, eval_episode.mp4 (the first episode in the env's own
        frames, where it renders them) and eval_episode.gif (its trace); the evaluation's
        table row, picture, video and animation to the log."""
        run, c = self.cfg.run, self.coordinator.counters
        summary = summarize(run.env, result.episodes)
        row = table_row(summary, c.iteration, c.env_steps, final=True)
        summary["env_steps"] = c.env_steps
        summary["seed"], summary["eval_seed"] = run.seed, run.first_eval_seed
        (self.run_dir / "eval.json").write_text(json.dumps(summary, indent=2))
        image = plot_traces(result, self.run_dir / "eval_episodes.png")
        video = trace = None
        if result.traces and run.eval_video_frames:
            first = result.traces[0]
            trace = episode_gif(first, result.model, self.run_dir / "eval_episode.gif", run.env,
                                max_frames=run.eval_video_frames)  # fmt: skip
            if first.video is not None:
                video = episode_mp4(first.video, self.run_dir / "eval_episode.mp4")
        self.logger.evaluation(row, image=image, video=video, trace=trace)
        self.logger.summary({f"final/{k}": v["mean"] for k, v in summary.items()
                             if isinstance(v, dict)})  # fmt: skip
        return summary

    def close(self) -> None:
        self.logger.close()
        self.backend.close()


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(f"stopped by signal {signal.Signals(signum).name}")


def train(cfg: TrainConfig, resume: Path | None = None, ray_address: str | None = None,
          serial: bool = False, argv: list[str] | None = None,
          specs: RunSpecs | None = None,
          on_row: Callable[[dict[str, Any]], None] | None = None) -> Path:  # fmt: skip
    """Train (or continue) a run; returns its directory. Ray is started here unless ``serial``.

    ``argv`` (the command line, for the record) goes to ``meta.json`` with the git commit and
    the machine; the wall time is added when the run ends. ``on_row`` gets each row of
    ``metrics.jsonl`` as it is written (a Tune trial reports it: `rlmpc.reproduce.sweep`)."""
    if specs is None:  # a config built in Python: checked and resolved here, once
        specs = resolve(cfg, cluster=bool(ray_address or os.environ.get("RAY_ADDRESS")),
                        resume=resume)  # fmt: skip
    run_dir = run_dir_of(cfg, resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    meta_file = run_dir / "meta.json"
    meta = json.loads(meta_file.read_text()) if resume is not None and meta_file.is_file() else {}
    meta.setdefault("invocations", []).append(run_meta(argv if argv is not None else []))
    meta.update(meta["invocations"][0])
    meta_file.write_text(json.dumps(meta, indent=1))
    started = time.perf_counter()
    # the final evaluation runs here: the same thread count as the actors, the same numbers
    torch.set_num_threads(cfg.run.threads)
    run = Run(cfg, run_dir, resume=resume is not None, serial=serial, ray_address=ray_address,
              specs=specs, on_row=on_row)  # fmt: skip
    resume_line = f"resume this run with: python launch.py --resume {run_dir}"
    run.logger.event(f"run directory {run_dir}; {resume_line}")
    stopped: BaseException | None = None
    if threading.current_thread() is threading.main_thread():  # `kill PID`: stop, say how to go on
        signal.signal(signal.SIGTERM, _terminated)
    try:
        summary = run.train()
    except BaseException as err:  # KeyboardInterrupt too
        stopped = err
        raise
    finally:
        run.close()
        if stopped is not None:  # the last line says how to go on
            print(f"the run stopped ({type(stopped).__name__}: {stopped}); {resume_line}",
                  flush=True)  # fmt: skip
    meta["wall_time_s"] = meta.get("wall_time_s", 0.0) + time.perf_counter() - started
    meta_file.write_text(json.dumps(meta, indent=1))
    curves = plot_curves(run_dir)
    iteration = run.coordinator.counters.iteration
    if summary is None and iteration >= cfg.iterations:
        print(f"finished; run directory: {run_dir.resolve()}")
    elif summary is None:
        print(f"stopped after iteration {iteration}; continue with "
              f"`python launch.py --resume {run_dir}`")  # fmt: skip
    else:
        print(format_table(summary))
        print(f"run directory: {run_dir.resolve()}  (eval.json, eval_episodes.png, "
              f"{curves.name if curves else 'no curves'}, metrics.jsonl, checkpoints/)")  # fmt: skip
    return run_dir
