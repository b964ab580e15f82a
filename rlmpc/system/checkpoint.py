"""Checkpoints: one schema (`Checkpoint`) for the writer and every reader, written atomically.

A checkpoint holds what exact resumption and a later evaluation need, as tensors and plain
data only (loaded with ``torch.load(weights_only=True)``): the learner's state, the weights
in flight, the coordinator's counters and slots, the rollout workers' snapshots (opaque
bytes), the worker spec and the run's resolved config. `Checkpoint.to_plain` /
`Checkpoint.from_plain` are the only translation between the typed record and the file.

The file is ``<run_dir>/checkpoints/ckpt_<iteration:06d>.pt``. It is first written to a
temporary file in the same directory, flushed and fsynced, then moved over the final name
with ``os.replace`` (atomic on POSIX); the directory is fsynced so the rename itself survives
a power cut: a crash mid-write never leaves a torn file behind.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import envs
from learners.policy import NetworkConfig
from rlmpc.system.records import Weights
from rlmpc.system.worker import WorkerSpec

#: the layout `Checkpoint.to_plain` writes; a file of another layout is refused
SCHEMA = 2


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def spec_to_plain(spec: WorkerSpec) -> dict[str, Any]:
    return {**dataclasses.asdict(spec), "planner": dataclasses.asdict(spec.planner),
            "networks": dataclasses.asdict(spec.networks)}  # fmt: skip


def spec_from_plain(d: dict[str, Any]) -> WorkerSpec:
    """The `WorkerSpec` of `spec_to_plain`; the planner preset class is the env's (registry)."""
    planner = envs.spec(d["env"]).planner(**_tuples(d["planner"]))
    return WorkerSpec(
        **{**d, "planner": planner, "networks": NetworkConfig(**_tuples(d["networks"]))}
    )


@dataclass(frozen=True)
class Checkpoint:
    """Everything a checkpoint holds (see the module docstring)."""

    counters: dict[str, int]
    """the coordinator's counters: iteration, env_steps, virtual_samples, episodes, ..."""
    recent: list[tuple[float, bool]]
    """the last episodes' (return, success), for the logged averages"""
    version: int
    """the learner's policy version"""
    learner: dict[str, Any]
    """`rlmpc.system.learner.Learner.state_dict`"""
    weights: Weights
    """the weights of ``version`` (what evaluation loads)"""
    inflight_weights: dict[int, Weights] = field(default_factory=dict)
    """the weights of the fragments in flight, by version"""
    inflight: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    """per actor: the (index, version) of its fragments in flight"""
    live: list[int] = field(default_factory=list)
    """the actors still in the run (the others were dropped)"""
    snapshots: dict[int, bytes] = field(default_factory=dict)
    """per actor: its worker's state after the last fragment learned on"""
    pending_eval: dict[str, int] | None = None
    """the periodic evaluation in flight: ``due`` (the iteration whose row gets its
    figures), ``env_steps`` and ``version`` (its weights are in ``inflight_weights``)"""
    worker: WorkerSpec | None = None
    """what the rollout workers were built from"""
    config: dict[str, Any] = field(default_factory=dict)
    """the run's resolved config (``config.yaml``)"""

    @property
    def iteration(self) -> int:
        return int(self.counters["iteration"])

    def to_plain(self) -> dict[str, Any]:
        weights = lambda w: {"policy": w.policy, "values": w.values}
        return {
            "schema": SCHEMA, "counters": dict(self.counters), "recent": list(self.recent),
            "version": self.version, "learner": self.learner, "weights": weights(self.weights),
            "inflight_weights": {v: weights(w) for v, w in self.inflight_weights.items()},
            "inflight": self.inflight, "live": list(self.live), "snapshots": self.snapshots,
            "worker": None if self.worker is None else spec_to_plain(self.worker),
            "config": self.config, "pending_eval": self.pending_eval,
        }  # fmt: skip

    @staticmethod
    def from_plain(d: dict[str, Any]) -> Checkpoint:
        if d.get("schema") != SCHEMA:
            raise ValueError(
                f"checkpoint layout {d.get('schema')!r} is not this version's ({SCHEMA}); "
                "it was written by another version of rlmpc"
            )
        weights = lambda w: Weights(w["policy"], w["values"])
        return Checkpoint(
            counters=d["counters"], recent=[tuple(r) for r in d["recent"]], version=d["version"],
            learner=d["learner"], weights=weights(d["weights"]),
            inflight_weights={v: weights(w) for v, w in d["inflight_weights"].items()},
            inflight={a: [tuple(s) for s in q] for a, q in d["inflight"].items()},
            live=list(d["live"]), snapshots=d["snapshots"],
            worker=None if d["worker"] is None else spec_from_plain(d["worker"]),
            config=d["config"], pending_eval=d.get("pending_eval"),
        )  # fmt: skip


_NAME = re.compile(r"^ckpt_(\d{6,})\.pt$")


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (temp file + fsync + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def checkpoint_path(run_dir: str | os.PathLike, iteration: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"ckpt_{iteration:06d}.pt"


def save_checkpoint(
    run_dir: str | os.PathLike, iteration: int, state: Checkpoint | dict, keep: int = 3
) -> Path:
    """Write the checkpoint of ``iteration`` and prune all but the newest ``keep``."""
    plain = state.to_plain() if isinstance(state, Checkpoint) else state
    path = atomic_save(plain, checkpoint_path(run_dir, iteration))
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def _checkpoint_file(path: str | os.PathLike) -> Path:
    """A checkpoint file, or the newest one of a run directory."""
    path = Path(path)
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"no checkpoint in {path / 'checkpoints'}")
        path = latest
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def load_plain(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The plain data of a checkpoint file (or of a run directory's newest): tensors and plain
    data only (``weights_only=True``)."""
    return torch.load(_checkpoint_file(path), map_location=map_location, weights_only=True)


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """Load a checkpoint file, or the newest one of a run directory."""
    return Checkpoint.from_plain(load_plain(path, map_location))
