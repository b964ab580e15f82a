"""Racing (App. B.3) on the stadium (``racing-stadium``): track geometry, task logic on
hand-built states, env contract, planner model. The circuit (``racing``): `tests.test_racing_circuit`."""

from __future__ import annotations

import dataclasses
import math
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from envs.danger import DangerZone
from envs.racing import task as rt
from envs.racing.bicycle import CarParams, dynamic_bicycle_step
from envs.racing.env import StadiumRacingDZEnv
from envs.racing.model import ModelParams
from envs.racing.track import CircuitParams, TrackParams

P = rt.STADIUM_TASK
TRACK = rt.Track.stadium(TrackParams())
S, R, HW = 80.0, 30.0, 6.0  # default straight, radius, half-width
FAR_ZONE = DangerZone(1e3, 1e3, 4.0, 4.0)


def car_at(s: float, ey: float, v: float = 10.0, epsi: float = 0.0) -> rt.VehicleState:
    """A car on the track at (s, ey), heading along the track (plus epsi) at speed v."""
    x, y = TRACK.to_xy(s, ey)
    return rt.VehicleState(float(x), float(y), float(TRACK.frame(s)[2]) + epsi, v, 0.0, 0.0)


def pure_pursuit(env: gym.Env, v_ref: float, lookahead: float = 8.0) -> np.ndarray:
    """Steer at the centreline point `lookahead` metres ahead; P-control the speed."""
    e = env.unwrapped
    car = e.state
    dx, dy = e.track.centre(e.s + lookahead) - (car.x, car.y)
    alpha = math.atan2(dy, dx) - car.psi
    delta = math.atan2(2 * (e.car.lf + e.car.lr) * math.sin(alpha), math.hypot(dx, dy))
    steer = np.clip(delta / e.car.max_steer, -1, 1)
    return np.array([steer, np.clip(0.5 * (v_ref - car.vx), -1, 1)], np.float32)


# --- track geometry -------------------------------------------------------------------------


def test_track_tables_match_the_stadium():
    assert TRACK.length == pytest.approx(2 * S + 2 * math.pi * R, rel=1e-4)
    kappa = TRACK.frame(np.array([40.0, S + math.pi * R / 2, S + math.pi * R + 40.0]))[3]
    np.testing.assert_allclose(kappa, [0.0, 1 / R, 0.0], atol=1e-4)
    heading = TRACK.frame(np.array([40.0, S + math.pi * R + 40.0]))[2]
    np.testing.assert_allclose(rt.wrap_angle(heading), [0.0, -math.pi], atol=1e-9)


@pytest.mark.parametrize(
    "xy, s, ey",
    [
        ((-S / 2 + 10.0, -R + 2.0), 10.0, 2.0),  # bottom straight, inside (left)
        ((-S / 2 + 10.0, -R - 3.0), 10.0, -3.0),  # bottom straight, outside (right)
        ((S / 2 + R + 3.0, 0.0), S + math.pi * R / 2, -3.0),  # apex of the right-hand end, outside
        ((0.0, R + 1.0), S + math.pi * R + S / 2, -1.0),  # middle of the top straight, outside
        ((-S / 2 - R + 4.0, 0.0), 2 * S + 1.5 * math.pi * R, 4.0),  # apex of the left end, inside
    ],
)
def test_projection_on_known_points(xy, s, ey):
    s_hat, ey_hat = TRACK.project(xy)
    # on a polyline, s is off by up to |ey| * (turn per segment) / 2 on a curve
    assert s_hat == pytest.approx(s, abs=0.01 + abs(ey) * 1.0 / (2 * R))
    assert ey_hat == pytest.approx(ey, abs=0.02)
    np.testing.assert_allclose(TRACK.to_xy(s_hat, ey_hat), xy, atol=0.1)


def test_projection_is_vectorised_and_wraps():
    pts = np.stack([TRACK.to_xy(s, e) for s, e in [(5.0, 1.0), (200.0, -2.0), (340.0, 0.5)]])
    s_hat, ey_hat = TRACK.project(pts)
    np.testing.assert_allclose(s_hat, [5.0, 200.0, 340.0], atol=0.05)
    np.testing.assert_allclose(ey_hat, [1.0, -2.0, 0.5], atol=0.05)
    assert TRACK.centre(TRACK.length + 5.0) == pytest.approx(TRACK.centre(5.0))
    assert rt.wrap_gap(TRACK.length - 1.0, TRACK.length) == pytest.approx(-1.0)


# --- task logic on hand-built states (no simulator) -------------------------------------------


