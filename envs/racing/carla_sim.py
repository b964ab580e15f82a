"""CARLA behind the racing env's `envs.racing.env.VehicleSim` interface: client layer, vehicles.

`CarlaSim` implements the interface on a CARLA 0.9.16 server in synchronous mode (one
``world.tick()`` of ``fixed_delta_seconds = dt`` per env step); `envs.racing.bicycle.BicycleSim`
implements it with the embedded dynamic bicycle. The route (the `Track` built from the map)
is `envs.racing.carla_route`.

Frames: CARLA's world is left-handed (x forward, y right, yaw in degrees, clockwise seen from
above; steer > 0 turns right); the task's plane is right-handed (``y`` to the left, ``ψ`` in
radians counter-clockwise). `to_plane` / `from_plane` flip ``y`` and the yaw; nothing else in the
project sees CARLA coordinates.

The ``carla`` module is imported when a `CarlaSim` is built (or `connect` called without a
factory), so ``import envs`` works without it.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.danger import DangerZone
from envs.racing import task as rt
from envs.racing.carla_route import RouteSpec, route_track
from envs.racing.task import SimStep

#: the CARLA server version the client (``carla==0.9.16``) is built for
SERVER_VERSION = "0.9.16"
log = logging.getLogger(__name__)


class CarlaUnavailable(ConnectionError):
    """No CARLA server answered at ``host:port`` after ``attempts`` tries."""

    def __init__(self, host: str, port: int, attempts: int, cause: str = "") -> None:
        self.host, self.port, self.attempts, self.cause = host, port, attempts, cause
        super().__init__(
            f"no CARLA server answered at {host}:{port} after {attempts} attempt(s)"
            f" (last error: {cause or 'none'}). rlmpc expects a CARLA {SERVER_VERSION} server:"
            f" start one with `./CarlaUE4.sh -RenderOffScreen -carla-rpc-port={port}`"
            f" (CARLA_{SERVER_VERSION} release), or use the embedded env rlmpc/RacingDZ-v0."
        )

    def __reduce__(self) -> tuple:  # pickles across Ray with its fields
        return type(self), (self.host, self.port, self.attempts, self.cause)


@dataclass(frozen=True)
class ClientParams:
    """Connection to a CARLA server: per-call timeout, attempts, exponential backoff."""

    timeout: float = 10.0  # seconds each RPC may take (client.set_timeout), > 0
    attempts: int = 5  # connection attempts before CarlaUnavailable, int >= 1
    backoff: float = 1.0  # wait after the first failed attempt (s), doubling each time, >= 0
    max_backoff: float = 30.0  # cap on one wait (s), >= backoff

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise ValueError(
                    f"ClientParams.{name} must be {allowed}, got {getattr(self, name)!r}"
                )

        finite = lambda v: isinstance(v, (int, float)) and math.isfinite(v)
        need(finite(self.timeout) and self.timeout > 0, "timeout", "a finite number > 0")
        need(isinstance(self.attempts, int) and self.attempts >= 1, "attempts", "an int >= 1")
        need(finite(self.backoff) and self.backoff >= 0, "backoff", "a finite number >= 0")
        ok = finite(self.max_backoff) and self.max_backoff >= self.backoff
        need(ok, "max_backoff", f"a finite number >= backoff={self.backoff}")

    def delay(self, failed: int) -> float:
        """Seconds to wait after the ``failed``-th failed attempt: ``backoff · 2^(failed-1)``, capped."""
        return min(self.backoff * 2.0 ** (failed - 1), self.max_backoff)


def connect(
    host: str,
    port: int,
    params: ClientParams,
    client_factory: Callable[[str, int], Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """A ``carla.Client`` whose server answered ``get_server_version``; `CarlaUnavailable` otherwise.

    Up to ``params.attempts`` attempts, each bounded by ``params.timeout``, with ``params.delay``
    between them. A server of another version is used with a warning.
    """
    if client_factory is None:
        import carla  # noqa: PLC0415  (optional dependency)

        client_factory = carla.Client
    cause = ""
    for attempt in range(1, params.attempts + 1):
        try:
            client = client_factory(host, port)
            client.set_timeout(params.timeout)
            version = client.get_server_version()
        except RuntimeError as err:
            cause = str(err)
            log.warning("CARLA %s:%d, attempt %d/%d: %s", host, port, attempt, params.attempts, err)
            if attempt < params.attempts:
                sleep(params.delay(attempt))
            continue
        if not str(version).startswith(SERVER_VERSION):
            warnings.warn(
                f"CARLA server {host}:{port} runs {version}, the client expects {SERVER_VERSION}",
                stacklevel=2,
            )
        return client
    raise CarlaUnavailable(host, port, params.attempts, cause)


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
) -> np.ndarray:
    """The opponent's driver: pure pursuit of the centreline at ``speed``, as an env action.

    Aims at the centre point ``max(8 m, 1 s · v)`` ahead of the car's projection, with the
    bicycle's steering ``δ = atan(2 L sin α / l_d)`` scaled by ``max_steer`` (rad at
    ``|steer| = 1``); throttle (braking below 0) ``gain · (speed - vx)``, clipped to ±1.
    """
    s, _ = track.project((car.x, car.y))
    target = track.centre(s + max(8.0, car.vx))
    dx, dy = target[0] - car.x, target[1] - car.y
    alpha = rt.wrap_angle(math.atan2(dy, dx) - car.psi)
    delta = math.atan2(2.0 * wheelbase * math.sin(alpha), math.hypot(dx, dy))
    steer = float(np.clip(delta / max_steer, -1.0, 1.0))
    return np.array([steer, float(np.clip(gain * (speed - car.vx), -1.0, 1.0))])


class CarlaSim:
    """`VehicleSim` on a CARLA server: synchronous mode, ego + one opponent on the route.

    The opponent follows the track centreline at the episode's opponent speed, driven by
    `pursuit_control` (``opponent_driver="pursuit"``) or by CARLA's traffic manager on
    ``tm_port`` (``"traffic_manager"``: its own lane along the route, desired speed set).
    Both cars are spawned at construction (their physics gives the planner's `CarParams`) and
    teleported on every reset; the danger zone is drawn with ``world.debug`` for ``zone_life`` s.
    One `CarlaSim` per server: it owns the server's clock (every `step` ticks the world).
    """

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
    ) -> None:
        import carla  # noqa: PLC0415  (optional dependency)

        self._carla, self.host, self.port, self.town, self.dt = carla, host, port, town, dt
        self.params, self.tm_port, self.zone_life = client, tm_port, zone_life
        self.blueprints, self.opponent_driver = (vehicle, opponent_vehicle), opponent_driver
        self.ego = self.opponent = self.tm = None
        self._connect()
        try:
            self.track, self._z = route_track(self.world.get_map(), route)
            self._opp_s, self._opp_speed = 0.0, 0.0
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

    def _connect(self) -> None:
        """Connect, load the town if another is loaded, switch to synchronous mode."""
        self.client = connect(self.host, self.port, self.params)
        world = self.client.get_world()
        if world.get_map().name.split("/")[-1] != self.town:
            self.client.set_timeout(max(self.params.timeout, 120.0))  # loading takes a while
            world = self.client.load_world(self.town)
            self.client.set_timeout(self.params.timeout)
        settings = world.get_settings()
        settings.synchronous_mode, settings.fixed_delta_seconds = True, self.dt
        settings.substepping, settings.max_substeps = True, 16
        settings.max_substep_delta_time = max(0.01, self.dt / 16)
        world.apply_settings(settings)
        if self.opponent_driver == "traffic_manager":
            self.tm = self.client.get_trafficmanager(self.tm_port)
            self.tm.set_synchronous_mode(True)
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
        self, ego: rt.VehicleState, opp_s: float, opp_v: float, zone: DangerZone | None
    ) -> SimStep:
        tr = self.track
        s_ego = float(tr.project((ego.x, ego.y))[0])
        self.ego = self._place(self.ego, self.blueprints[0], s_ego, ego, ego.vx)
        (ox, oy), heading = tr.centre(opp_s), float(tr.frame(opp_s)[2])
        opp = rt.VehicleState(float(ox), float(oy), heading, opp_v, 0.0, 0.0)
        self.opponent = self._place(self.opponent, self.blueprints[1], opp_s, opp, opp_v)
        self._opp_s, self._opp_speed = opp_s, opp_v
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
        tm.set_path(self.opponent, [self._transform(s, *tr.centre(s), 0.0).location for s in ahead])

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
            a = pursuit_control(self.track, opp, self._opp_speed, wheelbase, max_steer)
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
        return SimStep(self._state(self.ego), self._opp_s, opp_v)

    def _destroy_actors(self) -> None:
        for actor in (self.ego, self.opponent):
            try:
                if actor is not None:
                    actor.destroy()
            except RuntimeError:  # the server that held it is gone
                pass
        self.ego = self.opponent = None

    def reconnect(self) -> None:
        """Drop the old actors, connect again (`CarlaUnavailable` if that fails), respawn them."""
        self._destroy_actors()
        self._connect()
        try:
            self._park()
        except RuntimeError as err:  # lost again while respawning
            raise CarlaUnavailable(self.host, self.port, self.params.attempts, str(err)) from err

    def close(self) -> None:
        """Destroy the cars and give the server back in asynchronous mode."""
        self._destroy_actors()
        try:
            settings = self.world.get_settings()
            settings.synchronous_mode, settings.fixed_delta_seconds = False, None
            self.world.apply_settings(settings)
            if self.tm is not None:
                self.tm.set_synchronous_mode(False)
        except RuntimeError:
            pass
