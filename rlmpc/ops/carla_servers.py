"""CARLA servers on one node: start k headless servers, check them, keep them up, stop them by PID.

``python -m rlmpc.ops.carla_servers {start,stop,status,watch} --help``; the cluster's worker
nodes run ``start --watch`` before ``ray start`` and advertise ``resources: {"carla": k}``
(``cluster/cluster.yaml``). A rollout actor that reserved one unit of ``carla`` per env claims a
server of its node for each (`envs.racing.carla_servers.claim_server`: the registry and the
claims live with the env). ``watch`` (or ``start --watch``, detached) restarts servers that stop
answering (`rlmpc.ops.watchdog`).

Rendering: ``--render none`` (the default) starts each server with ``-nullrhi``, no rendering
backend at all, so a CARLA node needs no GPU and no Vulkan: CARLA 0.9.16 documents it as the
GPU-free mode of a server that runs the whole simulation (Docs/adv_multigpu.md, "primary
server"), and the env reads no sensors. ``--render offscreen`` renders (``-RenderOffScreen``)
on the GPUs of ``--gpus``, chosen with ``-ini:[/Script/Engine.RendererSettings]:r.GraphicsAdapter=N``
as CARLA documents for its secondary servers (``-graphicsadapter`` picks by Vulkan device index,
which need not match nvidia-smi's).

Ports: server i listens on ``rpc_port = base_port + i * port_spacing``; CARLA also takes
``rpc_port + 1`` (streaming) and ``rpc_port + 2`` (secondary), hence ``port_spacing >= 3``.
Its traffic manager gets ``tm_port = tm_base_port + i`` (the client opens it).

State directory (``--state-dir``, else ``$RLMPC_CARLA_STATE_DIR``, else
``/tmp/rlmpc-carla/<hostname>``)::

    servers.json     registry: one record per server this tool started (PID, the PID's start
                     time, ports, command, log file, restarts) and the node's settings for
                     its envs and watchdog (startup time, how long envs wait for a lost server)
    server-<i>.log   the server's stdout and stderr
    claim-<i>.lock   flock-ed by the process using server i; holds its PID
    watchdog.json    the detached watchdog's PID and start time; watchdog.log its events
    .lock            serialises start / stop / restart on the node

Processes (`rlmpc.ops.processes`): ``CarlaUE4.sh`` runs the real binary as its child,
so each server gets a session of its own and is stopped by signalling that process group,
after checking that the recorded PID is still the process started here (its start time in
``/proc`` matches). Never by name. Health is CARLA's own ``version`` RPC answered in time
(`rlmpc.ops.processes.answers`), not a bare TCP connect, which a hung server still
accepts. A claim is an exclusive ``flock`` held until `release_server` or the claimer's exit:
the kernel drops the lock of a dead process, so stale claims are reclaimed by construction.
Linux only, as CARLA.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

from envs.racing.carla_servers import (
    ENV_STATE_DIR,
    LOOPBACK,
    REGISTRY,
    CarlaServerError,
    NodeSettings,
    ServerRecord,
    _claimer,
    _read_registry,
    _write_registry,
    default_state_dir,
    is_running,
)
from rlmpc.ops import processes as procs
from rlmpc.ops import watchdog as watchdog
from rlmpc.ops.processes import answers
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
    render: Literal["none", "offscreen"] = "none"
    """none: -nullrhi, no GPU or Vulkan needed (the env reads no sensors); offscreen: render on a GPU"""
    gpus: tuple[int, ...] = ()
    """with --render offscreen: graphics adapters (r.GraphicsAdapter), server i on gpus[i mod len(gpus)]; none: CARLA's choice"""
    quality_level: Literal["Low", "Epic"] = "Low"
    """with --render offscreen: CARLA's rendering quality"""
    extra_args: tuple[str, ...] = ()
    """more CarlaUE4.sh arguments (write --extra-args=-foo=1 for one that starts with '-')"""
    startup_timeout_s: float = 180.0
    """seconds a server may take to answer after it was (re)started, > 0"""
    env_wait_s: float | None = None
    """seconds an env waits for its lost server before claiming another free one, >= 0; default: startup_timeout_s + 60"""

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
        if self.render not in ("none", "offscreen"):
            raise bad("render", "none or offscreen", self.render)
        if any(g < 0 for g in self.gpus):
            raise bad("gpus", "adapter indices >= 0", self.gpus)
        if self.gpus and self.render == "none":
            raise bad("gpus", "empty with --render none (-nullrhi uses no GPU)", self.gpus)
        if self.quality_level not in ("Low", "Epic"):
            raise bad("quality_level", "Low or Epic", self.quality_level)
        if not (math.isfinite(self.startup_timeout_s) and self.startup_timeout_s > 0):
            raise bad("startup_timeout_s", "> 0", self.startup_timeout_s)
        wait = self.env_wait_s
        if wait is not None and not (math.isfinite(wait) and wait >= 0):
            raise bad("env_wait_s", "a number >= 0", wait)

    @property
    def node(self) -> NodeSettings:
        """What the registry records for the node's envs and watchdog."""
        wait = self.startup_timeout_s + 60.0 if self.env_wait_s is None else self.env_wait_s
        return NodeSettings(startup_timeout_s=self.startup_timeout_s, env_wait_s=wait)

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
        cmd = [str(script), "-nosound", f"-carla-rpc-port={self.rpc_port(i)}"]
        if self.render == "none":
            cmd.insert(1, "-nullrhi")
        else:
            cmd[1:1] = ["-RenderOffScreen", f"-quality-level={self.quality_level}"]
            if self.gpus:
                adapter = self.gpus[i % len(self.gpus)]
                cmd.append(f"-ini:[/Script/Engine.RendererSettings]:r.GraphicsAdapter={adapter}")
        return cmd + list(self.extra_args)


