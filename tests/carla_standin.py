"""A stand-in CARLA server process, and a ``carla`` client that talks to it (test doubles).

**Server** (``python tests/carla_standin.py -carla-rpc-port=N ...``, what the tests' stand-in
``CarlaUE4.sh`` runs): like CARLA's launcher, it runs the server as its child and waits for it
(the child prints ``child=<pid>`` and its arguments first). The child listens on
``127.0.0.1:N`` and answers msgpack-rpc requests ``[0, id, method, params]`` with ``[1, id,
error, result]``, as CARLA's rpclib server does: ``version`` answers ``0.9.16`` (what
`rlmpc.ops.carla_servers` probes); the other methods serve one `tests.carla_double` world
(map, settings, actors, ticks). A fresh server has Town10HD_Opt loaded, as CARLA.
Arguments of its own: ``-standin-maps=Town01,Town07`` (the towns it has; default CARLA's
main package and Town07), ``-standin-no-listen`` (never listens), ``-standin-hang-after=K``
(stops answering after K requests, the port still open: a hung server), ``-standin-exit``
(exits at once, status 3: a server that cannot start).

**Client**: `install_client` fills a namespace with ``Client``, ``Location``... whose calls go
to such a server; a server that refuses, drops the connection or does not answer within the
client's timeout gives the real client's ``RuntimeError``. ``tests/standin_client/carla`` is
that namespace under the real package's name, for processes (Ray workers) whose PYTHONPATH
puts that folder first.
"""

from __future__ import annotations

import itertools
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script, too

from tests import carla_double as cd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def free_base(span: int) -> int:
    """A random base port with ``span`` free ports from it (loopback)."""
    import random  # noqa: PLC0415

    rng = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(200):
        base = rng.randrange(20000, 60000 - span)
        ok = True
        for port in range(base, base + span):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range")


def wait_for(pred, timeout: float = 10.0) -> bool:
    """Poll ``pred`` until it holds or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def write_launcher(carla_root: Path) -> Path:
    """A ``CarlaUE4.sh`` in ``carla_root`` that starts this stand-in (the tests' CARLA root)."""
    carla_root.mkdir(parents=True, exist_ok=True)
    script = carla_root / "CarlaUE4.sh"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} {REPO / 'tests' / 'carla_standin.py'} \"$@\"\n")
    script.chmod(0o755)
    return script


# ------------------------------------------------------------------------------- server


class _World:
    """The served world: a `tests.carla_double` server with actors by id."""

    def __init__(self, maps: tuple[str, ...]) -> None:
        self.mod = cd.fake_carla(maps=maps, town="Town10HD_Opt")
        self.actors: dict[int, object] = {}
        self.ids = itertools.count(1)

    def actor(self, i: int):
        if i not in self.actors or not self.actors[i].alive:
            raise RuntimeError(f"actor {i} not found (the world was reloaded or restarted)")
        return self.actors[i]

    def call(self, method: str, args: list):
        m, world = self.mod, self.mod.WORLD
        if method == "version":
            return "0.9.16"
        if method == "get_available_maps":
            return [f"/Game/Carla/Maps/{t}" for t in m.SERVER.maps]
        if method == "map_name":
            return world.get_map().name
        if method == "load_world":
            m.Client("", 0).load_world(args[0])
            self.actors.clear()
            return world.get_map().name
        if method == "get_settings":
            return vars(world.get_settings())
        if method == "apply_settings":
            return world.apply_settings(types.SimpleNamespace(**args[0]))
        if method == "spawn":
            a = world.try_spawn_actor(args[0], _tf(args[1]))
            i = next(self.ids)
            self.actors[i] = a
            return i
        if method == "tick":
            return world.tick()
        if method == "draw_box":
            world.debug.draw_box()
            return world.boxes
        if method == "actor":
            return self._actor_call(self.actor(args[0]), args[1], args[2:])
        raise RuntimeError(f"unknown method {method}")

    def _actor_call(self, a, method: str, args: list):
        if method == "set_transform":
            return a.set_transform(_tf(args[0]))
        if method in ("set_target_velocity", "set_target_angular_velocity"):
            return getattr(a, method)(cd._Loc(*args[0]))
        if method == "apply_control":
            return a.apply_control(types.SimpleNamespace(**args[0]))
        if method == "state":
            tf, v, w = a.get_transform(), a.get_velocity(), a.get_angular_velocity()
            return [_tf_list(tf), [v.x, v.y, v.z], [w.x, w.y, w.z]]
        if method == "physics":
            return [[w.position.x, w.position.y, w.max_steer_angle]
                    for w in a.get_physics_control().wheels]  # fmt: skip
        if method == "destroy":
            return a.destroy()
        raise RuntimeError(f"unknown actor method {method}")


def _tf(v: list) -> cd._Tf:
    return cd._Tf(cd._Loc(*v[:3]), cd._Rot(*v[3:6]))


def _tf_list(tf) -> list[float]:
    loc, rot = tf.location, tf.rotation
    return [loc.x, loc.y, loc.z, rot.pitch, rot.yaw, rot.roll]


def serve(port: int, maps: tuple[str, ...], hang_after: int | None) -> None:
    world, lock, served = _World(maps), threading.Lock(), itertools.count(1)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            unpacker = msgpack.Unpacker(raw=False)
            while True:
                data = self.request.recv(65536)
                if not data:
                    return
                unpacker.feed(data)
                for _, msgid, method, params in unpacker:
                    if hang_after is not None and next(served) > hang_after:
                        time.sleep(3600)  # hung: the connection stays open, no answer
                    try:
                        with lock:
                            reply = [1, msgid, None, world.call(method, list(params))]
                    except Exception as err:  # the client raises it as RuntimeError
                        reply = [1, msgid, str(err), None]
                    self.request.sendall(msgpack.packb(reply, use_bin_type=True))

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    with socketserver.ThreadingTCPServer(("127.0.0.1", port), Handler) as server:
        server.serve_forever()


