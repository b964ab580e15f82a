"""The racing opponent's speed profile (`envs.racing.track.speed_profile`,
`envs.racing.task.OpponentSpeed`): slower in corners, as a racing line; one profile for the
bicycle simulator and for CARLA; RacingDZ's default stadium is not changed by it."""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
import pytest

from envs.racing import task as rt
from envs.racing.bicycle import BicycleSim, dynamic_bicycle_step
from envs.racing.carla_client import ClientParams
from envs.racing.carla_env import CARLA_TASK, CarlaRacingEnv
from envs.racing.env import RacingTaskEnv, StadiumRacingDZEnv
from envs.racing.task import SimStep
from envs.racing.track import TrackParams, speed_profile
from tests.carla_double import fake_carla

TIGHT = TrackParams(straight_length=60.0, radius=10.0, half_width=6.0, spacing=0.5)


def test_profile_slows_to_the_lateral_limit_and_brakes_ahead_of_corners():
    track = rt.Track.stadium(TIGHT)
    a_lat, a_long, v_max = 4.0, 3.0, 12.0
    v = speed_profile(track, v_max, a_lat, a_long)
    assert v.shape == (len(track.points),) and np.all(v <= v_max)
    assert math.isclose(v.min(), math.sqrt(a_lat * TIGHT.radius), rel_tol=0.02)
    # in the turns the lateral acceleration stays within the limit (curvature as tabulated)
    assert np.all(v**2 * np.abs(track.curvature) <= a_lat * 1.02)
    # speed changes by at most a_long along the track, wrapping over the start line
    dv2 = np.abs(np.roll(v, -1) ** 2 - v**2)
    assert np.all(dv2 <= 2 * a_long * track.seg_len + 1e-9)
    # the car reaches v_max mid-straight: 60 m allow (144 - 40) / 6 = 17 m to brake
    mid = np.argmin(np.abs(track.s[:-1] - TIGHT.straight_length / 2))
    assert v[mid] == v_max
    # braking starts before the turn: 5 m before it the speed is already down
    before = np.argmin(np.abs(track.s[:-1] - (TIGHT.straight_length - 5.0)))
    assert v[before] < v_max


@pytest.mark.parametrize(
    "args, name",
    [
        ((0.0, 4.0, 3.0), "v_max"),
        ((10.0, -1.0, 3.0), "lateral_accel"),
        ((10.0, 4.0, math.nan), "long_accel"),
    ],  # fmt: skip
)
def test_profile_refuses_bad_limits(args, name):
    with pytest.raises(ValueError, match=name):
        speed_profile(rt.Track.stadium(TIGHT), *args)


def test_task_refuses_bad_opponent_limits():
    for name in ("opponent_lateral_accel", "opponent_long_accel"):
        with pytest.raises(ValueError, match=name):
            rt.TaskParams(**{name: 0.0})


class ConstantSpeedSim(BicycleSim):
    """The bicycle simulator as it was before the speed profile: the opponent at constant speed."""

    def reset(self, ego, opp_s, opp_v, zone, line=None):
        self.state, self.opp_s, self.opp_v = ego, opp_s, opp_v
        return SimStep(ego, opp_s, opp_v)

    def step(self, u):
        self.state = dynamic_bicycle_step(self.state, u, self.car, self.dt)
        self.opp_s += self.opp_v * self.dt
        return SimStep(self.state, self.opp_s, self.opp_v)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_racing_dz_is_unchanged_on_its_stadium(seed):
    """The profile never binds on RacingDZ's stadium (30 m turns: sqrt(4 · 30) ≈ 11 m/s > 10):
    episodes are those of the constant-speed opponent, to the bit (committed Racing results
    were made with it)."""
    env = StadiumRacingDZEnv()
    assert np.all(env.sim.opponent.profile(env.task.opponent_speed) == env.task.opponent_speed)
    ref = RacingTaskEnv(ConstantSpeedSim(env.track, env.car, env.task.dt), env.task, env.car)
    rng = np.random.default_rng(seed)
    o, _ = env.reset(seed=seed)
    o_ref, _ = ref.reset(seed=seed)
    np.testing.assert_array_equal(o, o_ref)
    for _ in range(600):
        u = np.array([rng.uniform(-0.2, 0.2), rng.uniform(0.0, 1.0)], np.float32)
        o, r, te, tr, _ = env.step(u)
        o_ref, r_ref, te_ref, tr_ref, _ = ref.step(u)
        np.testing.assert_array_equal(o, o_ref)
        assert (r, te, tr) == (r_ref, te_ref, tr_ref) and env.opp_v == 10.0
        if te or tr:
            break


def test_bicycle_opponent_slows_in_tight_turns():
    task = dataclasses.replace(rt.STADIUM_TASK, opponent_gap=(15.0, 20.0), zone_s=(20, 150))
    env = StadiumRacingDZEnv(track=TIGHT, task=task)
    env.reset(seed=0)
    speeds, s = [], []
    for _ in range(400):  # the ego coasts; the opponent laps the 183 m track
        *_, te, tr, _ = env.step(np.array([0.0, -1.0], np.float32))
        speeds.append(env.opp_v)
        s.append(env.opp_s)
        if te or tr:
            env.reset(seed=1)
    assert min(speeds) == pytest.approx(math.sqrt(4.0 * TIGHT.radius), rel=0.03)
    assert max(speeds) == pytest.approx(10.0)
    for v, at in zip(speeds, s, strict=True):  # what the simulator reports is the profile
        assert v == env.sim.opponent(at, 10.0)


def test_carla_opponent_uses_the_same_profile_and_brakes_for_a_corner(monkeypatch):
    mod = fake_carla()
    monkeypatch.setitem(sys.modules, "carla", mod)
    task = dataclasses.replace(CARLA_TASK, opponent_speed=15.0)
    env = CarlaRacingEnv(task=task, client=ClientParams(timeout=0.1, attempts=1, backoff=0.0))
    ref = speed_profile(env.track, 15.0, task.opponent_lateral_accel, task.opponent_long_accel)
    np.testing.assert_array_equal(env.sim.opponent_speed.profile(15.0), ref)
    assert ref.min() < 12.0  # the double's stadium turns (~28 m) bind at 15 m/s
    # place the opponent 3 m before the first turn: its profile speed there is below 15
    turn = float(env.track.s[np.argmax(np.abs(env.track.curvature) > 0.02)])
    sim = env.sim
    start = rt.VehicleState(*env.track.points[0], float(env.track.heading[0]), 10.0, 0.0, 0.0)
    sim.reset(start, turn - 3.0, 15.0, None)
    opp = sim.opponent
    v0 = math.hypot(opp.v.x, opp.v.y)
    assert v0 == pytest.approx(sim.opponent_speed(turn - 3.0, 15.0)) and v0 < 15.0
    h = float(env.track.frame(turn - 3.0)[2])
    opp.v = type(opp.v)(15.0 * math.cos(h), -15.0 * math.sin(h), 0.0)  # CARLA's frame
    sim.step(np.zeros(2))  # at 15 m/s heading into the turn: the pursuit driver brakes
    assert opp.controls[-1].brake > 0 and opp.controls[-1].throttle == 0.0
    env.close()
