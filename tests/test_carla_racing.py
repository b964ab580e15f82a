"""rlmpc/CarlaRacing-v0: client layer, route, frames, and the env's task path (no server needed).

The task code path runs on `BicycleSim` (RacingDZ's dynamic bicycle behind the simulator
interface) and on test doubles of that interface that stand in for a flaky network. Tests
marked ``carla`` need a CARLA 0.9.16 server: start one with
``./CarlaUE4.sh -RenderOffScreen -carla-rpc-port=2000``, point ``RLMPC_CARLA_HOST`` /
``RLMPC_CARLA_PORT`` at it (default 127.0.0.1:2000) and run ``pytest -m carla``.
"""

import math
import pickle
import socket
import subprocess
import sys
import threading

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.base import SimulatorUnavailable
from envs.racing import task as rt
from envs.racing.bicycle import BicycleSim
from envs.racing.carla_env import CarlaRacingEnv
from envs.racing.carla_route import RouteSpec
from envs.racing.carla_sim import (
    CarlaUnavailable,
    ClientParams,
    carla_control,
    connect,
    from_plane,
    plane_state,
    pursuit_control,
)
from envs.racing.env import RacingTaskEnv, StadiumRacingDZEnv

FAST = ClientParams(timeout=0.2, attempts=3, backoff=0.01, max_backoff=0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- client layer -------------------------------------------------------------------------


def test_refused_connection_raises_after_exactly_the_configured_attempts():
    carla = pytest.importorskip("carla")
    port, calls, waits = free_port(), [], []

    def factory(host, p):
        calls.append((host, p))
        return carla.Client(host, p)

    with pytest.raises(CarlaUnavailable) as info:
        connect("127.0.0.1", port, FAST, client_factory=factory, sleep=waits.append)
    assert calls == [("127.0.0.1", port)] * 3
    assert waits == [0.01, 0.02]  # exponential backoff between attempts, none after the last
    msg = str(info.value)
    for part in ("127.0.0.1", str(port), "3 attempt", "0.9.16", "CarlaUE4.sh", "time-out"):
        assert part in msg
    assert isinstance(info.value, ConnectionError) and info.value.attempts == 3
    again = pickle.loads(pickle.dumps(info.value))  # crosses Ray intact
    assert str(again) == msg and again.port == port


def test_silent_server_times_out_on_every_attempt():
    """A server that accepts TCP and never answers: each attempt ends at the timeout."""
    pytest.importorskip("carla")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    accepted = []

    def accept():
        while True:
            try:
                accepted.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        params = ClientParams(timeout=0.2, attempts=2, backoff=0.0)
        with pytest.raises(CarlaUnavailable, match="time-out of 200ms"):
            connect("127.0.0.1", srv.getsockname()[1], params)
        assert accepted  # it did reach the server: a timeout, not a refusal
    finally:
        srv.close()
        for c in accepted:
            c.close()


def test_backoff_doubles_and_is_capped():
    p = ClientParams(backoff=0.5, max_backoff=3.0)
    assert [p.delay(k) for k in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_registered_env_without_server_raises_the_clear_error():
    pytest.importorskip("carla")
    port = free_port()
    client = ClientParams(timeout=0.1, attempts=1, backoff=0.0)
    with pytest.raises(CarlaUnavailable, match=f"127.0.0.1:{port}"):
        gym.make("rlmpc/CarlaRacing-v0", port=port, tm_port=free_port(), client=client)
    assert envs.ENV_IDS["carla-racing"] == "rlmpc/CarlaRacing-v0"


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"port": 0}, "port"),
        ({"port": "2000"}, "port"),
        ({"tm_port": 2001}, "tm_port"),
        ({"tm_port": 2002}, "tm_port"),  # port + 2: CARLA's secondary port
        ({"servers": ""}, "servers"),
        ({"tm_port": 70000}, "tm_port"),
        ({"host": ""}, "host"),
        ({"town": "Town99"}, "town"),
        ({"opponent_driver": "autopilot"}, "opponent_driver"),
        ({"vehicle": "tesla"}, "vehicle"),
        ({"render_mode": "human"}, "render_mode"),
    ],
)
def test_bad_constructor_input_names_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        CarlaRacingEnv(**kwargs)  # raised before any connection attempt


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: ClientParams(timeout=0.0), "timeout"),
        (lambda: ClientParams(attempts=0), "attempts"),
        (lambda: ClientParams(attempts=2.5), "attempts"),
        (lambda: ClientParams(backoff=-1.0), "backoff"),
        (lambda: ClientParams(backoff=2.0, max_backoff=1.0), "max_backoff"),
        (lambda: RouteSpec(plan=("up",)), "plan"),
        (lambda: RouteSpec(spacing=0.1), "spacing"),
        (lambda: RouteSpec(half_width=-1.0), "half_width"),
    ],
)
def test_bad_parameters_name_the_field(make, name):
    with pytest.raises(ValueError, match=name):
        make()