def outcome(car: rt.VehicleState, s_prev: float, opp_s: float = 150.0, zone=FAR_ZONE, opp_v=10.0):
    return rt.evaluate_step(TRACK, P, s_prev, car, opp_s, opp_v, zone)


def test_progress_reward_has_the_sign_of_forward_progress():
    forward, backward = outcome(car_at(11.0, 0.0), 10.0), outcome(car_at(9.0, 0.0), 10.0)
    assert forward.s == pytest.approx(11.0, abs=1e-6) and backward.s == pytest.approx(9.0, abs=1e-6)
    assert forward.reward == pytest.approx(P.w_progress * 1.0, abs=1e-6)
    assert backward.reward == pytest.approx(-P.w_progress * 1.0, abs=1e-6)


def test_boundary_penalty_grows_with_b():
    r = [outcome(car_at(10.0, ey), 10.0).reward for ey in (0.0, 3.0, -5.0)]
    assert r[0] > r[1] > r[2]
    assert r[1] == pytest.approx(-P.w_bound * 0.5, abs=1e-6)


def test_zone_costs_150_per_step():
    car = car_at(60.0, 1.0)
    inside = outcome(car, 59.0, zone=DangerZone(car.x, car.y, 3.0, 3.0))
    outside = outcome(car, 59.0)
    assert inside.in_zone and not outside.in_zone and not inside.off_track
    assert inside.reward - outside.reward == pytest.approx(-150.0)


def test_off_track_is_minus_100_and_ends():
    out = outcome(car_at(60.0, HW + 0.5), 59.0)
    assert out.off_track and not out.collided and not out.goal
    assert out.reward == pytest.approx(10.0 - P.w_bound * (HW + 0.5) / HW - 100.0, abs=1e-6)


def test_collision_is_minus_1000_and_ends():
    car = car_at(60.0, 0.5, v=10.0)
    hit, clear = outcome(car, 59.0, opp_s=61.0), outcome(car, 59.0, opp_s=150.0)
    assert hit.collided and not clear.collided
    assert hit.reward - clear.reward == pytest.approx(-1000.0)  # v_rel = 0: no passing reward


def test_goal_is_plus_1000_and_ends():
    out = outcome(car_at(1.0, 0.0), TRACK.length - 1.0)  # crossing the start line after one lap
    assert out.goal and out.s == pytest.approx(TRACK.length + 1.0, abs=1e-6)
    assert out.reward == pytest.approx(1000.0 + 2.0 * P.w_progress, abs=1e-6)
    assert not outcome(car_at(1.0, 0.0), 0.0).goal


def test_passing_reward_only_when_overtaking():
    def passing(ego_s: float, ego_v: float, opp_s: float) -> float:
        base = outcome(car_at(ego_s, 3.0, v=ego_v), ego_s, opp_s=opp_s + 200.0, opp_v=10.0).reward
        return outcome(car_at(ego_s, 3.0, v=ego_v), ego_s, opp_s=opp_s, opp_v=10.0).reward - base

    assert passing(50.0, 15.0, 60.0) == pytest.approx(P.w_pass * 5.0)  # closing in from behind
    assert passing(50.0, 15.0, 45.0) == pytest.approx(P.w_pass * 5.0)  # alongside / just past
    assert passing(50.0, 18.0, 45.0) > passing(50.0, 15.0, 45.0)  # grows with relative speed
    assert passing(50.0, 8.0, 60.0) == 0.0  # slower than the opponent
    assert passing(50.0, 15.0, 100.0) == 0.0  # opponent far ahead
    assert passing(50.0, 15.0, 20.0) == 0.0  # already well past


def test_step_reward_is_the_same_function_for_numpy_and_torch():
    args = (1.5, 3.0, -4.0, 0.4, True, False, True, False)
    as_torch = [torch.tensor(a, dtype=torch.float64) for a in args]
    assert float(rt.step_reward(*as_torch, P)) == pytest.approx(rt.step_reward(*args, P))


