"""rlmpc.ops.carla_servers against a stand-in CarlaUE4.sh: real processes, ports, PIDs and claims.

The stand-in (`tests.carla_standin`) behaves like the real script where the manager can tell:
it runs the "server" as its child and waits for it, and the child answers CARLA's ``version``
RPC on ``-carla-rpc-port`` (loopback only).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from envs.racing import carla_servers as node
from envs.racing.carla_servers import CarlaServerError
from rlmpc.ops import carla_servers as cs
from rlmpc.ops.carla_servers import ServerConfig
from rlmpc.ops.processes import port_open
from tests.carla_standin import free_base, wait_for

CLAIMER = textwrap.dedent("""\
    import sys
    from envs.racing.carla_servers import claim_server
    print(claim_server(sys.argv[1]).port, flush=True)
    sys.stdin.read()  # hold the claim until the test closes stdin or kills us
""")


def config(carla_root: Path, count: int = 3, **kw) -> ServerConfig:
    kw.setdefault("base_port", free_base(3 * count + 3))
    return ServerConfig(count=count, carla_root=str(carla_root), startup_timeout_s=20.0, **kw)


@pytest.fixture
def three(carla_root: Path, state_dir: Path) -> list[cs.ServerStatus]:
    return cs.start_servers(config(carla_root, 3), state_dir)


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    "kw, option",
    [
        ({"count": 0}, "--count"),
        ({"port_spacing": 2}, "--port-spacing"),
        ({"base_port": 80}, "--base-port"),
        ({"base_port": 65531, "count": 2}, "--base-port"),  # server 1 would use 65534..65536
        ({"tm_base_port": 70000}, "--tm-base-port"),
        ({"tm_base_port": 2001}, "--tm-base-port"),  # inside server 0's RPC ports 2000..2002
        ({"gpus": (0, -1), "render": "offscreen"}, "--gpus"),
        ({"gpus": (0,)}, "--gpus"),  # -nullrhi uses no GPU
        ({"render": "vulkan"}, "--render"),
        ({"env_wait_s": -1.0}, "--env-wait-s"),
        ({"startup_timeout_s": 0.0}, "--startup-timeout-s"),
    ],
)
def test_bad_option_names_it(kw: dict, option: str) -> None:
    args = {"count": 2, "carla_root": "/nonexistent", **kw}
    with pytest.raises(ValueError, match=option):
        ServerConfig(**args)


def test_cli_rejects_bad_option(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cs.main(["start", "--count", "2", "--carla-root", "/x", "--port-spacing", "1"])
    assert exit_.value.code == 2
    assert "--port-spacing" in capsys.readouterr().err


def test_missing_carla_is_named(tmp_path: Path, state_dir: Path) -> None:
    cfg = ServerConfig(count=1, carla_root=str(tmp_path), base_port=free_base(3))
    with pytest.raises(CarlaServerError, match="--carla-root"):
        cs.start_servers(cfg, state_dir)


# ---------------------------------------------------------------- start, health, restart


def test_start_three_servers(three: list[cs.ServerStatus], state_dir: Path) -> None:
    assert [s.state for s in three] == ["healthy"] * 3
    rpc = [s.record.rpc_port for s in three]
    tm = [s.record.tm_port for s in three]
    assert all(b - a >= 3 for a, b in zip(rpc, rpc[1:], strict=False))
    assert len(set(tm)) == 3 and not set(tm) & {p + j for p in rpc for j in range(3)}
    registry = json.loads((state_dir / cs.REGISTRY).read_text())["servers"]
    assert [r["pid"] for r in registry] == [s.record.pid for s in three]
    for s in three:
        assert os.getsid(s.record.pid) == s.record.pid  # a session (process group) of its own
        assert port_open(cs.LOOPBACK, s.record.rpc_port)
        line = Path(s.record.log).read_text()
        assert "-nullrhi" in line and f"-carla-rpc-port={s.record.rpc_port}" in line
        assert "-RenderOffScreen" not in line


def test_second_start_refused_while_running(three, carla_root: Path, state_dir: Path) -> None:
    with pytest.raises(CarlaServerError, match="already running"):
        cs.start_servers(config(carla_root, 1), state_dir)


def test_port_in_use_is_refused(carla_root: Path, state_dir: Path) -> None:
    cfg = config(carla_root, 2)
    busy_port = cfg.rpc_port(1) + 1  # the streaming port of server 1
    with socket.socket() as busy:
        busy.bind((cs.LOOPBACK, busy_port))
        busy.listen()
        with pytest.raises(CarlaServerError, match=f"port {busy_port} of server 1 is in use"):
            cs.start_servers(cfg, state_dir)
    assert not port_open(cs.LOOPBACK, cfg.rpc_port(0))  # no server was started
    assert cs.server_status(state_dir) == []


def test_dead_server_reported_and_restarted(three, state_dir: Path) -> None:
    victim = three[1].record
    orphan = int(Path(victim.log).read_text().split()[0].removeprefix("child="))
    assert node.proc_start_time(orphan) is not None
    os.kill(victim.pid, signal.SIGKILL)  # the wrapper only: its child keeps the port, as orphans do
    assert wait_for(lambda: cs.server_status(state_dir)[1].state == "dead")
    states = [s.state for s in cs.server_status(state_dir)]
    assert states == ["healthy", "dead", "healthy"]
    after = cs.restart_unhealthy(state_dir, startup_timeout_s=20.0)
    assert [s.state for s in after] == ["healthy"] * 3
    assert node.proc_start_time(orphan) is None  # the dead wrapper's child went with its group
    assert after[1].record.pid != victim.pid and after[1].record.restarts == 1
    assert after[1].record.rpc_port == victim.rpc_port
    assert [after[i].record.pid for i in (0, 2)] == [three[i].record.pid for i in (0, 2)]


def test_unresponsive_server_is_reported(carla_root: Path, state_dir: Path) -> None:
    cfg = config(carla_root, 1, extra_args=("-standin-no-listen",))
    cfg = ServerConfig(**{**cfg.__dict__, "startup_timeout_s": 1.0})
    (status,) = cs.start_servers(cfg, state_dir)
    assert status.state == "unresponsive"
    assert cs.stop_servers(state_dir, grace_s=2.0) == [status.record.pid]
    assert not cs.is_running(status.record)


# ---------------------------------------------------------------- stop


def test_stop_kills_exactly_the_recorded_pids(three, carla_root: Path, state_dir: Path) -> None:
    port = free_base(3)  # an unrelated process with the same executable name
    other = subprocess.Popen([str(carla_root / "CarlaUE4.sh"), f"-carla-rpc-port={port}"],
                             stdout=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        assert wait_for(lambda: port_open(cs.LOOPBACK, port))
        stopped = cs.stop_servers(state_dir, grace_s=5.0)
        assert sorted(stopped) == sorted(s.record.pid for s in three)
        assert not any(cs.is_running(s.record) for s in three)
        assert wait_for(lambda: not any(port_open(cs.LOOPBACK, s.record.rpc_port, 0.2) for s in three))  # fmt: skip
        assert other.poll() is None and port_open(cs.LOOPBACK, port)
        assert not (state_dir / cs.REGISTRY).exists()
    finally:
        os.killpg(other.pid, signal.SIGKILL)
        other.wait(timeout=10)


def test_stop_spares_a_reused_pid(carla_root: Path, state_dir: Path) -> None:
    """A registry PID whose start time differs belongs to someone else: it is not signalled."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = node.proc_start_time(other.pid)
        assert start is not None
        fake = cs.ServerRecord(
            0, other.pid, start - 1, cs.LOOPBACK, 2000, 8000, ("x",), "/dev/null"
        )
        state_dir.mkdir(parents=True)
        cs._write_registry(state_dir, [fake])
        assert cs.stop_servers(state_dir, grace_s=0.5) == []
        assert other.poll() is None
    finally:
        other.kill()
        other.wait(timeout=10)