# ---- frames and drivers ---------------------------------------------------------------------


def test_carla_frame_conversion():
    # CARLA yaw 90° points along its +y, the plane's -y; a CARLA yaw rate > 0 turns right
    s = plane_state(1.0, 2.0, 90.0, 0.0, 10.0, 10.0)
    assert s.x == 1.0 and s.y == -2.0 and math.isclose(s.psi, -math.pi / 2)
    assert math.isclose(s.vx, 10.0) and abs(s.vy) < 1e-12
    assert math.isclose(s.r, -math.radians(10.0))
    rng = np.random.default_rng(0)
    for x, y, yaw in rng.uniform(-180, 180, (20, 3)):
        p = plane_state(x, y, yaw, 0.0, 0.0, 0.0)
        assert np.allclose(from_plane(p.x, p.y, p.psi), (x, y, yaw))
    # env action [steer, throttle] -> CARLA (throttle, steer, brake): left is CARLA's negative
    assert carla_control(np.array([0.3, 0.5])) == (0.5, -0.3, 0.0)
    assert carla_control(np.array([-0.2, -0.7])) == (0.0, 0.2, 0.7)


def test_pursuit_driver_keeps_the_opponent_on_the_centreline():
    env = StadiumRacingDZEnv()
    sim = BicycleSim(env.track, env.car, env.task.dt)
    car = rt.VehicleState(*env.track.points[0], float(env.track.heading[0]), 8.0, 0.0, 0.0)
    sim.reset(car, 0.0, 0.0, None)
    wheelbase = env.car.lf + env.car.lr
    offsets, speeds = [], []
    for _ in range(450):  # 45 s: more than a lap at 10 m/s
        u = pursuit_control(env.track, sim.state, 10.0, wheelbase, env.car.max_steer)
        state = sim.step(u).ego
        offsets.append(abs(float(env.track.project((state.x, state.y))[1])))
        speeds.append(state.vx)
    assert max(offsets[50:]) < 0.5
    assert abs(np.mean(speeds[-100:]) - 10.0) < 0.5


# ---- the task path: RacingDZ is the task env on the dynamic bicycle -----------------------------


def bicycle_env(render_mode=None) -> RacingTaskEnv:
    ref = StadiumRacingDZEnv()
    return RacingTaskEnv(
        BicycleSim(ref.track, ref.car, ref.task.dt), ref.task, ref.car, render_mode
    )


@pytest.mark.parametrize(
    "seed, driver, speed, end",
    [
        (0, "random", 0.0, "off_track"),
        (1, "pursuit", 15.0, "collision"),
        (2, "pursuit", 9.0, "is_success"),
    ],
)
def test_same_rewards_and_terminations_as_racing_dz(seed, driver, speed, end):
    """Off-track, collision (after passing reward) and goal episodes, step for step: the task env
    built from its parts on `BicycleSim` is RacingDZ (one simulator path)."""
    ref, env = StadiumRacingDZEnv(), bicycle_env()
    o_ref, i_ref = ref.reset(seed=seed)
    o, i = env.reset(seed=seed)
    np.testing.assert_array_equal(o, o_ref)
    assert i == {**i_ref, "server_lost": False}
    model, rng = ref.planner_model(), np.random.default_rng(seed)
    np.testing.assert_array_equal(model.planner_state(env), model.planner_state(ref))
    for _ in range(700):
        if driver == "random":
            u = rng.uniform(-1.0, 1.0, 2).astype(np.float32)
        else:
            u = pursuit_control(env.track, env.state, speed, 2.5, ref.car.max_steer)
        o_ref, r_ref, te_ref, tr_ref, i_ref = ref.step(u)
        o, r, te, tr, i = env.step(u)
        np.testing.assert_array_equal(o, o_ref)
        assert (r, te, tr) == (r_ref, te_ref, tr_ref)
        assert i == {**i_ref, "server_lost": False}
        if te or tr:
            break
    assert te and i[end]


