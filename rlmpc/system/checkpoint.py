"""Checkpoints: one schema (`Checkpoint`) for the writer and every reader, written atomically.

A checkpoint holds what exact resumption and a later evaluation need, as tensors and plain
data only: the learner's state, the weights in flight, the coordinator's counters and slots,
the rollout workers' snapshots (plain data too: `rlmpc.system.worker.RolloutWorker.snapshot`),
the worker spec and the run's resolved config. `Checkpoint.to_plain` /
`Checkpoint.from_plain` are the only translation between the typed record and the file.

Reading runs no code: files are loaded with ``torch.load(weights_only=True)``, which refuses
pickled objects. A file that cannot be read raises `CheckpointError` naming it and why
(truncated or corrupt; holding pickled objects; another layout); from a run directory,
`load_latest_checkpoint` falls back to the newest checkpoint that loads and says which it
skipped.

The file is ``<run_dir>/checkpoints/ckpt_<iteration:06d>.pt``. It is first written to a
temporary file in the same directory, flushed and fsynced, then moved over the final name
with ``os.replace`` (atomic on POSIX); the directory is fsynced so the rename itself survives
a power cut: a crash mid-write never leaves a torn file behind, and a failed write (disk
full, no permission) leaves the previous checkpoint as it was (`CheckpointError`).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import pickletools
import re
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import envs
from learners.policy import NetworkConfig
from rlmpc.system.records import Weights
from rlmpc.system.worker import WorkerSpec

#: the layout `Checkpoint.to_plain` writes; a file of another layout is refused
SCHEMA = 3
#: layout 2 is layout 3 with the workers' snapshots pickled: read with them left out
_PICKLED_SNAPSHOTS = 2


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or written; ``path`` names it, the message says
    why."""

    def __init__(self, path: str | os.PathLike, message: str) -> None:
        super().__init__(message)
        self.path = Path(path)


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def spec_to_plain(spec: WorkerSpec) -> dict[str, Any]:
    """A `WorkerSpec` as plain data, with the version of its env's task (`EnvSpec.version`)."""
    return {**dataclasses.asdict(spec), "planner": dataclasses.asdict(spec.planner),
            "networks": dataclasses.asdict(spec.networks),
            "task_version": envs.spec(spec.env).version}  # fmt: skip


def spec_from_plain(d: dict[str, Any]) -> WorkerSpec:
    """The `WorkerSpec` of `spec_to_plain`. Its env is the task it ran, at its recorded
    version (none recorded: 1; `envs.resolve_task`), and the planner preset class is that
    env's (registry)."""
    d = dict(d)
    env = envs.resolve_task(d["env"], d.pop("task_version", None))
    planner = envs.spec(env).planner(**_tuples(d["planner"]))
    return WorkerSpec(
        **{**d, "env": env, "planner": planner,
           "networks": NetworkConfig(**_tuples(d["networks"]))}
    )  # fmt: skip


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
    snapshots: dict[int, dict[str, Any]] = field(default_factory=dict)
    """per actor: its worker's state after the last fragment learned on (plain data)"""
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
        weights = lambda w: {"policy": w.policy, "values": w.values, "rho": w.rho}
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
        weights = lambda w: Weights(w["policy"], w["values"], w.get("rho"))
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


def atomic_save(obj: Any, path: str | os.PathLike, previous: Path | None = None) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (temp file + fsync + rename).

    An `OSError` on the way (disk full, permission denied) removes the temp file and raises
    a `CheckpointError` naming ``path`` and ``previous``, the checkpoint left intact (default:
    ``path`` itself, if it exists).
    """
    path = Path(path)
    if previous is None and path.is_file():
        previous = path
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        kept = f"the previous checkpoint {previous} is intact" if previous else "none was before"
        raise CheckpointError(
            path, f"checkpoint {path} could not be written ({err}); {kept}"
        ) from err
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return path


def checkpoint_path(run_dir: str | os.PathLike, iteration: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"ckpt_{iteration:06d}.pt"


def save_checkpoint(
    run_dir: str | os.PathLike, iteration: int, state: Checkpoint | dict, keep: int = 3
) -> Path:
    """Write the checkpoint of ``iteration`` and prune all but the newest ``keep``; a failed
    write raises `CheckpointError` and leaves the checkpoints as they were."""
    plain = state.to_plain() if isinstance(state, Checkpoint) else state
    path = atomic_save(plain, checkpoint_path(run_dir, iteration), latest_checkpoint(run_dir))
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
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def _well_formed_pickle(path: Path) -> bool:
    """Whether the file's pickle stream (torch's ``data.pkl``, or the whole file) parses,
    read with `pickletools`: nothing in it is run."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                name = next(n for n in z.namelist() if n.rpartition("/")[2] == "data.pkl")
                data = z.read(name)
        else:
            data = path.read_bytes()
        for _ in pickletools.genops(data):
            pass
    except Exception:  # any failure to parse: not a well-formed stream
        return False
    return True


