"""The processes under `rlmpc.ops.carla_servers`: starting them, asking them, stopping them.

* `answers`: whether a CARLA server answers an RPC in time. It sends CARLA's own ``version``
  call as a msgpack-rpc request (``[0, id, "version", []]``), the protocol of the rpclib
  server CARLA runs; CARLA binds ``version`` asynchronously (``BIND_ASYNC`` in
  ``CarlaServer.cpp``), so it is answered on the RPC threads even while the game thread loads
  a map. A process that still accepts TCP but no longer answers (hung) fails it, where a bare
  TCP connect would not: the kernel accepts for a listening socket whatever its process does.
* `spawn`: a command in a session (process group) of its own, output appended to a log.
* `terminate`: SIGTERM to each group, SIGKILL to what is left after a grace period; a group is
  signalled only while its leader's PID still has the start time recorded when it was
  started (``/proc/<pid>/stat``), so a reused PID is never signalled. Never by name.
* `NodeLock`: serialises start / stop / restart on one node (an ``flock``).
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import msgpack

from envs.racing.carla_servers import ServerRecord, is_running, proc_start_time

_CHILDREN: dict[int, subprocess.Popen] = {}  # processes started by this process, reaped on stop


def port_open(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether ``host:port`` accepts a TCP connection within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether the CARLA server at ``host:port`` answers its ``version`` RPC within ``timeout``
    seconds (module docstring). Any well-formed reply counts, an error reply too."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(msgpack.packb([0, 1, "version", []], use_bin_type=True))
            unpacker = msgpack.Unpacker(raw=False)
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                data = sock.recv(4096)
                if not data:
                    return False
                unpacker.feed(data)
                for reply in unpacker:
                    return (
                        isinstance(reply, (list, tuple)) and len(reply) == 4 and reply[:2] == [1, 1]
                    )
    except (OSError, ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return False
    return False


def check_ports_free(host: str, rpc_port: int, i: int) -> None:
    """`CarlaServerError` if server ``i``'s ports (RPC, streaming, secondary) are in use."""
    from envs.racing.carla_servers import CarlaServerError  # noqa: PLC0415

    for p in range(rpc_port, rpc_port + 3):
        if port_open(host, p, timeout=0.5):
            raise CarlaServerError(f"port {p} of server {i} is in use; choose another --base-port")


def spawn(cmd: tuple[str, ...], log: str) -> tuple[int, int]:
    """Start ``cmd`` in a session of its own, output appended to ``log``; (PID, start time)."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    _CHILDREN[proc.pid] = proc
    start = proc_start_time(proc.pid)
    return proc.pid, -1 if start is None else start


def signal_group(pid: int, start_time: int, sig: int) -> None:
    """Signal the process group of ``pid``, unless that PID now belongs to another process."""
    start = proc_start_time(pid)
    if start is not None and start != start_time:
        return  # the PID was reused: the group is not ours
    try:  # leader alive and ours, or gone: any member left of the group is ours
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is left in process group ``pgid``."""
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


def reap() -> None:
    """Collect the exit status of children that ended (so they leave no zombie)."""
    for proc in list(_CHILDREN.values()):
        proc.poll()


def terminate(records: list[ServerRecord], grace_s: float) -> None:
    """SIGTERM each server's group, SIGKILL what is left after ``grace_s``."""
    for rec in records:
        signal_group(rec.pid, rec.start_time, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    left = list(records)
    while left and time.monotonic() < deadline:
        reap()
        left = [r for r in left if is_running(r) or group_alive(r.pid)]
        time.sleep(0.05)
    for rec in left:
        signal_group(rec.pid, rec.start_time, signal.SIGKILL)
    for rec in records:
        proc = _CHILDREN.pop(rec.pid, None)
        if proc is not None:
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass


def wait_answering(records: list[ServerRecord], timeout_s: float, check_s: float = 0.5) -> None:
    """Poll until every running server answers, or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    waiting = list(records)
    while waiting and time.monotonic() < deadline:
        waiting = [r for r in waiting if is_running(r) and not answers(r.host, r.rpc_port, check_s)]
        if waiting:
            time.sleep(0.1)


class NodeLock:
    """Serialises start / stop / restart on one node (an flock on ``<state_dir>/.lock``)."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(state_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)

    def __enter__(self) -> NodeLock:
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
