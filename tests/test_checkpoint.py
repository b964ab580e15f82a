"""Checkpoints that cannot run code: plain-data snapshots, refused and torn files, failed writes."""

from __future__ import annotations

import errno
import io
import os
import pathlib
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from envs import planner_config
from learners.policy import NetworkConfig
from rlmpc.run.cli import parse
from rlmpc.run.evaluate import main as evaluate_main
from rlmpc.run.train import train
from rlmpc.system import checkpoint as ckpt
from rlmpc.system.records import FragmentId, Weights
from rlmpc.system.worker import RolloutWorker, WorkerSpec


def _spec(env: str = "acrobot") -> WorkerSpec:
    return WorkerSpec(env, 2, 3, planner_config(env, num_samples=8), NetworkConfig((8,)), seed=5)


def _state(worker: RolloutWorker | None = None, iteration: int = 1) -> ckpt.Checkpoint:
    """A small checkpoint; with ``worker``: its snapshot as actor 0's."""
    snapshots = {} if worker is None else {0: worker.snapshot()}
    return ckpt.Checkpoint(
        counters={"iteration": iteration, "env_steps": 8 * iteration}, recent=[], version=1,
        learner={"w": torch.ones(2)}, weights=Weights({"w": torch.zeros(2)}),
        snapshots=snapshots, worker=_spec(), config={"run": {"env": "acrobot"}},
    )  # fmt: skip


