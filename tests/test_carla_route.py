"""rlmpc/CarlaRacing-v0 without a server: the route on a map double, the CARLA sim's code path
on a server double; and, marked ``carla``, an episode on a real server."""

import math
import os
import sys

import numpy as np
import pytest

from envs.racing import task as rt
from envs.racing.bicycle import CarParams
from envs.racing.carla_env import CARLA_TASK, CarlaRacingEnv
from envs.racing.carla_route import RouteSpec, check_clearance, trace_route, track_from_waypoints
from envs.racing.carla_sim import (
    CarlaUnavailable,
    ClientParams,
    connect,
    pursuit_control,
)
from envs.racing.model import ModelParams
from envs.racing.track import TrackParams
from tests.carla_double import FakeWaypoint, fake_carla

# ---- route tracing on a map double ------------------------------------------------------------


def test_route_follows_the_plan_and_closes_the_loop():
    stadium = FakeWaypoint.TRACK
    spec = RouteSpec(plan=("straight",), offset=0.0, half_width=6.0)
    track, z = track_from_waypoints(trace_route(FakeWaypoint(1, 0.0), spec), spec)
    assert math.isclose(track.length, stadium.length, rel_tol=2e-3)
    assert np.all(z == 0.5) and len(z) == len(track.points)
    _, ey = track.project(stadium.points)
    assert np.max(np.abs(ey)) < 0.05  # the traced centreline is the stadium's
    # offset 0.5 lane widths to the left of a counter-clockwise loop: a shorter lap inside it
    inner = RouteSpec(plan=("straight",), offset=0.5)
    track, _ = track_from_waypoints(trace_route(FakeWaypoint(1, 0.0), inner), inner)
    assert math.isclose(track.length, stadium.length - 2 * math.pi * 1.75, rel_tol=2e-3)
    assert track.half_width == 3.5
    with pytest.raises(ValueError, match="lane ends"):
        trace_route(FakeWaypoint(1, 0.0), RouteSpec(plan=("right",)))


def test_clearance_rejects_a_track_that_crosses_itself():
    check_clearance(rt.Track.stadium(TrackParams()))
    t = np.linspace(0, 2 * np.pi, 600, endpoint=False)
    eight = np.stack([100 * np.sin(t), 50 * np.sin(2 * t)], -1)  # a figure 8
    with pytest.raises(ValueError, match="within its width"):
        check_clearance(rt.Track(eight, 3.5))


def test_carla_task_defaults_are_racings_but_for_the_lane_sized_ones():
    """The same opponent rule (speed range, a line drawn per episode), time-limit rule,
    reward and episode end as ``racing``; zones, the zones' reach and the line's offsets sized
    for a lane-wide half-width."""
    diff = {k for k, v in CARLA_TASK.__dict__.items() if v != getattr(rt.TaskParams(), k)}
    assert diff == {"zone_size", "zone_s", "opponent_offset", "opponent_weave"}
    assert isinstance(CarParams(), CarParams)


def test_carla_sim_code_path_on_a_server_double(monkeypatch):
    """CarlaSim's calls, in order, on a `carla` double: sync mode at dt without rendering, the
    route from the map, controls in CARLA's convention, loss -> the episode ends at once, the
    next reset reconnects and respawns, close -> async mode."""
    carla = fake_carla()
    monkeypatch.setitem(sys.modules, "carla", carla)
    env = CarlaRacingEnv(client=ClientParams(timeout=0.1, attempts=2, backoff=0.0))
    world, server = carla.WORLD, carla.SERVER
    assert world.settings.synchronous_mode and world.settings.fixed_delta_seconds == env.task.dt
    assert world.settings.no_rendering_mode and server.loads == 0  # Town07 was loaded already
    stadium = FakeWaypoint.TRACK
    assert math.isclose(env.track.length, stadium.length - 2 * math.pi * 1.75, rel_tol=2e-3)
    assert math.isclose(env.car.lf + env.car.lr, 2.9) and math.isclose(
        env.car.max_steer, 1.2217, rel_tol=1e-4
    )
    env.reset(seed=0)
    assert world.boxes == 1  # the danger zone, drawn
    ego, opp = world.actors
    for _ in range(3):
        *_, info = env.step(np.array([0.25, -0.5], np.float32))
    assert vars(ego.controls[-1]) == {"throttle": 0.0, "steer": -0.25, "brake": 0.5}
    assert len(opp.controls) == 2 + 3  # zeroed at spawn and reset, then the driver every step
    # racing's rules: a top speed and a line drawn per episode, the route's binding time limit,
    # world-frame targets and the constant-velocity opponent in the planner's model
    top = env.sim._opp_top
    spread = CARLA_TASK.opponent_speed_spread
    assert abs(top - CARLA_TASK.opponent_speed) <= spread and env.opp_line is not None
    assert env.opp_v == pytest.approx(top) and env.opp_s > 15.0
    assert env.task.max_steps == rt.time_limit_steps(env.track, CARLA_TASK)
    assert env.planner_model().params == ModelParams()
    server.fail_ticks = 1
    *_, truncated, info = env.step(np.zeros(2, np.float32))
    assert truncated and info["server_lost"] and server.connects == 1  # no wait inside step
    env.reset(seed=1)
    assert server.connects == 2
    assert not ego.alive and len(world.actors) == 4  # old cars destroyed, new ones spawned
    assert not env.step(np.zeros(2, np.float32))[4]["server_lost"]
    env.close()
    assert not world.settings.synchronous_mode and not any(a.alive for a in world.actors)
    server.up = False
    with pytest.raises(CarlaUnavailable, match="2 attempt"):
        CarlaRacingEnv(client=ClientParams(timeout=0.1, attempts=2, backoff=0.0))


# ---- a real server ------------------------------------------------------------------------------

HOST = os.environ.get("RLMPC_CARLA_HOST", "127.0.0.1")
PORT = int(os.environ.get("RLMPC_CARLA_PORT", "2000"))
HOW = (
    f"needs a CARLA 0.9.16 server at {HOST}:{PORT}: start `./CarlaUE4.sh -RenderOffScreen "
    "-carla-rpc-port=2000`, set RLMPC_CARLA_HOST/RLMPC_CARLA_PORT, run `pytest -m carla`"
)


@pytest.fixture
def carla_env():
    pytest.importorskip("carla")
    try:
        connect(HOST, PORT, ClientParams(timeout=5.0, attempts=1))
    except CarlaUnavailable:
        pytest.skip(HOW)
    env = CarlaRacingEnv(host=HOST, port=PORT)
    yield env
    env.close()


@pytest.mark.carla
def test_episode_on_a_carla_server(carla_env):
    env = carla_env
    settings = env.sim.world.get_settings()
    assert settings.synchronous_mode and math.isclose(settings.fixed_delta_seconds, env.task.dt)
    obs, info = env.reset(seed=0)
    assert obs.shape == (rt.NOBS,) and abs(info["s"]) < 5.0
    model = env.planner_model()
    assert model.planner_state(env).shape == (model.nx,)
    s0 = env.s
    for _ in range(30):
        u = pursuit_control(env.track, env.state, 10.0, 2.9, env.car.max_steer)
        obs, reward, terminated, truncated, info = env.step(u)
        assert np.all(np.isfinite(obs)) and math.isfinite(reward) and not info["server_lost"]
        if terminated or truncated:
            break
    assert env.s > s0 + 5.0  # it drove forward along the route