def main(argv: list[str]) -> int:
    if argv[:1] != ["--child"]:  # the launcher: the server is its child, as CarlaUE4.sh's
        return subprocess.call([sys.executable, __file__, "--child", *argv])
    args = argv[1:]
    print(f"child={os.getpid()}", *args, flush=True)
    opt = lambda name: next((a.split("=", 1)[1] for a in args if a.startswith(name + "=")), None)
    port = int(opt("-carla-rpc-port"))
    if "-standin-exit" in args:
        return 3
    if "-standin-no-listen" in args:
        time.sleep(300)
        return 0
    maps = tuple((opt("-standin-maps") or ",".join((*cd.MAIN_TOWNS, "Town07"))).split(","))
    hang = opt("-standin-hang-after")
    serve(port, maps, None if hang is None else int(hang))
    return 0


# ------------------------------------------------------------------------------- client


class _Rpc:
    """One connection to a stand-in server; failures are the real client's RuntimeError."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port, self.timeout, self.sock = host, port, 2.0, None
        self.ids = itertools.count()

    def _fail(self, why: str) -> RuntimeError:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        return RuntimeError(
            f"time-out of {int(self.timeout * 1000)}ms while waiting for the simulator, make sure "
            f"the simulator is ready and connected to {self.host}:{self.port} ({why})"
        )

    def __call__(self, method: str, *params):
        msgid = next(self.ids)
        try:
            if self.sock is None:
                self.sock = socket.create_connection((self.host, self.port), self.timeout)
            self.sock.settimeout(self.timeout)
            self.sock.sendall(msgpack.packb([0, msgid, method, list(params)], use_bin_type=True))
            unpacker = msgpack.Unpacker(raw=False)
            while True:
                data = self.sock.recv(65536)
                if not data:
                    raise self._fail("connection closed")
                unpacker.feed(data)
                for _, rid, error, result in unpacker:
                    if rid == msgid:
                        if error is not None:
                            raise RuntimeError(error)
                        return result
        except OSError as err:
            raise self._fail(type(err).__name__) from None


def install_client(ns: dict) -> None:
    """Fill ``ns`` (a module's globals) with the stand-in ``carla`` client (module docstring)."""

    class Actor:
        def __init__(self, rpc: _Rpc, i: int) -> None:
            self._rpc, self.id = rpc, i

        def _call(self, method: str, *args):
            return self._rpc("actor", self.id, method, *args)

        def set_transform(self, tf):
            self._call("set_transform", _tf_list(tf))

        def set_target_velocity(self, v):
            self._call("set_target_velocity", [v.x, v.y, v.z])

        def set_target_angular_velocity(self, v):
            self._call("set_target_angular_velocity", [v.x, v.y, v.z])

        def apply_control(self, c):
            self._call("apply_control", dict(vars(c)))

        def _state(self):
            tf, v, w = self._call("state")
            return _tf(tf), cd._Loc(*v), cd._Loc(*w)

        def get_transform(self):
            return self._state()[0]

        def get_velocity(self):
            return self._state()[1]

        def get_angular_velocity(self):
            return self._state()[2]

        def get_physics_control(self):
            wheel = lambda x, y, a: types.SimpleNamespace(position=cd._Loc(x, y), max_steer_angle=a)
            return types.SimpleNamespace(wheels=[wheel(*w) for w in self._call("physics")])

        def destroy(self):
            self._call("destroy")

    class World:
        def __init__(self, rpc: _Rpc) -> None:
            self._rpc = rpc
            self.debug = types.SimpleNamespace(draw_box=lambda *a: rpc("draw_box"))

        def get_map(self):
            return types.SimpleNamespace(name=self._rpc("map_name"),
                                         get_waypoint=lambda loc: cd.FakeWaypoint(1, 0.0))  # fmt: skip

        def get_settings(self):
            return types.SimpleNamespace(**self._rpc("get_settings"))

        def apply_settings(self, settings):
            self._rpc("apply_settings", dict(vars(settings)))

        def get_blueprint_library(self):
            return types.SimpleNamespace(find=lambda name: name)

        def try_spawn_actor(self, blueprint, tf):
            return Actor(self._rpc, self._rpc("spawn", blueprint, _tf_list(tf)))

        def tick(self):
            return self._rpc("tick")

    class Client:
        def __init__(self, host: str, port: int) -> None:
            self._rpc = _Rpc(host, port)

        def set_timeout(self, seconds: float) -> None:
            self._rpc.timeout = float(seconds)

        def get_server_version(self) -> str:
            return self._rpc("version")

        def get_available_maps(self) -> list[str]:
            return self._rpc("get_available_maps")

        def get_world(self):
            return World(self._rpc)

        def load_world(self, town: str):
            self._rpc("load_world", town)
            return World(self._rpc)

    ns.update(Client=Client, Location=cd._Loc, Vector3D=cd._Loc, Rotation=cd._Rot,
              Transform=cd._Tf, Color=lambda *a: a, BoundingBox=lambda location, extent: None,
              VehicleControl=lambda **kw: types.SimpleNamespace(**kw))  # fmt: skip


def client_module() -> types.ModuleType:
    """The stand-in client as a fresh ``carla`` module (for ``sys.modules`` in a test)."""
    mod = types.ModuleType("carla")
    install_client(vars(mod))
    return mod


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
