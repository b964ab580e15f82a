"""The per-node watchdog: CARLA servers that stop answering come back by themselves.

`Watchdog` checks every server of the node's registry each ``interval_s``
(`rlmpc.ops.processes.answers`: CARLA's ``version`` RPC) and restarts, on its own ports
with its recorded command (`restart_server`):

* a **dead** server (its process is gone) at once;
* a running server that fails ``failures`` checks in a row (**hung**: alive, not answering);
* not a server that is still starting (``startup_timeout_s`` of the registry's `NodeSettings`
  after it was (re)started), unless it dies.

A server restarted ``max_restarts`` times in a row without answering in between is left down
(logged once): something other than a crash is wrong (the GPU, the install). The watchdog
stops when the registry is gone (``stop`` removes it after stopping the watchdog first).

``python -m rlmpc.ops.carla_servers watch`` runs it in the foreground; ``start --watch``
starts it detached (`start_detached`: a session of its own, recorded in
``<state dir>/watchdog.json`` with its PID and the PID's start time, logging to
``watchdog.log``), and ``stop`` stops it (`stop_detached`) before the servers. The envs meanwhile
wait for their server (`envs.racing.carla_sim.CarlaSim.reconnect`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from envs.racing.carla_servers import (
    REGISTRY,
    ServerRecord,
    _read_registry,
    _write_registry,
    proc_start_time,
    read_node_settings,
)
from rlmpc.ops import processes as procs

RECORD, LOG = "watchdog.json", "watchdog.log"


@dataclass(frozen=True)
class WatchConfig:
    """How the watchdog checks the servers of its node."""

    interval_s: float = 5.0
    """seconds between two rounds of checks, > 0"""
    check_timeout_s: float = 5.0
    """seconds a server has to answer one check, > 0"""
    failures: int = 3
    """checks in a row a running server may fail before it is restarted (a dead one: at once), >= 1"""
    max_restarts: int = 5
    """restarts in a row without answering in between, then the server is left down, >= 1"""

    def __post_init__(self) -> None:
        for name in ("interval_s", "check_timeout_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} (--{name.replace('_', '-')}) must be > 0, got {v!r}")
        for name in ("failures", "max_restarts"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ValueError(
                    f"{name} (--{name.replace('_', '-')}) must be an int >= 1, got {v!r}"
                )


def restart_server(state_dir: Path, index: int, expected_pid: int) -> ServerRecord | None:
    """Restart server ``index`` on its ports with its command (under the node lock): stop what
    is left of its process group, start it again, record it. None when the registry no longer
    holds that server with ``expected_pid`` (it was stopped or restarted meanwhile)."""
    with procs.NodeLock(state_dir):
        records = _read_registry(state_dir)
        k = next((k for k, r in enumerate(records) if r.index == index), None)
        if k is None or records[k].pid != expected_pid:
            return None
        old = records[k]
        procs.terminate([old], grace_s=5.0)  # a hung server, or a dead one's children
        procs.check_ports_free(old.host, old.rpc_port, old.index)
        pid, start = procs.spawn(old.command, old.log)
        records[k] = dataclasses.replace(old, pid=pid, start_time=start, restarts=old.restarts + 1)
        _write_registry(state_dir, records)
        return records[k]


@dataclass
class _Track:
    """What the watchdog remembers of one server between rounds."""

    pid: int
    since: float  # when this PID was seen first (its start, for a server it restarted)
    failed: int = 0  # checks failed in a row
    streak: int = 0  # restarts in a row without answering in between
    gave_up: bool = False


class Watchdog:
    """Checks and restarts the servers of ``state_dir`` (module docstring); ``log`` gets one
    line per event."""

    def __init__(self, state_dir: Path, cfg: WatchConfig = WatchConfig(),
                 log: Callable[[str], None] = print) -> None:  # fmt: skip
        self.state_dir, self.cfg, self.log = Path(state_dir), cfg, log
        self.tracks: dict[int, _Track] = {}

    def _say(self, message: str) -> None:
        self.log(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}")

    def check(self) -> list[int]:
        """One round: check every server, restart those due; the indices restarted."""
        procs.reap()
        startup = read_node_settings(self.state_dir).startup_timeout_s
        restarted = []
        for rec in _read_registry(self.state_dir):
            now = time.monotonic()
            track = self.tracks.get(rec.index)
            if track is None or track.pid != rec.pid:  # new to us (started, or restarted by hand)
                track = self.tracks[rec.index] = _Track(
                    rec.pid, now, streak=track.streak if track else 0
                )
            alive = proc_start_time(rec.pid) == rec.start_time
            if alive and procs.answers(rec.host, rec.rpc_port, self.cfg.check_timeout_s):
                if track.failed or track.streak or track.gave_up:
                    self._say(
                        f"server {rec.index} (pid {rec.pid}, rpc port {rec.rpc_port}) answers"
                    )
                track.failed, track.streak, track.gave_up = 0, 0, False
                continue
            if track.gave_up:
                continue
            starting = now - track.since < startup
            if alive:
                track.failed += 1
                if starting or track.failed < self.cfg.failures:
                    continue
            why = "dead" if not alive else f"not answering {track.failed} checks in a row"
            if track.streak >= self.cfg.max_restarts:
                track.gave_up = True
                self._say(f"server {rec.index} (rpc port {rec.rpc_port}) {why} after "
                          f"{track.streak} restarts in a row: left down; see {rec.log}")  # fmt: skip
                continue
            new = restart_server(self.state_dir, rec.index, rec.pid)
            if new is None:
                continue
            self.tracks[rec.index] = _Track(new.pid, time.monotonic(), streak=track.streak + 1)
            restarted.append(rec.index)
            self._say(f"server {rec.index} (pid {rec.pid}, rpc port {rec.rpc_port}) {why}; "
                      f"restarted as pid {new.pid} (restart {new.restarts})")  # fmt: skip
        return restarted

    def run(self, stop: threading.Event | None = None) -> None:
        """Check every ``interval_s`` until ``stop`` is set or the registry is gone."""
        stop = stop or threading.Event()
        self._say(f"watching {self.state_dir / REGISTRY} every {self.cfg.interval_s:g} s")
        while not stop.is_set():
            if not (self.state_dir / REGISTRY).is_file():
                self._say("the registry is gone (servers stopped): watchdog ends")
                return
            try:
                self.check()
            except Exception as err:  # a round that fails is logged; the next one tries again
                self._say(f"check failed: {type(err).__name__}: {err}")
            stop.wait(self.cfg.interval_s)
        self._say("stopped")


def run_foreground(state_dir: Path, cfg: WatchConfig) -> int:
    """``watch``: run until SIGTERM / SIGINT or the registry is gone."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    Watchdog(state_dir, cfg, log=lambda line: print(line, flush=True)).run(stop)
    return 0