# ---------------------------------------------------------------- claims


def _claimer(state_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", CLAIMER, str(state_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    return proc


def test_claims_are_exclusive_across_processes(three, state_dir: Path) -> None:
    procs = [_claimer(state_dir) for _ in range(3)]  # racing for the three servers
    try:
        ports = [int(p.stdout.readline()) for p in procs]
        assert sorted(ports) == sorted(s.record.rpc_port for s in three)
        claimers = {s.record.rpc_port: s.claimed_by for s in cs.server_status(state_dir)}
        assert claimers == {port: p.pid for port, p in zip(ports, procs, strict=True)}
        with pytest.raises(CarlaServerError, match="claimed"):
            node.claim_server(state_dir)
        procs[1].kill()  # dies holding its claim: the claim is stale
        procs[1].wait(timeout=10)
        claim = node.claim_server(state_dir)
        assert claim.port == ports[1] and claim.host == cs.LOOPBACK
        assert claim.tm_port == next(s.record.tm_port for s in three if s.record.rpc_port == ports[1])  # fmt: skip
        assert cs.server_status(state_dir)[three_index(three, ports[1])].claimed_by == os.getpid()
        node.release_server(claim, state_dir)
        assert cs.server_status(state_dir)[three_index(three, ports[1])].claimed_by is None
        assert node.claim_server(state_dir).port == ports[1]  # free again
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)
        for key in [k for k in node._HELD if k[0] == str(state_dir)]:
            os.close(node._HELD.pop(key))