ServerState = Literal["healthy", "unresponsive", "dead"]


class ServerStatus(NamedTuple):
    record: ServerRecord
    state: ServerState
    """healthy: running and answering CARLA's version RPC in time; unresponsive: running, not answering"""
    claimed_by: int | None
    """PID holding the claim, None when free"""


def _launch(cfg: ServerConfig, i: int, state_dir: Path, restarts: int = 0) -> ServerRecord:
    cmd, log = tuple(cfg.command(i)), str(state_dir / f"server-{i}.log")
    pid, start = procs.spawn(cmd, log)
    return ServerRecord(
        i, pid, start, cfg.host, cfg.rpc_port(i), cfg.tm_port(i), cmd, log, restarts
    )


# ---------------------------------------------------------------- public API


def start_servers(cfg: ServerConfig, state_dir: Path | None = None) -> list[ServerStatus]:
    """Start ``cfg.count`` servers, wait up to ``cfg.startup_timeout_s`` for them, report them."""
    state_dir = state_dir or default_state_dir()
    with procs.NodeLock(state_dir):
        running = [r for r in _read_registry(state_dir) if is_running(r)]
        if running:
            pids = ", ".join(str(r.pid) for r in running)
            raise CarlaServerError(f"servers already running in {state_dir} (PIDs {pids}); run `stop` first")  # fmt: skip
        for i in range(cfg.count):  # before launching any
            procs.check_ports_free(cfg.host, cfg.rpc_port(i), i)
        records: list[ServerRecord] = []
        try:
            for i in range(cfg.count):
                records.append(_launch(cfg, i, state_dir))
        finally:
            _write_registry(state_dir, records, cfg.node)  # whatever started can be stopped
        procs.wait_answering(records, cfg.startup_timeout_s)
    return server_status(state_dir)


def server_status(state_dir: Path | None = None, timeout_s: float = 2.0) -> list[ServerStatus]:
    """Each registered server's state and claimer (``timeout_s`` per TCP check)."""
    state_dir = state_dir or default_state_dir()
    out = []
    for rec in _read_registry(state_dir):
        if not is_running(rec):
            state: ServerState = "dead"
        else:
            state = "healthy" if answers(rec.host, rec.rpc_port, timeout_s) else "unresponsive"
        out.append(ServerStatus(rec, state, _claimer(state_dir, rec.index)))
    return out


def restart_unhealthy(
    state_dir: Path | None = None, timeout_s: float = 2.0, startup_timeout_s: float = 180.0
) -> list[ServerStatus]:
    """Restart every dead or unresponsive server on its own ports; report all of them."""
    state_dir = state_dir or default_state_dir()
    with procs.NodeLock(state_dir):
        records = _read_registry(state_dir)
        fresh = []
        for k, st in enumerate(server_status(state_dir, timeout_s)):
            if st.state == "healthy":
                continue
            old = st.record
            procs.terminate([old], grace_s=5.0)  # an unresponsive server, or a dead one's children
            procs.check_ports_free(old.host, old.rpc_port, old.index)
            pid, start = procs.spawn(old.command, old.log)
            records[k] = dataclasses.replace(
                old, pid=pid, start_time=start, restarts=old.restarts + 1
            )
            fresh.append(records[k])
            _write_registry(state_dir, records)
        procs.wait_answering(fresh, startup_timeout_s)
    return server_status(state_dir, timeout_s)