def _why(err: BaseException) -> str:
    """The error's type and the first sentence of its message."""
    first = str(err).strip().split("\n")[0].split(". ")[0]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _read(path: Path, map_location: str | torch.device) -> Any:
    """``torch.load(path, weights_only=True)``, or a `CheckpointError` naming the file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if _well_formed_pickle(path):  # the weights-only reader refused what the file holds
            raise CheckpointError(path, (
                f"checkpoint {path} holds pickled objects (code) and was refused; "
                "checkpoints hold tensors and plain data only"
            )) from err  # fmt: skip
        why = "not a well-formed pickle stream"
        raise CheckpointError(
            path, f"checkpoint {path} is unreadable (truncated or corrupt): {why}"
        ) from err
    except OSError as err:
        raise CheckpointError(path, f"checkpoint {path} cannot be read: {err}") from err
    except Exception as err:  # torch's reader: RuntimeError, EOFError, KeyError... on a torn file
        raise CheckpointError(
            path, f"checkpoint {path} is unreadable (truncated or corrupt): {_why(err)}"
        ) from err


def _load(path: Path, map_location: str | torch.device) -> tuple[Checkpoint, list[str]]:
    """The `Checkpoint` of one file, with what the reader should know about it."""
    plain, notes = _read(path, map_location), []
    if not isinstance(plain, dict):
        raise CheckpointError(
            path, f"checkpoint {path} holds a {type(plain).__name__}, not a checkpoint"
        )
    if plain.get("schema") == _PICKLED_SNAPSHOTS:
        plain = {**plain, "schema": SCHEMA, "snapshots": {}}
        notes.append(
            f"checkpoint {path} was written by an earlier rlmpc (layout {_PICKLED_SNAPSHOTS}): its "
            "workers' snapshots are pickled and were left out; the workers start new episodes"
        )
    try:
        return Checkpoint.from_plain(plain), notes
    except ValueError as err:  # another layout, an env this rlmpc does not know...
        raise CheckpointError(path, f"checkpoint {path}: {err}") from err
    except (KeyError, TypeError) as err:
        raise CheckpointError(path, (
            f"checkpoint {path} does not hold an rlmpc checkpoint of layout {SCHEMA} "
            f"({type(err).__name__}: {err})"
        )) from err  # fmt: skip


def _newest(run_dir: str | os.PathLike, load: Any) -> tuple[Any, list[str]]:
    """``load`` of a run directory's newest checkpoint that loads, and a line for each newer
    one skipped (the file and why); `CheckpointError` if none loads."""
    found = list_checkpoints(run_dir)
    if not found:
        raise FileNotFoundError(f"no checkpoint in {Path(run_dir) / 'checkpoints'}")
    skipped = []
    for path in reversed(found):
        try:
            return load(path), skipped
        except CheckpointError as err:
            skipped.append(f"skipped {err}")
    raise CheckpointError(Path(run_dir) / "checkpoints", (
        f"no checkpoint in {Path(run_dir) / 'checkpoints'} can be read: " + "; ".join(skipped)
    ))  # fmt: skip


def load_plain(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """The plain data of a checkpoint file, or of a run directory's newest that reads (the
    ones skipped are warned about): tensors and plain data only (``weights_only=True``)."""
    if Path(path).is_dir():
        plain, skipped = _newest(path, lambda p: _read(p, map_location))
        for line in skipped:
            warnings.warn(line, stacklevel=2)
        return plain
    return _read(_checkpoint_file(path), map_location)


def load_latest_checkpoint(
    run_dir: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[Checkpoint, list[str]]:
    """A run directory's newest checkpoint that loads, and what its user should know: a line
    for each newer one skipped (the file and why), and for one of an earlier layout."""
    (state, notes), skipped = _newest(run_dir, lambda p: _load(p, map_location))
    return state, skipped + notes


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """Load a checkpoint file, or a run directory's newest that loads (`load_latest_checkpoint`;
    what it reports is warned about)."""
    if Path(path).is_dir():
        state, notes = load_latest_checkpoint(path, map_location)
    else:
        state, notes = _load(_checkpoint_file(path), map_location)
    for line in notes:
        warnings.warn(line, stacklevel=2)
    return state
