"""CARLA behind the racing env's `envs.racing.env.VehicleSim` interface: the vehicles on a server.

`CarlaSim` implements the interface on a CARLA 0.9.16 server in synchronous mode (one
``world.tick()`` of ``fixed_delta_seconds = dt`` per env step), with rendering off
(``no_rendering_mode``: the env reads no sensors); `envs.racing.bicycle.BicycleSim`
implements it with the embedded dynamic bicycle. The client layer (connecting, the map
check, the errors) is `envs.racing.carla_client`; the route (the `Track` built from the
map) is `envs.racing.carla_route`.

A lost server (`CarlaSim.reconnect`): the old cars are dropped, the server is waited for up to
``ClientParams.reconnect_wait`` seconds (its node's watchdog restarts it on the same ports,
`rlmpc.ops.watchdog`), then, if the env was given its node's server registry
(``servers``), another free server of the node is claimed; `CarlaUnavailable` if neither
answers. A sim given a registry connects the same way when it is built (a rollout actor that
Ray restarts may find its server restarting too); one without connects once (``attempts``).

Traffic managers: LibCarla keeps one traffic manager per port per client process, and every
``world.tick()`` of the process ticks all of them
(``carla::traffic_manager::TrafficManager::Tick`` from ``Simulator::Tick``). So a reconnect
shuts the old one down first (else ``get_trafficmanager(port)`` hands back the dead server's),
and ``opponent_driver="traffic_manager"`` is refused for a second env in one process (its
ticks would step the first env's opponent).

Frames: CARLA's world is left-handed (x forward, y right, yaw in degrees, clockwise seen from
above; steer > 0 turns right); the task's plane is right-handed (``y`` to the left, ``ψ`` in
radians counter-clockwise). `to_plane` / `from_plane` flip ``y`` and the yaw; nothing else in the
project sees CARLA coordinates.

The ``carla`` module is imported when a `CarlaSim` is built (or `connect` called without a
factory), so ``import envs`` works without it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any, ClassVar

import numpy as np

from envs.danger import DangerZone
from envs.racing import task as rt
from envs.racing.carla_client import (
    CarlaUnavailable,
    ClientParams,
    connect,
    require_map,
)
from envs.racing.carla_route import RouteSpec, route_track
from envs.racing.task import SimStep

log = logging.getLogger(__name__)


def to_plane(x: float, y: float, yaw_deg: float) -> tuple[float, float, float]:
    """CARLA world (x, y, yaw °) -> task plane (x, y, ψ rad)."""
    return x, -y, -math.radians(yaw_deg)


def from_plane(x: float, y: float, psi: float) -> tuple[float, float, float]:
    """Task plane (x, y, ψ rad) -> CARLA world (x, y, yaw °)."""
    return x, -y, -math.degrees(psi)


def plane_state(
    x: float, y: float, yaw_deg: float, vx: float, vy: float, yaw_rate_deg: float
) -> rt.VehicleState:
    """A `VehicleState` from CARLA's transform, world velocity (m/s) and yaw rate (°/s)."""
    px, py, psi = to_plane(x, y, yaw_deg)
    wx, wy, c, s = vx, -vy, math.cos(psi), math.sin(psi)
    return rt.VehicleState(
        px, py, psi, c * wx + s * wy, -s * wx + c * wy, -math.radians(yaw_rate_deg)
    )


def carla_control(u: np.ndarray) -> tuple[float, float, float]:
    """The env action ``[steer, throttle] ∈ [-1, 1]²`` (steer > 0 left) as CARLA's
    ``(throttle, steer, brake)`` (steer > 0 right; a negative throttle brakes)."""
    steer, throttle = float(u[0]), float(u[1])
    return max(throttle, 0.0), 0.0 - steer, max(0.0 - throttle, 0.0)


