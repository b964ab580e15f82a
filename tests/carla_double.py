"""Test doubles standing in for a CARLA server (no CARLA semantics beyond what is named here).

`FakeWaypoint`: a map's waypoints, in CARLA's frame: the default stadium loop (road 1) and a
spur (road 2) leaving it 45° to the right at arc-length ``BRANCH`` and ending ``SPUR`` m later.
`fake_carla()`: a ``carla`` module whose one server keeps actors at the velocity last set with
``set_target_velocity`` (no tires, no controls), can drop out (``up = False``) or time out on
the next ``fail_ticks`` ticks, and records controls, settings and connections.
"""

import math
import types

from envs.racing import task as rt
from envs.racing.carla_sim import from_plane


class _Loc:
    def __init__(self, x=0.0, y=0.0, z=0.0):
        self.x, self.y, self.z = x, y, z


class _Rot:
    def __init__(self, pitch=0.0, yaw=0.0, roll=0.0):
        self.pitch, self.yaw, self.roll = pitch, yaw, roll


class _Tf:
    def __init__(self, location=None, rotation=None):
        self.location, self.rotation = location or _Loc(), rotation or _Rot()


class FakeWaypoint:
    TRACK = rt.Track.stadium(rt.TrackParams())
    BRANCH, SPUR = 40.0, 40.0

    def __init__(self, road, s):
        self.road_id, self.lane_id, self.s = road, -1, s
        self.lane_width, self.is_junction = 3.5, False
        if road == 1:
            (x, y), psi = self.TRACK.centre(s), float(self.TRACK.frame(s)[2])
        else:
            x0, y0 = self.TRACK.centre(self.BRANCH)
            psi = -math.pi / 4
            x, y = x0 + s * math.cos(psi), y0 + s * math.sin(psi)
        cx, cy, yaw = from_plane(float(x), float(y), psi)
        self.transform = _Tf(_Loc(cx, cy, 0.5), _Rot(yaw=yaw))

    def next(self, d):
        if self.road_id == 2:
            return [FakeWaypoint(2, self.s + d)] if self.s + d <= self.SPUR else []
        s = (self.s + d) % self.TRACK.length
        if self.s < self.BRANCH <= self.s + d:
            return [FakeWaypoint(2, self.s + d - self.BRANCH), FakeWaypoint(1, s)]
        return [FakeWaypoint(1, s)]


class _Server:
    def __init__(self):
        self.up, self.fail_ticks, self.connects, self.ticks = True, 0, 0, 0

    def check(self):
        if not self.up:
            raise RuntimeError("time-out of 200ms while waiting for the simulator")


class _Actor:
    def __init__(self, world, tf):
        self.world, self.tf, self.v, self.w, self.alive, self.controls = (
            world,
            tf,
            _Loc(),
            _Loc(),
            True,
            [],
        )

    def set_transform(self, tf):
        self.tf = tf

    def set_target_velocity(self, v):
        self.v = v

    def set_target_angular_velocity(self, w):
        self.w = w

    def apply_control(self, c):
        self.controls.append(c)

    def get_transform(self):
        return self.tf

    def get_velocity(self):
        return self.v

    def get_angular_velocity(self):
        return self.w

    def get_physics_control(self):
        wheel = lambda x, y: types.SimpleNamespace(position=_Loc(x, y), max_steer_angle=70.0)
        wheels = [wheel(140, -80), wheel(140, 80), wheel(-150, -80), wheel(-150, 80)]
        return types.SimpleNamespace(wheels=wheels, mass=1800.0)

    def destroy(self):
        self.world.server.check()
        self.alive = False


class _World:
    def __init__(self, server):
        self.server, self.actors, self.boxes = server, [], 0
        self.settings = types.SimpleNamespace(synchronous_mode=False, fixed_delta_seconds=None)
        self.debug = types.SimpleNamespace(
            draw_box=lambda *a: setattr(self, "boxes", self.boxes + 1)
        )

    def get_map(self):
        return types.SimpleNamespace(
            name="Carla/Maps/Town07", get_waypoint=lambda loc: FakeWaypoint(1, 0.0)
        )

    def get_settings(self):
        return self.settings

    def apply_settings(self, settings):
        self.server.check()
        self.settings = settings

    def get_blueprint_library(self):
        return types.SimpleNamespace(find=lambda name: name)

    def try_spawn_actor(self, blueprint, tf):
        self.actors.append(_Actor(self, tf))
        return self.actors[-1]

    def tick(self):
        self.server.check()
        if self.server.fail_ticks:
            self.server.fail_ticks -= 1
            raise RuntimeError("time-out of 200ms while waiting for the simulator")
        dt = self.settings.fixed_delta_seconds
        for a in self.actors:
            loc = a.tf.location
            a.tf = _Tf(_Loc(loc.x + dt * a.v.x, loc.y + dt * a.v.y, loc.z), a.tf.rotation)
        self.server.ticks += 1
        return self.server.ticks


def fake_carla() -> types.ModuleType:
    """A fresh ``carla`` double with one server (``module.SERVER``, world ``module.WORLD``)."""
    mod = types.ModuleType("carla")
    mod.SERVER = server = _Server()
    mod.WORLD = world = _World(server)

    class Client:
        def __init__(self, host, port):
            self.host, self.port = host, port

        def set_timeout(self, seconds):
            pass

        def get_server_version(self):
            server.check()
            server.connects += 1
            return "0.9.16"

        def get_world(self):
            return world

    mod.Client, mod.Location, mod.Vector3D, mod.Rotation, mod.Transform = (
        Client,
        _Loc,
        _Loc,
        _Rot,
        _Tf,
    )
    mod.VehicleControl = lambda **kw: types.SimpleNamespace(**kw)
    mod.Color = lambda *a: a
    mod.BoundingBox = lambda location, extent: (location, extent)
    return mod
