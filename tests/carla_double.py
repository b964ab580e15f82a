"""Test doubles standing in for a CARLA server (no CARLA semantics beyond what is named here).

`FakeWaypoint` (`tests.carla_waypoints`): a map's waypoints, in CARLA's frame: a stadium loop
and a spur leaving it.
`fake_carla()`: a ``carla`` module whose one server keeps actors at the velocity last set with
``set_target_velocity`` (no tires, no controls), can drop out (``up = False``), time out on
the next ``fail_ticks`` ticks or on every call named in ``fail_calls`` (``get_world``,
``load_world``, ``apply_settings``, ``get_trafficmanager``), has the towns in ``maps`` and
records controls, settings, connections and traffic managers. `tests.carla_standin` serves
the same world from a process of its own; this module imports nothing heavy for it (the
waypoints, which need `envs`, are `tests.carla_waypoints`, loaded on first use).
"""

import types


class _Loc:
    def __init__(self, x=0.0, y=0.0, z=0.0):
        self.x, self.y, self.z = x, y, z


class _Rot:
    def __init__(self, pitch=0.0, yaw=0.0, roll=0.0):
        self.pitch, self.yaw, self.roll = pitch, yaw, roll


class _Tf:
    def __init__(self, location=None, rotation=None):
        self.location, self.rotation = location or _Loc(), rotation or _Rot()


#: the towns of CARLA's main 0.9.16 package, and the map a fresh server has loaded
MAIN_TOWNS = ("Town01", "Town02", "Town03", "Town04", "Town05", "Town10HD", "Town10HD_Opt")
TIMEOUT = "time-out of 200ms while waiting for the simulator"


class _Server:
    def __init__(self, maps=(*MAIN_TOWNS, "Town07")):
        self.up, self.fail_ticks, self.connects, self.ticks = True, 0, 0, 0
        self.maps, self.fail_calls, self.loads = tuple(maps), set(), 0

    def check(self, call=""):
        if not self.up or call in self.fail_calls:
            raise RuntimeError(TIMEOUT)


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

    def set_autopilot(self, on, port):
        self.autopilot = (on, port)

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
    def __init__(self, server, town="Town07"):
        self.server, self.actors, self.boxes, self.town = server, [], 0, town
        self.settings = types.SimpleNamespace(
            synchronous_mode=False, fixed_delta_seconds=None, no_rendering_mode=False
        )
        self.debug = types.SimpleNamespace(
            draw_box=lambda *a: setattr(self, "boxes", self.boxes + 1)
        )

    def get_map(self):
        return types.SimpleNamespace(
            name=f"Carla/Maps/{self.town}", get_waypoint=lambda loc: __getattr__("FakeWaypoint")(1, 0.0)
        )

    def get_settings(self):
        return types.SimpleNamespace(**vars(self.settings))

    def apply_settings(self, settings):
        self.server.check("apply_settings")
        self.settings = types.SimpleNamespace(**vars(settings))

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


class _TrafficManager:
    def __init__(self, port):
        self.port, self.alive, self.sync = port, True, None

    def set_synchronous_mode(self, on):
        self.sync = on

    def shut_down(self):
        self.alive = False

    def __getattr__(self, name):  # set_desired_speed, set_path...: accepted, not simulated
        return lambda *args: None


def fake_carla(maps=(*MAIN_TOWNS, "Town07"), town="Town07") -> types.ModuleType:
    """A fresh ``carla`` double with one server (``module.SERVER``, world ``module.WORLD``)
    that has the towns ``maps`` and ``town`` loaded; ``module.TMS``: the traffic managers."""
    mod = types.ModuleType("carla")
    mod.SERVER = server = _Server(maps)
    mod.WORLD = world = _World(server, town)
    mod.TMS = tms = []

    class Client:
        def __init__(self, host, port):
            self.host, self.port = host, port

        def set_timeout(self, seconds):
            pass

        def get_server_version(self):
            server.check()
            server.connects += 1
            return "0.9.16"

        def get_available_maps(self):
            server.check()
            return [f"/Game/Carla/Maps/{m}" for m in server.maps]

        def get_world(self):
            server.check("get_world")
            return world

        def load_world(self, town):
            server.check("load_world")
            if town not in server.maps:
                raise RuntimeError(f"map '{town}' not found")
            world.town, world.actors, server.loads = town, [], server.loads + 1
            return world

        def get_trafficmanager(self, port):
            server.check("get_trafficmanager")
            tms.append(_TrafficManager(port))
            return tms[-1]

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


def __getattr__(name: str):
    """``FakeWaypoint`` from `tests.carla_waypoints`, imported when first asked for."""
    if name == "FakeWaypoint":
        from tests.carla_waypoints import FakeWaypoint  # noqa: PLC0415

        return FakeWaypoint
    raise AttributeError(name)