class _TouchOnLoad:
    """A pickled object that creates ``marker`` when it is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.mark.parametrize("env", ["acrobot", "racing"])
def test_worker_snapshot_is_plain_data_and_a_new_worker_goes_on_exactly(tmp_path, env):
    """Through a file read with weights_only=True, into a worker built afresh (a resume)."""
    w = RolloutWorker(0, _spec(env))
    w.collect(FragmentId(0, 0), 4, None, 0)
    path = ckpt.save_checkpoint(tmp_path, 1, _state(w))
    torch.load(path, weights_only=True)
    weights = Weights({k: v.clone() for k, v in w.policy.state_dict().items()})
    a = w.collect(FragmentId(1, 0), 5, weights, 1)
    fresh = RolloutWorker(0, _spec(env), seed_offset=1)  # another start: only restore aligns
    fresh.restore(ckpt.load_checkpoint(path).snapshots[0])
    b = fresh.collect(FragmentId(1, 0), 5, weights, 1)
    for x, y in zip((*a[0], *a[1]), (*b[0], *b[1]), strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(fresh.acting.episodes.ret, w.acting.episodes.ret)


def test_snapshot_is_a_copy_acting_goes_on_without_changing_it():
    w = RolloutWorker(0, _spec())
    snap = w.snapshot()
    obs, warm = snap["obs"].clone(), snap["warm"].clone()
    w.collect(FragmentId(0, 0), 3, None, 0)
    assert torch.equal(snap["obs"], obs) and torch.equal(snap["warm"], warm)


def test_lunar_lander_snapshot_holds_no_env_state_and_restarts_its_episodes():
    w = RolloutWorker(0, _spec("lunarlander"))
    w.collect(FragmentId(0, 0), 3, None, 0)
    snap = w.snapshot()
    assert snap["envs"] == [None, None]
    w.restore(snap)
    assert list(w.acting.episodes.len) == [0, 0]  # new episodes, their first observations
    assert not np.array_equal(w.acting.obs, snap["obs"].numpy())


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("write", ["torch.save", "pickle.dump"])
def test_a_checkpoint_holding_pickled_objects_is_refused_and_never_run(tmp_path, write):
    marker = tmp_path / "marker"
    plain = _state().to_plain()
    plain["snapshots"] = {0: _TouchOnLoad(marker)}
    path = tmp_path / "checkpoints" / "ckpt_000001.pt"
    path.parent.mkdir()
    with open(path, "wb") as f:
        torch.save(plain, f) if write == "torch.save" else pickle.dump(plain, f)
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_checkpoint(path)
    assert str(err.value) == (
        f"checkpoint {path} holds pickled objects (code) and was refused; "
        "checkpoints hold tensors and plain data only"
    )
    assert err.value.path == path and not marker.exists()
    with pytest.raises(ckpt.CheckpointError, match="pickled objects"):
        ckpt.load_checkpoint(tmp_path)  # the run directory: nothing else to fall back to
    assert not marker.exists()


@pytest.mark.parametrize(
    "cut", [lambda b: b[: len(b) // 2], lambda b: b[:100], lambda b: b"", lambda b: os.urandom(999)]
)
def test_a_truncated_or_corrupt_checkpoint_is_named_unreadable(tmp_path, cut):
    path = ckpt.save_checkpoint(tmp_path, 1, _state())
    path.write_bytes(cut(path.read_bytes()))
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_checkpoint(path)
    assert str(err.value).startswith(f"checkpoint {path} is unreadable (truncated or corrupt): ")
    assert err.value.path == path


def test_a_checkpoint_of_another_layout_is_named(tmp_path):
    path = ckpt.save_checkpoint(tmp_path, 1, {"schema": 1, "weights": torch.ones(1)})
    with pytest.raises(ckpt.CheckpointError, match=f"checkpoint {path}: .*another version"):
        ckpt.load_checkpoint(path)
    path = ckpt.save_checkpoint(tmp_path, 2, [torch.ones(1)])
    with pytest.raises(ckpt.CheckpointError, match=f"checkpoint {path} holds a list"):
        ckpt.load_checkpoint(path)


def test_an_earlier_layout_with_pickled_snapshots_loads_without_them(tmp_path):
    plain = {**_state().to_plain(), "schema": 2, "snapshots": {0: pickle.dumps("worker state")}}
    path = ckpt.save_checkpoint(tmp_path, 1, plain)
    state, notes = ckpt.load_latest_checkpoint(tmp_path)
    assert state.snapshots == {} and state.iteration == 1
    assert notes == [
        f"checkpoint {path} was written by an earlier rlmpc (layout 2): its workers' snapshots "
        "are pickled and were left out; the workers start new episodes"
    ]


def test_a_run_directory_falls_back_past_an_unreadable_newest_checkpoint(tmp_path):
    for it in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, it, _state(iteration=it))
    newest = ckpt.latest_checkpoint(tmp_path)
    newest.write_bytes(newest.read_bytes()[:500])
    state, skipped = ckpt.load_latest_checkpoint(tmp_path)
    assert state.iteration == 2
    assert len(skipped) == 1
    assert skipped[0].startswith(
        f"skipped checkpoint {newest} is unreadable (truncated or corrupt)"
    )
    with pytest.warns(UserWarning, match="skipped checkpoint .*ckpt_000003.pt is unreadable"):
        assert ckpt.load_checkpoint(tmp_path).iteration == 2
    for p in ckpt.list_checkpoints(tmp_path):
        p.write_bytes(b"")
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint in .* can be read: skipped"):
        ckpt.load_latest_checkpoint(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_write_into_a_read_only_directory_names_the_path_and_keeps_the_previous(tmp_path):
    previous = ckpt.save_checkpoint(tmp_path, 1, _state())
    previous.parent.chmod(0o555)
    try:
        with pytest.raises(ckpt.CheckpointError) as err:
            ckpt.save_checkpoint(tmp_path, 2, _state(iteration=2))
    finally:
        previous.parent.chmod(0o755)
    target = ckpt.checkpoint_path(tmp_path, 2)
    assert str(err.value).startswith(f"checkpoint {target} could not be written (")
    assert str(err.value).endswith(f"the previous checkpoint {previous} is intact")
    assert os.listdir(previous.parent) == [previous.name]
    assert ckpt.load_checkpoint(tmp_path).iteration == 1


def test_a_full_disk_mid_write_names_the_path_and_keeps_the_previous(tmp_path, monkeypatch):
    previous = ckpt.save_checkpoint(tmp_path, 1, _state())
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[:300])  # part of it made it to the disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    target = ckpt.checkpoint_path(tmp_path, 2)
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.save_checkpoint(tmp_path, 2, _state(iteration=2))
    assert err.value.path == target
    assert str(err.value) == (
        f"checkpoint {target} could not be written ([Errno 28] No space left on device); "
        f"the previous checkpoint {previous} is intact"
    )
    assert os.listdir(previous.parent) == [previous.name]  # no temp file left behind
    monkeypatch.undo()
    assert ckpt.load_checkpoint(tmp_path).iteration == 1


def test_keep_checkpoints_is_an_option_and_zero_is_refused(capsys):
    assert parse(["--keep-checkpoints", "2"]).cfg.run.keep_checkpoints == 2
    assert parse([]).cfg.run.keep_checkpoints == 3
    with pytest.raises(SystemExit) as err:
        parse(["--keep-checkpoints", "0"])
    assert err.value.code == 2
    assert "argument --keep-checkpoints: keep_checkpoints must be >= 1" in capsys.readouterr().err


def test_a_resume_keeps_the_newest_n_and_skips_a_torn_newest_on_record(tmp_path):
    """A serial run: checkpoints every iteration, two kept; the newest torn before resuming."""
    cfg = parse(
        ["--env", "acrobot", "--num-actors", "1", "--envs-per-actor", "2", "--n-steps", "16",
         "--batch-size", "16", "--n-epochs", "1", "--total-env-steps", "80", "--num-samples", "8",
         "--hidden-sizes", "8", "--eval-every", "0", "--final-eval-episodes", "0",
         "--checkpoint-every", "1", "--keep-checkpoints", "2", "--stop-after", "3",
         "--runs-dir", str(tmp_path), "--run-name", "r", "--no-progress", "--wandb-mode",
         "disabled"]
    ).cfg  # fmt: skip
    run_dir = train(cfg, serial=True)
    names = [p.name for p in ckpt.list_checkpoints(run_dir)]
    assert names == ["ckpt_000002.pt", "ckpt_000003.pt"]
    newest = ckpt.latest_checkpoint(run_dir)
    newest.write_bytes(newest.read_bytes()[:1000])
    train(replace(cfg, run=replace(cfg.run, stop_after=0)), resume=run_dir, serial=True)
    events = (run_dir / "events.log").read_text()
    assert f"skipped checkpoint {newest} is unreadable (truncated or corrupt)" in events
    assert "resumed at iteration 2" in events
    assert [p.name for p in ckpt.list_checkpoints(run_dir)] == ["ckpt_000004.pt", "ckpt_000005.pt"]


def test_evaluate_names_a_bad_checkpoint_without_a_traceback(tmp_path, capsys):
    path = ckpt.save_checkpoint(tmp_path, 1, _state())
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(SystemExit) as err:
        evaluate_main(["--checkpoint", str(path), "--episodes", "1"])
    assert err.value.code == 1
    out = capsys.readouterr().err
    assert f"checkpoint {path} is unreadable (truncated or corrupt)" in out
    assert "Traceback" not in out