def three_index(three: list[cs.ServerStatus], port: int) -> int:
    return next(i for i, s in enumerate(three) if s.record.rpc_port == port)


def test_one_process_claims_several_servers_but_no_dead_one(three, state_dir: Path) -> None:
    """A rollout actor driving n envs claims n servers, one call each (what a rollout shell does)."""
    os.killpg(three[0].record.pid, signal.SIGKILL)
    assert wait_for(lambda: not cs.is_running(three[0].record))
    claims = [node.claim_server(state_dir), node.claim_server(state_dir)]
    try:
        assert [c.port for c in claims] == [three[1].record.rpc_port, three[2].record.rpc_port]
        with pytest.raises(CarlaServerError, match="all 2 running CARLA servers of 3"):
            node.claim_server(state_dir)
    finally:
        for c in claims:
            node.release_server(c, state_dir)


def test_claim_without_servers_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CarlaServerError, match="no CARLA servers on node"):
        node.claim_server(tmp_path / "empty")


# ---------------------------------------------------------------- command line


def test_cli_start_status_stop(carla_root: Path, state_dir: Path) -> None:
    base = free_base(9)
    run = lambda *a: subprocess.run([sys.executable, "-m", "rlmpc.ops.carla_servers", *a, "--state-dir", str(state_dir)],
                                    capture_output=True, text=True, timeout=60)  # fmt: skip
    started = run(
        "start", "--count", "2", "--carla-root", str(carla_root), "--base-port", str(base)
    )
    assert started.returncode == 0, started.stderr
    assert started.stdout.count("healthy") == 2
    status = run("status")  # the servers outlived the command that started them
    assert status.returncode == 0 and status.stdout.count("healthy") == 2
    stopped = run("stop")
    assert stopped.returncode == 0 and "stopped 2 server(s)" in stopped.stdout
    after = run("status")
    assert after.returncode == 1 and "no servers registered" in after.stdout


def test_carla_racing_actor_gets_one_server_per_env(three, state_dir: Path, monkeypatch) -> None:
    """What a carla-racing rollout actor hands its envs: distinct servers of its node."""
    from envs import planner_config
    from learners.policy import NetworkConfig
    from rlmpc.system.shells import node_env_kwargs
    from rlmpc.system.worker import WorkerSpec

    monkeypatch.setenv("RLMPC_CARLA_STATE_DIR", str(state_dir))
    spec = WorkerSpec("carla-racing", 2, 4, planner_config("racing"), NetworkConfig(), seed=0)
    kwargs = node_env_kwargs(spec)
    ports = {s.record.rpc_port for s in three}
    assert len(kwargs) == 2 and len({k["port"] for k in kwargs}) == 2
    assert {k["port"] for k in kwargs} <= ports and all(k["host"] == "127.0.0.1" for k in kwargs)
    # where to claim a replacement, and how long to wait for a lost server first: the node's
    # startup time (20 s here) + 60 s for the watchdog to notice
    assert all(k["servers"] == str(state_dir) for k in kwargs)
    assert all(k["client"].reconnect_wait == 80.0 for k in kwargs)
    assert node_env_kwargs(dataclasses.replace(spec, env="racing")) is None