def test_zone_sampling_is_seeded_and_inside_the_track():
    zones = [rt.sample_zone(np.random.default_rng(k), TRACK, P) for k in range(50)]
    assert rt.sample_zone(np.random.default_rng(3), TRACK, P) == zones[3]
    assert len({z.cx for z in zones}) == 50
    for z in zones:
        assert z.w == z.h and P.zone_size[0] <= z.w <= P.zone_size[1]
        s, ey = TRACK.project((z.cx, z.cy))
        assert P.zone_s[0] - 0.1 <= s <= P.zone_s[1] + 0.1 and abs(ey) + z.w / 2 <= HW + 1e-6


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: TrackParams(radius=0.0), "radius"),
        (lambda: TrackParams(half_width=40.0), "half_width"),
        (lambda: TrackParams(straight_length=float("nan")), "straight_length"),
        (lambda: rt.TaskParams(dt=0.0), "dt"),
        (lambda: rt.TaskParams(lookahead=(5.0, 1.0, 2.0, 3.0, 4.0)), "lookahead"),
        (lambda: StadiumRacingDZEnv(track=TrackParams(half_width=1.5)), "half_width"),
        (lambda: StadiumRacingDZEnv(task=stadium(zone_size=(3.0, 7.0))), "zone_size"),
        (lambda: StadiumRacingDZEnv(task=stadium(zone_s=(50.0, 1e4))), "zone_s"),
        (lambda: StadiumRacingDZEnv(task=stadium(opponent_gap=(1.0, 20.0))), "opponent_gap"),
        (lambda: CarParams(mass=-1.0), "mass"),
        (lambda: StadiumRacingDZEnv(render_mode="human"), "render_mode"),
        (lambda: ModelParams(substeps=0), "substeps"),
        (lambda: ModelParams(target_frame="body"), "target_frame"),
        (lambda: ModelParams(opponent="exact"), "opponent"),
        (lambda: rt.TaskParams(opponent_speed_spread=20.0), "opponent_speed_spread"),
        (lambda: rt.TaskParams(opponent_weave_waves=2.5), "opponent_weave_waves"),
        (lambda: rt.TaskParams(opponent_time_share=1.5), "opponent_time_share"),
        (
            lambda: stadium(opponent_offset=3.0, opponent_weave=2.0).check_against(TRACK),
            "opponent_offset",
        ),
        (lambda: CircuitParams(control=((0.0, 0.0), (1.0, 0.0))), "control"),
    ],
)
def test_bad_parameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# --- env ------------------------------------------------------------------------------------


def stadium(**changes) -> rt.TaskParams:
    """The stadium's task with ``changes``."""
    return dataclasses.replace(P, **changes)


def placed_env(s: float, ey: float, v: float, opp_s: float, zone=FAR_ZONE,
               **task) -> StadiumRacingDZEnv:  # fmt: skip
    env = StadiumRacingDZEnv(task=stadium(**task))
    env.reset(seed=0)
    env.place(car_at(s, ey, v), s, ey, 0.0, opp_s, v, zone)
    return env


COAST = np.zeros(2, np.float32)


def test_env_terminates_off_track_and_on_collision():
    env = placed_env(60.0, HW + 1.0, 10.0, 150.0)
    _, r_off, term, trunc, info = env.step(COAST)
    assert term and not trunc and info["off_track"]
    assert r_off == pytest.approx(P.w_progress * (env.s - 60.0) - P.w_bound * env.ey / HW - 100.0)
    _, r_hit, term, trunc, info = placed_env(60.0, 0.0, 10.0, 62.0).step(COAST)
    _, r_clear, *_ = placed_env(60.0, 0.0, 10.0, 160.0).step(COAST)
    assert term and not trunc and info["collision"]
    assert r_hit - r_clear == pytest.approx(-1000.0)  # ego slows by drag: no passing reward


def test_env_goal_and_zone():
    env = placed_env(TRACK.length - 0.5, 0.0, 10.0, 150.0)
    _, r, term, trunc, info = env.step(COAST)
    assert term and not trunc and info["is_success"] and r > 1000.0
    car = car_at(61.0, 0.0)
    _, r_in, term, _, info = placed_env(
        60.0, 0.0, 10.0, 150.0, DangerZone(car.x, car.y, 4, 4)
    ).step(COAST)
    _, r_out, *_ = placed_env(60.0, 0.0, 10.0, 150.0).step(COAST)
    assert info["in_danger"] and not term and r_in - r_out == pytest.approx(-150.0)


def test_time_limit_truncates_never_terminates():
    env = StadiumRacingDZEnv(task=stadium(max_steps=5))
    env.reset(seed=1)
    flags = [env.step(pure_pursuit(env, 10.0))[2:4] for _ in range(5)]
    assert flags[:4] == [(False, False)] * 4 and flags[4] == (False, True)
    env = placed_env(60.0, HW + 1.0, 10.0, 150.0, max_steps=1)  # ends both ways at once
    assert env.step(COAST)[2:4] == (True, False)