# ------------------------------------------------------------------ the detached watchdog


def _record(state_dir: Path) -> dict | None:
    path = state_dir / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def watchdog_pid(state_dir: Path) -> int | None:
    """The PID of the node's detached watchdog, None unless it runs."""
    rec = _record(state_dir)
    if rec is None or proc_start_time(rec["pid"]) != rec["start_time"]:
        return None
    return int(rec["pid"])


def start_detached(state_dir: Path, cfg: WatchConfig) -> int:
    """Start ``watch`` for ``state_dir`` in a session of its own (module docstring); its PID."""
    cmd = [sys.executable, "-m", "rlmpc.ops.carla_servers", "watch", "--state-dir",
           str(state_dir)]  # fmt: skip
    for f in dataclasses.fields(WatchConfig):
        cmd += [f"--{f.name.replace('_', '-')}", str(getattr(cfg, f.name))]
    pid, start = procs.spawn(tuple(cmd), str(state_dir / LOG))
    (state_dir / RECORD).write_text(json.dumps({"pid": pid, "start_time": start, "cmd": cmd}))
    return pid


def stop_detached(state_dir: Path, grace_s: float = 10.0) -> int | None:
    """Stop the node's detached watchdog (SIGTERM, SIGKILL after ``grace_s``); its PID."""
    rec, pid = _record(state_dir), watchdog_pid(state_dir)
    if pid is not None:
        procs.signal_group(pid, rec["start_time"], signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and procs.group_alive(pid):
            procs.reap()
            time.sleep(0.05)
        procs.signal_group(pid, rec["start_time"], signal.SIGKILL)
        proc = procs._CHILDREN.pop(pid, None)
        if proc is not None:
            proc.wait(timeout=grace_s)
    if rec is not None:
        os.unlink(state_dir / RECORD)
    return pid