def stop_servers(state_dir: Path | None = None, grace_s: float = 10.0) -> list[int]:
    """Stop the node's watchdog, then the registered servers (their process groups); returns
    the PIDs of the servers that were running."""
    state_dir = state_dir or default_state_dir()
    watchdog.stop_detached(state_dir, grace_s)  # first: it would restart what is stopped
    with procs.NodeLock(state_dir):
        records = _read_registry(state_dir)
        running = [r.pid for r in records if is_running(r)]
        procs.terminate(records, grace_s)
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


def _watchdog_line(state_dir: Path) -> str:
    pid = watchdog.watchdog_pid(state_dir)
    log = state_dir / watchdog.LOG
    return f"watchdog: {'pid ' + str(pid) if pid else 'not running'} (log {log})"


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog="python -m rlmpc.ops.carla_servers", formatter_class=fmt,
                                description=__doc__.split("\n\n")[0])  # fmt: skip
    sub = p.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, default=None,
                        help=f"registry and logs (default: ${ENV_STATE_DIR}, else /tmp/rlmpc-carla/<hostname>)")  # fmt: skip
    common.add_argument("--timeout", type=float, default=2.0, help="seconds a server has to answer a status check")  # fmt: skip
    start = sub.add_parser("start", parents=[common], formatter_class=fmt,
                           help="start k servers, wait until they answer")  # fmt: skip
    add_dataclass_args(start, ServerConfig, "servers", defaults={"carla_root": os.environ.get("CARLA_ROOT")})  # fmt: skip
    start.add_argument("--watch", action="store_true",
                       help="then start the node's watchdog, detached (stopped by `stop`)")  # fmt: skip
    add_dataclass_args(start, watchdog.WatchConfig, "watchdog (with --watch)")
    status = sub.add_parser("status", parents=[common], formatter_class=fmt,
                            help="report the servers and the watchdog (exit status 1 unless all servers are healthy)")  # fmt: skip
    status.add_argument("--restart", action="store_true", help="first restart dead or unresponsive servers")  # fmt: skip
    status.add_argument("--startup-timeout-s", type=float, default=180.0, help="seconds a restarted server may take")  # fmt: skip
    watch = sub.add_parser("watch", parents=[common], formatter_class=fmt,
                           help="restart servers that stop answering, in the foreground, until the servers are stopped")  # fmt: skip
    add_dataclass_args(watch, watchdog.WatchConfig, "watchdog")
    stop = sub.add_parser("stop", parents=[common], formatter_class=fmt,
                          help="stop the watchdog, then the servers this tool started, by their recorded PIDs")  # fmt: skip
    stop.add_argument("--grace", type=float, default=10.0, help="seconds from SIGTERM to SIGKILL")
    return p


def _build(parser: argparse.ArgumentParser, cls: type, a: argparse.Namespace):
    try:
        return build_dataclass(cls, a)
    except ValueError as e:
        parser.error(str(e))


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    a = parser.parse_args(argv)
    state_dir = a.state_dir or default_state_dir()
    if a.cmd == "start":
        for name in ("count", "carla_root"):
            if getattr(a, f"ServerConfig.{name}") is None:
                parser.error(f"argument {flag(name)}: required" + (" (or set $CARLA_ROOT)" if name == "carla_root" else ""))  # fmt: skip
        cfg, watch_cfg = _build(parser, ServerConfig, a), _build(parser, watchdog.WatchConfig, a)
        if not any(is_running(r) for r in _read_registry(state_dir)):
            watchdog.stop_detached(state_dir)  # one left from servers that all died
        statuses = start_servers(cfg, state_dir)  # refuses while servers run
        if a.watch:
            watchdog.start_detached(state_dir, watch_cfg)
    elif a.cmd == "status":
        statuses = (restart_unhealthy(state_dir, a.timeout, a.startup_timeout_s) if a.restart
                    else server_status(state_dir, a.timeout))  # fmt: skip
    elif a.cmd == "watch":
        return watchdog.run_foreground(state_dir, _build(parser, watchdog.WatchConfig, a))
    else:
        pids = stop_servers(state_dir, a.grace)
        print(f"stopped {len(pids)} server(s) in {state_dir}" + (f": PIDs {pids}" if pids else ""))
        return 0
    if not statuses:
        print(f"no servers registered in {state_dir}")
        return 1
    print(_format(statuses))
    print(_watchdog_line(state_dir))
    return 0 if all(s.state == "healthy" for s in statuses) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CarlaServerError as e:
        sys.exit(f"error: {e}")
