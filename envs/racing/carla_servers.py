"""The CARLA servers of this node, as an env sees them: the node's registry, and claims on it.

``python -m rlmpc.ops.carla_servers start`` (run on a CARLA node before ``ray start``)
starts k servers and records them in ``<state dir>/servers.json``, with what the node tells
its envs (`NodeSettings`: how long a lost server is worth waiting for); this module reads that
registry and gives each CARLA env a server of its own: a claim is an exclusive ``flock`` on
``<state dir>/claim-<i>.lock``, held until `release_server` or the claimer's exit (the kernel
drops the lock of a dead process, so stale claims are reclaimed by construction). The env
registry (`envs`) hands `claim_env_kwargs` to the system, which calls it on the node an
actor runs on. State directory: ``$RLMPC_CARLA_STATE_DIR``, else ``/tmp/rlmpc-carla/<hostname>``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

ENV_STATE_DIR = "RLMPC_CARLA_STATE_DIR"
LOOPBACK = "127.0.0.1"
REGISTRY = "servers.json"


class CarlaServerError(RuntimeError):
    """No usable server on this node, or the servers cannot be started."""


@dataclass(frozen=True)
class ServerRecord:
    """One server this tool started (a row of ``servers.json``)."""

    index: int
    pid: int
    start_time: int
    """the PID's start time (clock ticks after boot, /proc/<pid>/stat): guards against PID reuse"""
    host: str
    rpc_port: int
    tm_port: int
    command: tuple[str, ...]
    log: str
    restarts: int = 0


@dataclass(frozen=True)
class NodeSettings:
    """What ``start`` records for the node's envs and its watchdog (``servers.json``'s ``node``)."""

    startup_timeout_s: float = 180.0
    """seconds a server may take to answer after it was (re)started"""
    env_wait_s: float = 300.0
    """seconds an env waits for its lost server (the watchdog restarts it) before it claims
    another free server of the node (`envs.racing.carla_client.ClientParams.reconnect_wait`)"""


class ServerClaim(NamedTuple):
    """A server of one's own: ``carla.Client(host, port)``, traffic manager on ``tm_port``."""

    host: str
    port: int
    tm_port: int


def default_state_dir() -> Path:
    env = os.environ.get(ENV_STATE_DIR)
    return Path(env) if env else Path(tempfile.gettempdir()) / "rlmpc-carla" / socket.gethostname()


def proc_start_time(pid: int) -> int | None:
    """Start time of a live process, None if there is none (or only its zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # fields from 3 (state) on
    return None if fields[0] in "ZX" else int(fields[19])


def is_running(rec: ServerRecord) -> bool:
    return proc_start_time(rec.pid) == rec.start_time


def _read_registry(state_dir: Path) -> list[ServerRecord]:
    path = state_dir / REGISTRY
    if not path.is_file():
        return []
    rows = json.loads(path.read_text())["servers"]
    return [ServerRecord(**{**row, "command": tuple(row["command"])}) for row in rows]


def read_node_settings(state_dir: Path | str | None = None) -> NodeSettings:
    """The node's `NodeSettings` from its registry (the defaults where it has none)."""
    path = Path(state_dir or default_state_dir()) / REGISTRY
    node = json.loads(path.read_text()).get("node", {}) if path.is_file() else {}
    return NodeSettings(**node)


def _write_registry(state_dir: Path, records: list[ServerRecord],
                    node: NodeSettings | None = None) -> None:  # fmt: skip
    """Write the registry (atomically); ``node`` None keeps the recorded `NodeSettings`."""
    node = node or read_node_settings(state_dir)
    tmp = state_dir / (REGISTRY + ".tmp")
    tmp.write_text(json.dumps({"servers": [dataclasses.asdict(r) for r in records],
                               "node": dataclasses.asdict(node)}, indent=1))  # fmt: skip
    os.replace(tmp, state_dir / REGISTRY)


_HELD: dict[tuple[str, int], int] = {}  # (state dir, rpc port) -> fd holding the claim's flock


def claim_server(state_dir: Path | str | None = None) -> ServerClaim:
    """Claim a running server on this node for the calling process, exclusively.

    The claim lasts until `release_server` or this process's exit. Raises `CarlaServerError`
    when the node runs no servers or every running one is claimed.
    """
    state_dir = Path(state_dir) if state_dir else default_state_dir()
    records = _read_registry(state_dir)
    if not records:
        raise CarlaServerError(
            f"no CARLA servers on node {socket.gethostname()}: {state_dir / REGISTRY} lists none; "
            "start them with `python -m rlmpc.ops.carla_servers start --count K` (cluster.yaml's "
            "worker_start_ray_commands do) and give the node the resource {'carla': K}"
        )
    running = [r for r in records if is_running(r)]
    for rec in running:
        fd = os.open(state_dir / f"claim-{rec.index}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD[(str(state_dir), rec.rpc_port)] = fd
        return ServerClaim(rec.host, rec.rpc_port, rec.tm_port)
    raise CarlaServerError(
        f"all {len(running)} running CARLA servers of {len(records)} on {socket.gethostname()} "
        f"are claimed; request the 'carla' resource so Ray places at most one claimer per server"
    )


def claim_env_kwargs(n: int) -> list[dict[str, object]]:
    """Constructor arguments of ``n`` CARLA envs on this node: a claimed server each, the
    registry to claim a replacement from, and how long to wait for a lost server first."""
    from envs.racing.carla_client import ClientParams  # noqa: PLC0415

    state_dir = default_state_dir()
    client = ClientParams(reconnect_wait=read_node_settings(state_dir).env_wait_s)
    claims = [claim_server(state_dir) for _ in range(n)]
    return [{"host": c.host, "port": c.port, "tm_port": c.tm_port, "servers": str(state_dir),
             "client": client} for c in claims]  # fmt: skip


def release_server(claim: ServerClaim, state_dir: Path | str | None = None) -> None:
    """Give back a claim made by this process (no-op if it holds none for that server)."""
    state_dir = Path(state_dir) if state_dir else default_state_dir()
    fd = _HELD.pop((str(state_dir), claim.port), None)
    if fd is not None:
        os.ftruncate(fd, 0)
        os.close(fd)  # closing drops the flock


def _claimer(state_dir: Path, index: int) -> int | None:
    path = state_dir / f"claim-{index}.lock"
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # nobody holds it
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)