def test_pure_pursuit_drives_a_lap_on_track():
    # an opponent that stays out of the way: 20 m/s, and grip enough not to slow in the turns
    # (sqrt(20 · 30) ≈ 24.5 m/s; at the default 4 m/s² it would take them at 11 m/s)
    task = stadium(opponent_speed=20.0, opponent_lateral_accel=20.0)
    env = envs.make("racing-stadium", task=task)
    env.reset(seed=4)
    for _ in range(400):
        _, r, term, trunc, info = env.step(pure_pursuit(env, 15.0))
        assert not info["off_track"] and not info["collision"] and not trunc
        assert abs(env.unwrapped.ey) < 1.5  # stays near the line it follows
        if term:
            break
    assert info["is_success"] and 200 < env.unwrapped.steps < 300 and r > 1000.0


def test_env_contract_checker_seeding_pickle_render():
    from gymnasium.utils.env_checker import check_env

    env = envs.make("racing-stadium", render_mode="rgb_array")
    assert not isinstance(env, gym.wrappers.TimeLimit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert all("infinity" in str(w.message) for w in caught)  # only: unbounded observation box
    actions = np.random.default_rng(0).uniform(-1, 1, (30, 2)).astype(np.float32) * [0.2, 1.0]

    def rollout(e):
        return [e.step(a)[:2] for a in actions]

    o1, _ = env.reset(seed=7)
    copy = pickle.loads(pickle.dumps(env.unwrapped))
    first = rollout(env)
    o2, _ = env.reset(seed=7)
    np.testing.assert_array_equal(o1, o2)
    for (a, ra), (b, rb), (c, rc) in zip(first, rollout(env), rollout(copy), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
        assert ra == rb == rc
    assert env.observation_space.contains(o1)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) >= 4  # grass, track, zone, cars


def test_env_rejects_bad_actions():
    env = StadiumRacingDZEnv()
    env.reset(seed=0)
    for bad in ([0.0], [0.0, float("nan")], [0.0, 1.5], [[0.0, 0.0]]):
        with pytest.raises(ValueError, match="action"):
            env.step(np.array(bad, np.float32))


def test_dynamic_bicycle_saturates_at_the_friction_limit():
    car = CarParams()
    state = rt.VehicleState(0.0, 0.0, 0.0, 20.0, 0.0, 0.0)
    for _ in range(30):
        state = dynamic_bicycle_step(state, np.array([1.0, 0.0]), car, 0.1)
    lateral_g = state.vx * state.r / 9.81
    assert 0.3 < lateral_g < 1.1 * car.mu  # the kinematic bicycle would turn at ~8 g here


#: seeded episodes of ``racing`` as it was before the circuit (commit f5e2454), under the
#: action streams of `test_racing_stadium_reproduces_racing_before_the_circuit`: steps, return,
#: the final arc-length (also checked there at the time: every observation, reward, flag and
#: the planner model's outputs along them hashed the same)
BEFORE_THE_CIRCUIT = {
    0: (71, 1371.4146535006003, 108.30058834158376),
    1: (377, -836.8715181451538, 48.45032185116415),
    2: (66, 1208.5250899479377, 95.71636348697578),
    3: (344, -1134.7446917386244, 28.403919858498227),
    4: (29, 193.26675367492152, 36.556090666061976),
    5: (359, -713.7571954024825, 38.0296399056854),
}


@pytest.mark.parametrize("seed", sorted(BEFORE_THE_CIRCUIT))
def test_racing_stadium_reproduces_racing_before_the_circuit(seed):
    """``racing-stadium`` is the old ``racing``, episode for episode: the stadium, the fixed
    opponent on the centreline and the 600-step limit draw the same episodes (the circuit's
    opponent draws come after the zone's and are skipped for a task without them)."""
    env = envs.make("racing-stadium")
    model = env.unwrapped.planner_model()
    assert model.params.target_frame == "track" and model.max_lateral_accel is not None
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    total, steps = 0.0, 0
    while True:
        if seed % 2 == 0:
            u = np.array([rng.uniform(-0.15, 0.15), rng.uniform(0.0, 1.0)], np.float32)
        else:
            u = rng.uniform(-1, 1, 2).astype(np.float32)
        _, r, term, trunc, info = env.step(u)
        total, steps = total + r, steps + 1
        if term or trunc:
            break
    want_steps, want_return, want_s = BEFORE_THE_CIRCUIT[seed]
    assert steps == want_steps and env.unwrapped.task.max_steps == 600
    assert total == pytest.approx(want_return, rel=1e-9)
    assert info["s"] == pytest.approx(want_s, rel=1e-9)