def test_bicycle_env_passes_the_gymnasium_checker():
    from gymnasium.utils.env_checker import check_env

    check_env(bicycle_env(), skip_render_check=True)
    frame = bicycle_env("rgb_array")
    frame.reset(seed=0)
    assert frame.render().ndim == 3


class FlakySim(BicycleSim):
    """A test double for the network: step/reset raise the client's RuntimeError on cue."""

    def __init__(self, *args, fail_step=None, fail_reset=0, reconnect_ok=True):
        super().__init__(*args)
        self.fail_step, self.fail_reset, self.reconnect_ok = fail_step, fail_reset, reconnect_ok
        self.steps = self.reconnects = 0

    def reset(self, *args):
        if self.fail_reset:
            self.fail_reset -= 1
            raise RuntimeError("time-out of 200ms while waiting for the simulator")
        return super().reset(*args)

    def step(self, u):
        self.steps += 1
        if self.steps == self.fail_step:
            raise RuntimeError("time-out of 200ms while waiting for the simulator")
        return super().step(u)

    def reconnect(self):
        self.reconnects += 1
        if not self.reconnect_ok:
            raise CarlaUnavailable("127.0.0.1", 2000, 3, "connection refused")


def flaky_env(**kwargs) -> tuple[RacingTaskEnv, FlakySim]:
    ref = StadiumRacingDZEnv()
    sim = FlakySim(ref.track, ref.car, ref.task.dt, **kwargs)
    return RacingTaskEnv(sim, ref.task, ref.car), sim


def test_server_loss_truncates_the_episode_and_the_next_reset_resumes():
    env, sim = flaky_env(fail_step=4)
    env.reset(seed=0)
    action = np.array([0.0, 0.3], np.float32)
    for _ in range(3):
        last, *_ = env.step(action)
    obs, reward, terminated, truncated, info = env.step(action)
    assert (reward, terminated, truncated, info["server_lost"]) == (0.0, False, True, True)
    np.testing.assert_array_equal(obs, last)
    assert sim.reconnects == 0  # the episode ends at once; the reset gets the server back
    assert envs.spec("carla-racing").episode_lost(info) and envs.spec("racing").episode_lost(info)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(action)
    env.reset(seed=1)
    assert sim.reconnects == 1
    for _ in range(5):
        *_, truncated, info = env.step(action)
        assert not truncated and not info["server_lost"]
        assert not envs.spec("carla-racing").episode_lost(info)


def test_server_that_does_not_come_back_raises_the_clear_error_at_each_reset():
    """The reset after a loss raises `CarlaUnavailable` (a `SimulatorUnavailable`) while the
    server stays away, and every later reset tries again."""
    env, sim = flaky_env(fail_step=2, reconnect_ok=False)
    env.reset(seed=0)
    env.step(np.zeros(2, np.float32))
    *_, truncated, info = env.step(np.zeros(2, np.float32))
    assert truncated and info["server_lost"] and sim.reconnects == 0
    for attempt in (1, 2):
        with pytest.raises(CarlaUnavailable, match="0.9.16") as err:
            env.reset(seed=attempt)
        assert isinstance(err.value, SimulatorUnavailable) and sim.reconnects == attempt
    sim.reconnect_ok = True
    obs, _ = env.reset(seed=3)
    assert sim.reconnects == 3 and obs.shape == (rt.NOBS,)
    assert not env.step(np.zeros(2, np.float32))[4]["server_lost"]


def test_server_lost_during_reset_reconnects_once():
    env, sim = flaky_env(fail_reset=1)
    obs, _ = env.reset(seed=0)
    assert sim.reconnects == 1 and obs.shape == (rt.NOBS,)


def test_import_envs_without_the_carla_package():
    code = (
        "import sys; sys.modules['carla'] = None\n"
        "import numpy as np, envs\n"
        "from envs.racing.carla_env import CarlaRacingEnv\n"
        "from envs.racing.bicycle import BicycleSim\n"
        "from envs.racing.env import RacingDZEnv, RacingTaskEnv\n"
        "r = RacingDZEnv(); e = RacingTaskEnv(BicycleSim(r.track, r.car, 0.1), r.task, r.car)\n"
        "e.reset(seed=0); e.step(np.zeros(2, np.float32)); print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