def pursuit_control(
    track: rt.Track,
    car: rt.VehicleState,
    speed: float,
    wheelbase: float,
    max_steer: float,
    gain: float = 0.5,
    line: rt.OpponentLine | None = None,
) -> np.ndarray:
    """The opponent's driver: pure pursuit of its line (None: the centreline) at ``speed``, as
    an env action.

    Aims at the line's point ``max(8 m, 1 s · v)`` ahead of the car's projection, with the
    bicycle's steering ``δ = atan(2 L sin α / l_d)`` scaled by ``max_steer`` (rad at
    ``|steer| = 1``); throttle (braking below 0) ``gain · (speed - vx)``, clipped to ±1.
    """
    s, _ = track.project((car.x, car.y))
    ahead = s + max(8.0, car.vx)
    target = track.centre(ahead) if line is None else track.to_xy(ahead, line.ey(ahead))
    dx, dy = target[0] - car.x, target[1] - car.y
    alpha = rt.wrap_angle(math.atan2(dy, dx) - car.psi)
    delta = math.atan2(2.0 * wheelbase * math.sin(alpha), math.hypot(dx, dy))
    steer = float(np.clip(delta / max_steer, -1.0, 1.0))
    return np.array([steer, float(np.clip(gain * (speed - car.vx), -1.0, 1.0))])


