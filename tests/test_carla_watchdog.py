"""The per-node watchdog (`rlmpc.ops.watchdog`) against stand-in servers
(`tests.carla_standin`): real processes, ports and PIDs; dead and hung servers come back on
their own ports, one that cannot start is left down, ``start --watch`` / ``stop``."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from envs.racing.carla_servers import NodeSettings, _read_registry, _write_registry
from rlmpc.ops import carla_servers as cs
from rlmpc.ops import watchdog as wd
from rlmpc.ops.carla_servers import ServerConfig
from rlmpc.ops.processes import answers, port_open
from tests.carla_standin import free_base, wait_for


def start(carla_root: Path, state_dir: Path, count: int = 2, *extra: str) -> list[cs.ServerStatus]:
    cfg = ServerConfig(count=count, carla_root=str(carla_root), base_port=free_base(3 * count + 3),
                       startup_timeout_s=20.0, extra_args=extra)  # fmt: skip
    return cs.start_servers(cfg, state_dir)


def quick_startup(state_dir: Path, seconds: float = 0.0) -> None:
    """Tell the watchdog the servers start in ``seconds`` (no grace for a hung one)."""
    _write_registry(state_dir, _read_registry(state_dir), NodeSettings(seconds, 10.0))


def test_a_dead_server_is_restarted_on_its_ports(carla_root, state_dir):
    before = start(carla_root, state_dir)
    assert [s.state for s in before] == ["healthy", "healthy"]
    lines: list[str] = []
    dog = wd.Watchdog(state_dir, wd.WatchConfig(interval_s=0.1, check_timeout_s=1.0), lines.append)
    assert dog.check() == []  # all answer: nothing to do
    victim = before[1].record
    os.killpg(victim.pid, signal.SIGKILL)  # the launcher and its child, as a crash would
    assert wait_for(lambda: not cs.is_running(victim))
    assert dog.check() == [1]  # dead: restarted at once, startup grace or not
    after = _read_registry(state_dir)
    assert after[1].pid != victim.pid and after[1].restarts == 1
    assert (after[1].rpc_port, after[1].tm_port, after[1].command) == (
        victim.rpc_port, victim.tm_port, victim.command)  # fmt: skip
    assert after[0] == before[0].record  # the other one untouched
    assert wait_for(lambda: answers(after[1].host, after[1].rpc_port, 0.5), timeout=20)
    assert any("server 1" in line and "dead; restarted as pid" in line for line in lines)
    assert [s.state for s in cs.server_status(state_dir)] == ["healthy", "healthy"]


def test_a_hung_server_is_restarted_after_failures_checks(carla_root, state_dir):
    """Alive, port open, no answer: a TCP connect would call it healthy; the RPC check does not."""
    (status,) = start(carla_root, state_dir, 1, "-standin-hang-after=2")
    rec = status.record
    assert status.state == "healthy"
    quick_startup(state_dir)
    dog = wd.Watchdog(state_dir, wd.WatchConfig(check_timeout_s=0.3, failures=2), lambda _: None)
    assert wait_for(lambda: not answers(rec.host, rec.rpc_port, 0.3), timeout=5)
    assert port_open(rec.host, rec.rpc_port) and cs.is_running(rec)  # hung, not dead
    assert cs.server_status(state_dir, timeout_s=0.3)[0].state == "unresponsive"
    assert dog.check() == []  # one failed check: not yet
    assert dog.check() == [0]  # the second in a row: restarted
    new = _read_registry(state_dir)[0]
    assert new.pid != rec.pid and not cs.is_running(rec) and new.rpc_port == rec.rpc_port


def test_a_server_that_cannot_start_is_left_down_after_max_restarts(carla_root, state_dir):
    (status,) = start(carla_root, state_dir, 1, "-standin-exit")
    assert wait_for(lambda: cs.server_status(state_dir)[0].state == "dead")
    lines: list[str] = []
    dog = wd.Watchdog(state_dir, wd.WatchConfig(max_restarts=2), lines.append)
    restarts = []
    for _ in range(4):
        restarts += dog.check()
        wait_for(lambda: cs.server_status(state_dir)[0].state == "dead")
    assert restarts == [0, 0] and _read_registry(state_dir)[0].restarts == 2
    assert sum("left down" in line for line in lines) == 1  # said once


def test_bad_watch_options_name_them():
    for kw, option in [({"interval_s": 0}, "--interval-s"), ({"failures": 0}, "--failures"),
                       ({"max_restarts": 1.5}, "--max-restarts")]:  # fmt: skip
        with pytest.raises(ValueError, match=option):
            wd.WatchConfig(**kw)


def test_start_watch_restarts_a_killed_server_and_stop_ends_both(carla_root, state_dir, capsys):
    base = str(free_base(6))
    rc = cs.main(["start", "--count", "1", "--carla-root", str(carla_root), "--base-port", base,
                  "--state-dir", str(state_dir), "--watch", "--interval-s", "0.2",
                  "--check-timeout-s", "1", "--startup-timeout-s", "20"])  # fmt: skip
    assert rc == 0
    dog = wd.watchdog_pid(state_dir)
    assert dog is not None and f"watchdog: pid {dog}" in capsys.readouterr().out
    (victim,) = _read_registry(state_dir)
    with pytest.raises(cs.CarlaServerError, match="already running"):  # a second start...
        cs.main(["start", "--count", "1", "--carla-root", str(carla_root), "--base-port",
                 str(free_base(6)), "--state-dir", str(state_dir), "--watch"])  # fmt: skip
    assert wd.watchdog_pid(state_dir) == dog  # ...leaves the running servers' watchdog be
    assert wait_for(lambda: "watching" in (state_dir / wd.LOG).read_text(), timeout=120)
    os.killpg(victim.pid, signal.SIGKILL)
    assert wait_for(lambda: _read_registry(state_dir)[0].restarts == 1, timeout=60)
    new = _read_registry(state_dir)[0]
    assert wait_for(lambda: answers(new.host, new.rpc_port, 0.5), timeout=20)
    assert "dead; restarted as pid" in (state_dir / wd.LOG).read_text()
    assert cs.stop_servers(state_dir, grace_s=5.0) == [new.pid]
    assert wd.watchdog_pid(state_dir) is None and not cs.is_running(new)
    assert not (state_dir / wd.RECORD).exists()
