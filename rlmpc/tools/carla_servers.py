"""CARLA servers on one node: start k headless servers, check them, stop them by PID.

``python -m rlmpc.tools.carla_servers {start,stop,status} --help``; the cluster's worker nodes run
``start`` before ``ray start`` and advertise ``resources: {"carla": k}`` (``cluster/cluster.yaml``).
A rollout actor that reserved one unit of ``carla`` per env claims a server of its node for each
(`envs.racing.carla_servers.claim_server`: the registry and the claims live with the env).

Ports: server i listens on ``rpc_port = base_port + i * port_spacing``; CARLA also takes
``rpc_port + 1`` (streaming) and ``rpc_port + 2`` (secondary), hence ``port_spacing >= 3``.
Its traffic manager gets ``tm_port = tm_base_port + i`` (the client opens it).

State directory (``--state-dir``, else ``$RLMPC_CARLA_STATE_DIR``, else
``/tmp/rlmpc-carla/<hostname>``)::

    servers.json     registry: one record per server this tool started (PID, the PID's start
                     time, ports, command, log file, restarts)
    server-<i>.log   the server's stdout and stderr
    claim-<i>.lock   flock-ed by the process using server i; holds its PID
    .lock            serialises start / stop / restart on the node

Processes: ``CarlaUE4.sh`` runs the real binary as its child, so each server gets a session of
its own and is stopped by signalling that process group, after checking that the recorded PID
is still the process started here (its start time in ``/proc`` matches). Never by name.
A claim is an exclusive ``flock`` held until `release_server` or the claimer's exit: the kernel
drops the lock of a dead process, so stale claims are reclaimed by construction.
Linux only, as CARLA.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from envs.racing.carla_servers import (  # noqa: F401  (the node's registry and claims, shared)
    _HELD,
    ENV_STATE_DIR,
    LOOPBACK,
    REGISTRY,
    CarlaServerError,
    ServerClaim,
    ServerRecord,
    _claimer,
    _read_registry,
    _write_registry,
    claim_env_kwargs,
    claim_server,
    default_state_dir,
    is_running,
    proc_start_time,
    release_server,
)
from rlmpc.run.cliargs import add_dataclass_args, build_dataclass, flag

_PORT_MIN, _PORT_MAX = 1024, 65535


@dataclass(frozen=True)
class ServerConfig:
    """How ``start`` launches the k servers of one node."""

    count: int
    """k, servers on this node, >= 1 (the node's ``carla`` resource should say the same)"""
    carla_root: str
    """CARLA 0.9.16 install holding CarlaUE4.sh (default: $CARLA_ROOT)"""
    base_port: int = 2000
    """RPC port of server 0; CARLA also takes the next two ports"""
    port_spacing: int = 3
    """distance between the RPC ports of consecutive servers, >= 3"""
    tm_base_port: int = 8000
    """traffic-manager port of server 0; server i gets tm_base_port + i"""
    host: str = LOOPBACK
    """address the servers are checked on and handed out as"""
    gpus: tuple[int, ...] = ()
    """graphics adapters (-graphicsadapter), server i on gpus[i mod len(gpus)]; none: CARLA's choice"""
    quality_level: Literal["Low", "Epic"] = "Low"
    """CARLA's rendering quality"""
    extra_args: tuple[str, ...] = ()
    """more CarlaUE4.sh arguments (write --extra-args=-foo=1 for one that starts with '-')"""
    startup_timeout_s: float = 180.0
    """seconds a server may take to accept connections, > 0"""

    def __post_init__(self) -> None:
        def bad(name: str, rule: str, value: object) -> ValueError:
            return ValueError(f"{name} ({flag(name)}) must be {rule}, got {value!r}")

        if self.count < 1:
            raise bad("count", ">= 1", self.count)
        if self.port_spacing < 3:
            raise bad("port_spacing", ">= 3 (CARLA uses the RPC port and the next two)", self.port_spacing)  # fmt: skip
        last_rpc = self.rpc_port(self.count - 1) + 2
        if not (_PORT_MIN <= self.base_port and last_rpc <= _PORT_MAX):
            rule = f"in [{_PORT_MIN}, {_PORT_MAX}] for all {self.count} servers (the last uses up to {last_rpc})"  # fmt: skip
            raise bad("base_port", rule, self.base_port)
        last_tm = self.tm_port(self.count - 1)
        if not (_PORT_MIN <= self.tm_base_port and last_tm <= _PORT_MAX):
            rule = f"in [{_PORT_MIN}, {_PORT_MAX}] for all {self.count} servers (the last is {last_tm})"  # fmt: skip
            raise bad("tm_base_port", rule, self.tm_base_port)
        rpc = {self.rpc_port(i) + j for i in range(self.count) for j in range(3)}
        if rpc & {self.tm_port(i) for i in range(self.count)}:
            raise bad("tm_base_port", f"clear of the RPC ports {min(rpc)}..{max(rpc)}", self.tm_base_port)  # fmt: skip
        if any(g < 0 for g in self.gpus):
            raise bad("gpus", "adapter indices >= 0", self.gpus)
        if self.quality_level not in ("Low", "Epic"):
            raise bad("quality_level", "Low or Epic", self.quality_level)
        if not self.startup_timeout_s > 0:
            raise bad("startup_timeout_s", "> 0", self.startup_timeout_s)

    def rpc_port(self, i: int) -> int:
        return self.base_port + i * self.port_spacing

    def tm_port(self, i: int) -> int:
        return self.tm_base_port + i

    def command(self, i: int) -> list[str]:
        """The command line of server i."""
        script = Path(self.carla_root) / "CarlaUE4.sh"
        if not (script.is_file() and os.access(script, os.X_OK)):
            raise CarlaServerError(
                f"no executable {script}: set --carla-root or $CARLA_ROOT to a CARLA 0.9.16 install"
            )
        cmd = [str(script), "-RenderOffScreen", "-nosound", f"-carla-rpc-port={self.rpc_port(i)}"]
        cmd.append(f"-quality-level={self.quality_level}")
        if self.gpus:
            cmd.append(f"-graphicsadapter={self.gpus[i % len(self.gpus)]}")
        return cmd + list(self.extra_args)


ServerState = Literal["healthy", "unresponsive", "dead"]


class ServerStatus(NamedTuple):
    record: ServerRecord
    state: ServerState
    """healthy: running and its RPC port accepts TCP; unresponsive: running, port closed"""
    claimed_by: int | None
    """PID holding the claim, None when free"""


# ---------------------------------------------------------------- processes and ports


def port_open(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether ``host:port`` accepts a TCP connection within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


_CHILDREN: dict[int, subprocess.Popen] = {}  # servers started by this process, reaped on stop


def _check_ports_free(host: str, rpc_port: int, i: int) -> None:
    for p in range(rpc_port, rpc_port + 3):
        if port_open(host, p, timeout=0.5):
            raise CarlaServerError(f"port {p} of server {i} is in use; choose another --base-port")


def _launch(cfg: ServerConfig, i: int, state_dir: Path, restarts: int = 0) -> ServerRecord:
    cmd, log = tuple(cfg.command(i)), str(state_dir / f"server-{i}.log")
    pid, start = _spawn(cmd, log)
    return ServerRecord(
        i, pid, start, cfg.host, cfg.rpc_port(i), cfg.tm_port(i), cmd, log, restarts
    )


def _spawn(cmd: tuple[str, ...], log: str) -> tuple[int, int]:
    """Start ``cmd`` in a session of its own, output appended to ``log``; (PID, start time)."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    _CHILDREN[proc.pid] = proc
    start = proc_start_time(proc.pid)
    return proc.pid, -1 if start is None else start


def _signal_group(rec: ServerRecord, sig: int) -> None:
    """Signal the server's process group, unless its PID now belongs to another process."""
    start = proc_start_time(rec.pid)
    if start is not None and start != rec.start_time:
        return  # the PID was reused: the group is not ours
    try:  # leader alive and ours, or gone: any member left of the group is ours
        os.killpg(rec.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    for pid in os.listdir("/proc"):  # zombies still count for killpg; only live members matter
        if pid.isdigit() and proc_start_time(int(pid)) is not None:
            try:
                if os.getpgid(int(pid)) == pgid:
                    return True
            except ProcessLookupError:
                continue
    return False


def _terminate(records: list[ServerRecord], grace_s: float) -> None:
    """SIGTERM each server's group, SIGKILL what is left after ``grace_s``."""
    for rec in records:
        _signal_group(rec, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    left = list(records)
    while left and time.monotonic() < deadline:
        for proc in list(_CHILDREN.values()):
            proc.poll()
        left = [r for r in left if is_running(r) or _group_alive(r.pid)]
        time.sleep(0.05)
    for rec in left:
        _signal_group(rec, signal.SIGKILL)
    for rec in records:
        proc = _CHILDREN.pop(rec.pid, None)
        if proc is not None:
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass


# ---------------------------------------------------------------- registry


class _NodeLock:
    """Serialises start / stop / restart on one node (an flock on ``<state_dir>/.lock``)."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(state_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)

    def __enter__(self) -> _NodeLock:
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _wait_healthy(records: list[ServerRecord], timeout_s: float) -> None:
    """Poll until every running server accepts TCP, or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    waiting = list(records)
    while waiting and time.monotonic() < deadline:
        waiting = [r for r in waiting if is_running(r) and not port_open(r.host, r.rpc_port, 0.5)]
        if waiting:
            time.sleep(0.1)


# ---------------------------------------------------------------- public API


def start_servers(cfg: ServerConfig, state_dir: Path | None = None) -> list[ServerStatus]:
    """Start ``cfg.count`` servers, wait up to ``cfg.startup_timeout_s`` for them, report them."""
    state_dir = state_dir or default_state_dir()
    with _NodeLock(state_dir):
        running = [r for r in _read_registry(state_dir) if is_running(r)]
        if running:
            pids = ", ".join(str(r.pid) for r in running)
            raise CarlaServerError(f"servers already running in {state_dir} (PIDs {pids}); run `stop` first")  # fmt: skip
        for i in range(cfg.count):  # before launching any
            _check_ports_free(cfg.host, cfg.rpc_port(i), i)
        records: list[ServerRecord] = []
        try:
            for i in range(cfg.count):
                records.append(_launch(cfg, i, state_dir))
        finally:
            _write_registry(state_dir, records)  # whatever started can be stopped
        _wait_healthy(records, cfg.startup_timeout_s)
    return server_status(state_dir)


def server_status(state_dir: Path | None = None, timeout_s: float = 2.0) -> list[ServerStatus]:
    """Each registered server's state and claimer (``timeout_s`` per TCP check)."""
    state_dir = state_dir or default_state_dir()
    out = []
    for rec in _read_registry(state_dir):
        if not is_running(rec):
            state: ServerState = "dead"
        else:
            state = "healthy" if port_open(rec.host, rec.rpc_port, timeout_s) else "unresponsive"
        out.append(ServerStatus(rec, state, _claimer(state_dir, rec.index)))
    return out


def restart_unhealthy(
    state_dir: Path | None = None, timeout_s: float = 2.0, startup_timeout_s: float = 180.0
) -> list[ServerStatus]:
    """Restart every dead or unresponsive server on its own ports; report all of them."""
    state_dir = state_dir or default_state_dir()
    with _NodeLock(state_dir):
        records = _read_registry(state_dir)
        fresh = []
        for k, st in enumerate(server_status(state_dir, timeout_s)):
            if st.state == "healthy":
                continue
            old = st.record
            _terminate([old], grace_s=5.0)  # an unresponsive server, or a dead one's children
            _check_ports_free(old.host, old.rpc_port, old.index)
            pid, start = _spawn(old.command, old.log)
            records[k] = dataclasses.replace(
                old, pid=pid, start_time=start, restarts=old.restarts + 1
            )
            fresh.append(records[k])
            _write_registry(state_dir, records)
        _wait_healthy(fresh, startup_timeout_s)
    return server_status(state_dir, timeout_s)


def stop_servers(state_dir: Path | None = None, grace_s: float = 10.0) -> list[int]:
    """Stop the registered servers (their process groups); returns the PIDs that were running."""
    state_dir = state_dir or default_state_dir()
    with _NodeLock(state_dir):
        records = _read_registry(state_dir)
        running = [r.pid for r in records if is_running(r)]
        _terminate(records, grace_s)
        (state_dir / REGISTRY).unlink(missing_ok=True)
    return running


# ---------------------------------------------------------------- command line


def _format(statuses: list[ServerStatus]) -> str:
    lines = [f"{'i':>2} {'pid':>8} {'rpc':>5} {'tm':>5} {'state':<12} {'restarts':>8} claimed_by"]
    for st in statuses:
        r = st.record
        who = "-" if st.claimed_by is None else str(st.claimed_by)
        lines.append(f"{r.index:>2} {r.pid:>8} {r.rpc_port:>5} {r.tm_port:>5} {st.state:<12} {r.restarts:>8} {who}")  # fmt: skip
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog="python -m rlmpc.tools.carla_servers", formatter_class=fmt,
                                description=__doc__.split("\n\n")[0])  # fmt: skip
    sub = p.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, default=None,
                        help=f"registry and logs (default: ${ENV_STATE_DIR}, else /tmp/rlmpc-carla/<hostname>)")  # fmt: skip
    common.add_argument("--timeout", type=float, default=2.0, help="seconds per TCP health check")
    start = sub.add_parser("start", parents=[common], formatter_class=fmt,
                           help="start k servers, wait until they accept connections")  # fmt: skip
    add_dataclass_args(start, ServerConfig, "servers", defaults={"carla_root": os.environ.get("CARLA_ROOT")})  # fmt: skip
    status = sub.add_parser("status", parents=[common], formatter_class=fmt,
                            help="report the servers (exit status 1 unless all are healthy)")  # fmt: skip
    status.add_argument("--restart", action="store_true", help="first restart dead or unresponsive servers")  # fmt: skip
    status.add_argument("--startup-timeout-s", type=float, default=180.0, help="seconds a restarted server may take")  # fmt: skip
    stop = sub.add_parser("stop", parents=[common], formatter_class=fmt,
                          help="stop the servers this tool started, by their recorded PIDs")  # fmt: skip
    stop.add_argument("--grace", type=float, default=10.0, help="seconds from SIGTERM to SIGKILL")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    a = parser.parse_args(argv)
    state_dir = a.state_dir or default_state_dir()
    if a.cmd == "start":
        for name in ("count", "carla_root"):
            if getattr(a, f"ServerConfig.{name}") is None:
                parser.error(f"argument {flag(name)}: required" + (" (or set $CARLA_ROOT)" if name == "carla_root" else ""))  # fmt: skip
        try:
            cfg = build_dataclass(ServerConfig, a)
        except ValueError as e:
            parser.error(str(e))
        statuses = start_servers(cfg, state_dir)
    elif a.cmd == "status":
        statuses = (restart_unhealthy(state_dir, a.timeout, a.startup_timeout_s) if a.restart
                    else server_status(state_dir, a.timeout))  # fmt: skip
    else:
        pids = stop_servers(state_dir, a.grace)
        print(f"stopped {len(pids)} server(s) in {state_dir}" + (f": PIDs {pids}" if pids else ""))
        return 0
    if not statuses:
        print(f"no servers registered in {state_dir}")
        return 1
    print(_format(statuses))
    return 0 if all(s.state == "healthy" for s in statuses) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CarlaServerError as e:
        sys.exit(f"error: {e}")