class CarlaSim:
    """`VehicleSim` on a CARLA server: synchronous mode, ego + one opponent on the route.

    The opponent follows the episode's line (`rt.OpponentLine`; the centreline without one) at
    its speed profile (`rt.OpponentSpeed`: the episode's opponent speed at most, slower where a
    corner needs it), driven by `pursuit_control` (``opponent_driver="pursuit"``) or by
    CARLA's traffic manager on ``tm_port`` (``"traffic_manager"``: along the line's points,
    desired speed set).
    Both cars are spawned at construction (their physics gives the planner's `CarParams`) and
    teleported on every reset; the danger zone is drawn with ``world.debug`` for ``zone_life`` s.
    One `CarlaSim` per server: it owns the server's clock (every `step` ticks the world).
    ``opponent``: the opponent's (lateral, longitudinal) acceleration limits (m/s²; default
    the default task's); ``rendering``: let the server render (only to watch it; off, it
    needs no GPU work); ``servers``: the node's server registry the env's server was claimed
    from (`envs.racing.carla_servers`), for a replacement when it does not come back.
    """

    #: ids of the live sims in this process whose opponent the traffic manager drives
    _tm_sims: ClassVar[set[int]] = set()

    def __init__(
        self,
        host: str,
        port: int,
        town: str,
        route: RouteSpec,
        dt: float,
        client: ClientParams,
        tm_port: int = 8000,
        vehicle: str = "vehicle.tesla.model3",
        opponent_vehicle: str = "vehicle.audi.tt",
        opponent_driver: str = "pursuit",
        zone_life: float = 60.0,
        opponent: tuple[float, float] | None = None,
        rendering: bool = False,
        servers: str | None = None,
    ) -> None:
        import carla  # noqa: PLC0415  (optional dependency)

        if opponent_driver == "traffic_manager" and CarlaSim._tm_sims:
            raise ValueError(
                "opponent_driver='traffic_manager' allows one CARLA env per process: LibCarla "
                "ticks every traffic manager of a process on each world.tick(), so this env's "
                "ticks would step the other env's opponent; use opponent_driver='pursuit' or "
                "one env per rollout actor (--envs-per-actor 1)"
            )
        self._carla, self.host, self.port, self.town, self.dt = carla, host, port, town, dt
        self.params, self.tm_port, self.zone_life = client, tm_port, zone_life
        self.blueprints, self.opponent_driver = (vehicle, opponent_vehicle), opponent_driver
        self.rendering, self.servers = rendering, servers
        self.ego = self.opponent = self.tm = None
        if opponent_driver == "traffic_manager":
            CarlaSim._tm_sims.add(id(self))
        try:
            if servers is None:  # a server of one's own: it answers, or CarlaUnavailable
                self._connect()
            else:  # claimed from a node's registry: a restarting server is waited for
                self._await_server()
            self.track, self._z = route_track(self.world.get_map(), route)
            task = rt.TaskParams()
            limits = opponent or (task.opponent_lateral_accel, task.opponent_long_accel)
            self.opponent_speed = rt.OpponentSpeed(self.track, *limits)
            self._opp_s, self._opp_top, self._line = 0.0, 0.0, None
            self._park()
            self.wheelbase, self.max_steer = self._geometry(self.ego)
            self._opp_geometry = self._geometry(self.opponent)
        except BaseException:
            self.close()  # never leave the server waiting for our ticks
            raise

    def _park(self) -> None:
        """Spawn (or move) both cars to the start, at rest, the opponent a quarter lap ahead."""
        start = rt.VehicleState(*self.track.points[0], float(self.track.heading[0]), 0.0, 0.0, 0.0)
        self.reset(start, 0.25 * self.track.length, 0.0, None)

    def _connect(self, params: ClientParams | None = None) -> None:
        """Connect; check the server has the town (`CarlaMapMissing`), load it if another is
        loaded, switch to synchronous mode without rendering. A call that times out after
        the server answered raises `CarlaUnavailable` naming the call."""
        params = params or self.params
        self.client = connect(self.host, self.port, params)
        call = "get_available_maps"
        try:
            require_map(self.client, self.town, self.host, self.port)
            call = "get_world"
            world = self.client.get_world()
            if world.get_map().name.split("/")[-1] != self.town:
                call = "load_world"
                self.client.set_timeout(max(params.timeout, 120.0))  # loading takes a while
                world = self.client.load_world(self.town)
                self.client.set_timeout(params.timeout)
            call = "apply_settings"
            settings = world.get_settings()
            settings.synchronous_mode, settings.fixed_delta_seconds = True, self.dt
            settings.substepping, settings.max_substeps = True, 16
            settings.max_substep_delta_time = max(0.01, self.dt / 16)
            settings.no_rendering_mode = not self.rendering
            world.apply_settings(settings)
            if self.opponent_driver == "traffic_manager":
                call = "get_trafficmanager"
                self.tm = self.client.get_trafficmanager(self.tm_port)
                self.tm.set_synchronous_mode(True)
        except RuntimeError as err:
            raise CarlaUnavailable(self.host, self.port, params.attempts, f"{call}: {err}") from err
        self.world = world

    def _geometry(self, actor: Any) -> tuple[float, float]:
        """(wheelbase m, road-wheel angle at |steer| = 1 rad) of a spawned vehicle."""
        phys = actor.get_physics_control()
        w = phys.wheels  # front left, front right, rear left, rear right; positions in cm
        mid = lambda a, b: ((a.position.x + b.position.x) / 2, (a.position.y + b.position.y) / 2)
        wheelbase = math.dist(mid(w[0], w[1]), mid(w[2], w[3])) / 100.0
        wheelbase = wheelbase if 1.5 <= wheelbase <= 5.0 else 2.9
        return wheelbase, min(math.radians(w[0].max_steer_angle), 1.5)

    def _transform(self, s: float, x: float, y: float, psi: float) -> Any:
        carla = self._carla
        cx, cy, yaw = from_plane(x, y, psi)
        z = float(np.interp(s % self.track.length, self.track.s[:-1], self._z)) + 0.3
        return carla.Transform(carla.Location(x=cx, y=cy, z=z), carla.Rotation(yaw=yaw))

    def _place(
        self, actor: Any, blueprint: str, s: float, car: rt.VehicleState, speed: float
    ) -> Any:
        """Spawn (or teleport) a vehicle at ``car``'s pose moving forward at ``speed``."""
        carla, tf = self._carla, self._transform(s, car.x, car.y, car.psi)
        if actor is None:
            actor = self.world.try_spawn_actor(
                self.world.get_blueprint_library().find(blueprint), tf
            )
            if actor is None:
                raise ValueError(
                    f"CARLA could not spawn {blueprint} at {tf}: something is in the way"
                )
        else:
            actor.set_transform(tf)
        c, sn = math.cos(car.psi), math.sin(car.psi)
        actor.set_target_velocity(carla.Vector3D(x=speed * c, y=-speed * sn, z=0.0))
        actor.set_target_angular_velocity(carla.Vector3D(x=0.0, y=0.0, z=0.0))
        actor.apply_control(carla.VehicleControl(throttle=0.0, steer=0.0, brake=0.0))
        return actor

    def reset(
        self, ego: rt.VehicleState, opp_s: float, opp_v: float, zone: DangerZone | None,
        line: rt.OpponentLine | None = None,
    ) -> SimStep:  # fmt: skip
        """``opp_v``: the opponent's top speed; it starts at its profile's speed at ``opp_s``,
        on ``line`` (None: the centreline)."""
        tr = self.track
        s_ego = float(tr.project((ego.x, ego.y))[0])
        self.ego = self._place(self.ego, self.blueprints[0], s_ego, ego, ego.vx)
        v0 = self.opponent_speed(opp_s, opp_v)
        opp = rt.opponent_pose(tr, opp_s, v0, line)._replace(r=0.0)
        self.opponent = self._place(self.opponent, self.blueprints[1], opp_s, opp, opp.vx)
        self._opp_s, self._opp_top, self._line = opp_s, opp_v, line
        if self.tm is not None:
            self._drive_by_traffic_manager(opp_s, opp_v)
        if zone is not None:
            self._draw_zone(zone)
        self.world.tick()
        return self._read()

    def _drive_by_traffic_manager(self, opp_s: float, opp_v: float) -> None:
        tm, tr = self.tm, self.track
        self.opponent.set_autopilot(True, self.tm_port)
        tm.set_desired_speed(self.opponent, 3.6 * opp_v)  # km/h
        tm.ignore_lights_percentage(self.opponent, 100.0)
        tm.ignore_signs_percentage(self.opponent, 100.0)
        tm.auto_lane_change(self.opponent, False)
        ahead = opp_s + np.arange(10.0, tr.length, 10.0)
        line = self._line
        points = tr.centre(ahead) if line is None else tr.to_xy(ahead, line.ey(ahead))
        tm.set_path(self.opponent, [self._transform(s, *p, 0.0).location
                                    for s, p in zip(ahead, points, strict=True)])  # fmt: skip

    def _draw_zone(self, zone: DangerZone) -> None:
        carla = self._carla
        s, _ = self.track.project((zone.cx, zone.cy))
        z = float(np.interp(s, self.track.s[:-1], self._z)) + 0.2
        box = carla.BoundingBox(
            carla.Location(x=zone.cx, y=-zone.cy, z=z),
            carla.Vector3D(x=zone.w / 2, y=zone.h / 2, z=0.2),
        )
        self.world.debug.draw_box(
            box, carla.Rotation(), 0.15, carla.Color(255, 0, 0), self.zone_life
        )

    def get_state(self) -> None:
        """None: a CARLA world cannot be captured as plain data (`envs.base.EnvState`); a
        restored racing env on a server restarts its episode."""
        return None

    def set_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError("a CARLA world cannot be set from plain data")

    def step(self, u: np.ndarray) -> SimStep:
        carla = self._carla
        throttle, steer, brake = carla_control(u)
        self.ego.apply_control(carla.VehicleControl(throttle=throttle, steer=steer, brake=brake))
        if self.tm is None:
            opp = self._state(self.opponent)
            wheelbase, max_steer = self._opp_geometry
            speed = self.opponent_speed(self._opp_s, self._opp_top)
            a = pursuit_control(self.track, opp, speed, wheelbase, max_steer, line=self._line)
            throttle, steer, brake = carla_control(a)
            self.opponent.apply_control(
                carla.VehicleControl(throttle=throttle, steer=steer, brake=brake)
            )
        self.world.tick()
        return self._read()

    @staticmethod
    def _state(actor: Any) -> rt.VehicleState:
        tf, v, w = actor.get_transform(), actor.get_velocity(), actor.get_angular_velocity()
        return plane_state(tf.location.x, tf.location.y, tf.rotation.yaw, v.x, v.y, w.z)

    def _read(self) -> SimStep:
        tr, opp = self.track, self._state(self.opponent)
        s_mod, _ = tr.project((opp.x, opp.y))
        self._opp_s += float(rt.wrap_gap(s_mod - self._opp_s, tr.length))
        epsi = rt.wrap_angle(opp.psi - float(tr.frame(self._opp_s)[2]))
        opp_v = float(rt.forward_speed(opp.vx, opp.vy, epsi))
        return SimStep(self._state(self.ego), self._opp_s, opp_v, opp)

    def _destroy_actors(self) -> None:
        for actor in (self.ego, self.opponent):
            try:
                if actor is not None:
                    actor.destroy()
            except RuntimeError:  # the server that held it is gone
                pass
        self.ego = self.opponent = None

    def _drop_traffic_manager(self) -> None:
        """Shut this process's traffic manager on ``tm_port`` down (LibCarla keeps it, with the
        old server's episode, until then)."""
        if self.tm is not None:
            try:
                self.tm.shut_down()
            except RuntimeError:  # its server is gone: the client still forgets it
                pass
            self.tm = None

    def _await_server(self) -> None:
        """Connect, waiting up to ``reconnect_wait`` s for the server (its node's watchdog
        restarts it on the same ports), then claiming another free server of ``servers``;
        `CarlaUnavailable` if neither answers (`CarlaMapMissing` if one lacks the town)."""
        once = dataclasses.replace(self.params, attempts=1)
        deadline, failed = time.monotonic() + self.params.reconnect_wait, 0
        while True:
            try:
                self._connect(once)
                return
            except CarlaUnavailable as err:
                last = err
            failed += 1
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(max(self.params.delay(failed), 0.05), left))  # never a busy loop
        log.warning("CARLA %s:%d not back after %.0f s (%s)", self.host, self.port,
                    self.params.reconnect_wait, last.cause)  # fmt: skip
        if self.servers is None:
            raise CarlaUnavailable(self.host, self.port, failed, f"{last.cause}; not back "
                                   f"within reconnect_wait={self.params.reconnect_wait:g} s")  # fmt: skip
        self._claim_another(last)

    def reconnect(self) -> None:
        """Get a server back after a loss (module docstring): drop the old cars, wait for the
        server (`_await_server`), respawn the cars (`CarlaUnavailable` if it fails again)."""
        self._destroy_actors()
        self._drop_traffic_manager()
        self._await_server()
        try:
            self._park()
        except RuntimeError as err:  # lost again while respawning
            raise CarlaUnavailable(self.host, self.port, self.params.attempts, str(err)) from err

    def _claim_another(self, last: CarlaUnavailable) -> None:
        """Move to another free server of the node's registry (`CarlaUnavailable` if none)."""
        from envs.racing.carla_servers import (  # noqa: PLC0415  (the node's registry)
            CarlaServerError,
            ServerClaim,
            claim_server,
            release_server,
        )

        try:
            new = claim_server(self.servers)
        except CarlaServerError as err:
            raise CarlaUnavailable(self.host, self.port, self.params.attempts,
                                   f"{last.cause}; no free server to claim instead: {err}") from err  # fmt: skip
        old = ServerClaim(self.host, self.port, self.tm_port)
        log.warning("CARLA %s:%d is gone; claimed %s:%d instead", self.host, self.port,
                    new.host, new.port)  # fmt: skip
        self.host, self.port, self.tm_port = new.host, new.port, new.tm_port
        release_server(old, self.servers)
        self._connect()

    def close(self) -> None:
        """Destroy the cars and give the server back as CARLA starts: asynchronous, rendering."""
        CarlaSim._tm_sims.discard(id(self))
        self._destroy_actors()
        try:
            settings = self.world.get_settings()
            settings.synchronous_mode, settings.fixed_delta_seconds = False, None
            settings.no_rendering_mode = False
            self.world.apply_settings(settings)
            if self.tm is not None:
                self.tm.set_synchronous_mode(False)
        except (RuntimeError, AttributeError):  # no server, or never connected
            pass
