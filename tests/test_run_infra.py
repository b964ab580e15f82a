"""Checkpoints, the generated command line, and the run logger."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import torch

from envs import planner_config
from learners.policy import NetworkConfig
from rlmpc.run.cliargs import add_dataclass_args, build_dataclass, field_docs
from rlmpc.run.runlog import RunLogger, WandbConfig, plot_curves, wandb_credentials
from rlmpc.system import checkpoint as ckpt
from rlmpc.system.records import Weights
from rlmpc.system.worker import WorkerSpec


def test_atomic_save_roundtrip_and_prune(tmp_path):
    for it in range(1, 6):
        ckpt.save_checkpoint(tmp_path, it, {"it": it, "w": torch.full((3,), float(it))}, keep=2)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["ckpt_000004.pt", "ckpt_000005.pt"]
    state = ckpt.load_plain(tmp_path)
    assert state["it"] == 5 and torch.equal(state["w"], torch.full((3,), 5.0))
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_atomic_save_leaves_old_file_intact_on_failure(tmp_path):
    path = tmp_path / "x.pt"
    ckpt.atomic_save({"ok": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        ckpt.atomic_save({"bad": Unpicklable()}, path)
    assert torch.load(path)["ok"] == 1
    assert os.listdir(tmp_path) == ["x.pt"]


def test_load_missing_checkpoint_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ckpt.load_checkpoint(tmp_path)


@dataclass(frozen=True)
class _Cfg:
    """A test config."""

    steps: int = 10
    """how many steps (1..100)"""
    rate: float = 0.5
    """a rate"""
    mode: Literal["a", "b"] = "a"
    """a mode"""
    fast: bool = False
    """go fast"""
    tags: tuple[str, ...] = ()
    """tags"""

    def __post_init__(self):
        if not 1 <= self.steps <= 100:
            raise ValueError(f"steps must be in [1, 100], got {self.steps}")


def test_cli_generated_from_dataclass():
    assert field_docs(_Cfg)["steps"] == "how many steps (1..100)"
    parser = argparse.ArgumentParser()
    add_dataclass_args(parser, _Cfg, "test", defaults={"rate": 0.25})
    ns = parser.parse_args(["--steps", "7", "--mode", "b", "--fast", "--tags", "x", "y"])
    cfg = build_dataclass(_Cfg, ns)
    assert cfg == _Cfg(steps=7, rate=0.25, mode="b", fast=True, tags=("x", "y"))
    assert "how many steps" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--mode", "c"])
    with pytest.raises(ValueError, match="steps must be in"):
        build_dataclass(_Cfg, parser.parse_args(["--steps", "0"]))


def test_run_logger_writes_metrics_and_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # no `wandb login` either
    log = RunLogger(
        tmp_path, {"seed": 1}, WandbConfig(), total_steps=100, run_name="t", progress=False
    )
    for i in range(1, 4):
        log.log(
            {
                "env_steps": 10 * i,
                "episode_return": float(i),
                "rho": 0.3,
                "loss/value": float("nan"),
            }
        )
    log.event("actor 0 restarted")
    log.close()
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["env_steps"] for r in rows] == [10, 20, 30] and rows[0]["loss/value"] is None
    assert "actor 0 restarted" in (tmp_path / "events.log").read_text()
    assert any(p.name.startswith("offline-run") for p in (tmp_path / "wandb").iterdir())
    assert plot_curves(tmp_path).is_file()


def test_wandb_mode_validated():
    with pytest.raises(ValueError, match="wandb_mode"):
        WandbConfig(wandb_mode="sometimes")


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    """No W&B credential anywhere: a HOME of its own, no key, no NETRC."""
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_auto_mode_goes_online_with_wandb_logins_netrc_entry(no_credentials, monkeypatch):
    assert WandbConfig().resolved_mode() == "offline" and wandb_credentials() is None
    netrc = no_credentials / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert WandbConfig().resolved_mode() == "online" and wandb_credentials() == str(netrc)
    assert WandbConfig(wandb_mode="offline").resolved_mode() == "offline"  # forced stays
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")  # another server's key
    assert WandbConfig().resolved_mode() == "offline"


def test_auto_mode_reads_the_netrc_that_NETRC_names_and_the_key_in_the_environment(
    no_credentials, monkeypatch
):
    other = no_credentials / "elsewhere" / "netrc"
    other.parent.mkdir()
    other.write_text("machine wandb.example.org login user password secret\n")
    monkeypatch.setenv("NETRC", str(other))
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert wandb_credentials() == str(other)
    other.write_text("machine wandb.example.org login user password\n")  # no key
    assert wandb_credentials() is None
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_credentials() == "WANDB_API_KEY" and WandbConfig().resolved_mode() == "online"


def test_checkpoint_schema_is_plain_data_and_round_trips(tmp_path):
    """One schema for writer and readers: tensors and plain data (weights_only=True) on disk,
    the typed record (worker spec with the env's planner preset included) back."""
    spec = WorkerSpec("racing", 2, 4, planner_config("racing", num_samples=8),
                      NetworkConfig(hidden_sizes=(8,)), seed=1)  # fmt: skip
    state = ckpt.Checkpoint(
        counters={"iteration": 3, "env_steps": 96}, recent=[(1.5, True)], version=3,
        learner={"ppo": {"w": torch.ones(2)}, "version": 3},
        weights=Weights({"w": torch.zeros(2)}, {"v": torch.ones(1)}, rho=0.25),
        inflight_weights={2: Weights({"w": torch.ones(2)})}, inflight={0: [(3, 2)], 1: []},
        live=[0], snapshots={0: b"worker state"}, worker=spec, config={"run": {"env": "racing"}},
    )  # fmt: skip
    path = ckpt.save_checkpoint(tmp_path, state.iteration, state)
    assert path.name == "ckpt_000003.pt"
    torch.load(path, weights_only=True)  # no pickled objects with behaviour
    back = ckpt.load_checkpoint(tmp_path)
    assert back.worker == spec and type(back.worker.planner) is type(spec.planner)
    assert (back.iteration, back.version, back.recent, back.live) == (3, 3, [(1.5, True)], [0])
    assert back.inflight == {0: [(3, 2)], 1: []} and back.snapshots == {0: b"worker state"}
    torch.testing.assert_close(back.weights.values["v"], torch.ones(1))
    assert back.inflight_weights[2].values is None
    assert back.weights.rho == 0.25 and back.inflight_weights[2].rho is None
    plain = ckpt.load_plain(tmp_path)
    del plain["weights"]["rho"]  # written before weights carried ρ: unknown, virtual data built
    assert ckpt.Checkpoint.from_plain(plain).weights.rho is None
    plain["schema"] = 1
    with pytest.raises(ValueError, match="another version"):
        ckpt.Checkpoint.from_plain(plain)


def test_a_run_stopped_by_sigterm_ends_with_the_command_that_resumes_it(tmp_path):
    root = Path(__file__).resolve().parents[1]
    run_dir = tmp_path / "stopped"
    proc = subprocess.Popen(
        [sys.executable, str(root / "launch.py"), "--serial", "--env", "acrobot",
         "--envs-per-actor", "2", "--n-steps", "64", "--batch-size", "16", "--n-epochs", "1",
         "--num-samples", "16", "--hidden-sizes", "32", "32", "--total-env-steps", "1000000",
         "--checkpoint-every", "1", "--eval-every", "0", "--no-progress", "--wandb-mode",
         "disabled", "--runs-dir", str(tmp_path), "--run-name", "stopped"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root,
    )  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and not list((run_dir / "checkpoints").glob("ckpt_*.pt")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    last = out.strip().splitlines()[-1]
    assert last.endswith(f"python launch.py --resume {run_dir}"), (last, err[-2000:])
    assert "SIGTERM" in last


def test_the_tracking_benchmark_times_the_same_rows_with_and_without_tensorboard(tmp_path):
    """``python -m rlmpc.bench tracking`` (docs/tracking.md's cost of the writer): its figures,
    from loggers that write what a run's logger writes (no wall-clock bound asserted)."""
    from rlmpc import bench

    figures = bench.main(["tracking", "--rows", "5", "--figures", "10"])
    assert set(figures) == {"plain_row_ms", "tensorboard_row_ms", "tensorboard_ratio",
                            "tensorboard_import_s"}  # fmt: skip
    assert all(v > 0 for v in figures.values())
    with pytest.raises(SystemExit, match="--rows"):
        bench.main(["tracking", "--rows", "0"])
