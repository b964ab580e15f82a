"""``racing`` (App. B.3 on the circuit): the track, the opponent drawn per episode, the binding
time limit, world-frame targets and the constant-velocity opponent in the planner's model.
The stadium (``racing-stadium``): `tests.test_racing_dz`."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import envs
from envs.racing import task as rt
from envs.racing.env import RacingDZEnv
from envs.racing.model import STADIUM_MODEL, ModelParams, RacingModel
from envs.racing.planner import collision_cost
from envs.racing.track import CircuitParams, closed_spline

P = rt.TaskParams()
TRACK = CircuitParams().build()
F64 = torch.float64


# --- the circuit ----------------------------------------------------------------------------


def test_circuit_curvature_varies_from_straights_to_tight_corners():
    kappa = np.abs(TRACK.curvature)
    smooth = np.convolve(np.concatenate([kappa[-2:], kappa, kappa[:2]]), np.ones(5) / 5, "valid")
    assert 24.0 < 1.0 / smooth.max() < 28.0  # the chicane's first turn, R ≈ 26 m
    straight = smooth < 1 / 200  # R > 200 m
    assert straight.sum() * np.mean(TRACK.seg_len) > 250.0  # long straights
    # turns both ways (the chicane) and every radius in between
    assert TRACK.curvature.min() < -1 / 30 and TRACK.curvature.max() > 1 / 30
    assert np.histogram(1 / smooth.clip(1e-3), bins=[25, 50, 200])[0].min() >= 5
    assert 910.0 < TRACK.length < 930.0 and TRACK.half_width == 5.0
    # the same track every time: no randomness in building it
    np.testing.assert_array_equal(CircuitParams().build().points, TRACK.points)


def test_circuit_closes_smoothly_and_keeps_clear_of_itself():
    pts, hw = TRACK.points, TRACK.half_width
    assert np.allclose(pts[0], CircuitParams().control[0])
    # evenly spaced, also across the start line
    assert np.ptp(TRACK.seg_len) < 0.05 * np.mean(TRACK.seg_len)
    # one counter-clockwise loop, the heading continuous over the start line
    assert TRACK.dheading.sum() == pytest.approx(2 * math.pi, abs=1e-9)
    assert np.abs(TRACK.dheading).max() < 0.15
    # C2 spline: the curvature changes as little across the start line as anywhere else
    dk = np.abs(np.diff(np.concatenate([TRACK.curvature, TRACK.curvature[:1]])))
    assert dk[-1] <= 1.5 * np.percentile(dk, 99) and dk.max() < 0.01
    # the track never comes within two half-widths of itself (Track.project relies on it)
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    ds = np.abs(TRACK.s[:-1][:, None] - TRACK.s[:-1][None])
    ds = np.minimum(ds, TRACK.length - ds)
    assert d[ds > 40.0].min() > 2 * hw + 10.0
    # the centreline passes through every control point
    for c in CircuitParams().control:
        assert np.linalg.norm(pts - c, axis=1).min() < 0.6


def test_closed_spline_is_a_circle_through_points_on_a_circle():
    t = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    pts = closed_spline(np.stack([30 * np.cos(t), 30 * np.sin(t)], -1), 0.5)
    radius = np.linalg.norm(pts, axis=1)
    assert np.abs(radius - 30.0).max() < 0.02
    track = rt.Track(pts, 3.0)
    assert track.curvature == pytest.approx(np.full(len(pts), 1 / 30), abs=2e-3)


# --- the opponent and the time limit --------------------------------------------------------


def test_opponent_is_drawn_per_episode_within_its_ranges():
    env = envs.make("racing")
    tops, offsets, amplitudes = [], [], []
    for seed in range(40):
        env.reset(seed=seed)
        e = env.unwrapped
        tops.append(e.sim.opp_top)
        line = e.opp_line
        offsets.append(line.offset)
        amplitudes.append(line.amplitude)
        ey = line.ey(TRACK.s[:-1])
        assert np.abs(ey).max() <= P.opponent_offset + P.opponent_weave + 1e-9
        assert line.ey(0.0) == pytest.approx(line.ey(TRACK.length))  # the line closes
    lo, hi = P.opponent_speed - P.opponent_speed_spread, P.opponent_speed + P.opponent_speed_spread
    assert lo <= min(tops) < lo + 1.0 and hi - 1.0 < max(tops) <= hi
    assert min(offsets) < -1.0 and max(offsets) > 1.0 and max(amplitudes) > 0.7
    env.reset(seed=3)
    first = (env.unwrapped.sim.opp_top, env.unwrapped.opp_line)
    env.reset(seed=3)
    assert (env.unwrapped.sim.opp_top, env.unwrapped.opp_line) == first


def test_opponent_drives_its_line_and_reports_its_pose():
    env = envs.make("racing")
    env.reset(seed=5)
    e = env.unwrapped
    prev = e.opp
    for _ in range(40):
        env.step(np.zeros(2, np.float32))
        opp, line = e.opp, e.opp_line
        s, ey = TRACK.project((opp.x, opp.y))
        assert ey == pytest.approx(line.ey(e.opp_s), abs=0.02)
        assert s == pytest.approx(e.opp_s % TRACK.length, abs=0.05)
        # the reported velocity is the motion between steps (to the step's Euler accuracy)
        moved = np.array([opp.x - prev.x, opp.y - prev.y]) / P.dt
        np.testing.assert_allclose(rt.world_velocity(prev), moved, atol=0.35)
        prev = opp


def test_time_limit_binds_an_opponent_speed_car_cannot_finish():
    """With ``opponent_time_share`` 1 the limit is one step short of the fastest opponent's
    arrival from its farthest start: every opponent the task draws is short of the ego's
    goal line when time runs out, so a car that stays behind it cannot finish."""
    env = envs.make("racing")
    limit = env.unwrapped.task.max_steps
    assert limit == rt.time_limit_steps(TRACK, P) and 750 < limit < 850
    speed = rt.OpponentSpeed.of(TRACK, P)
    goal = TRACK.length
    top = P.opponent_speed + P.opponent_speed_spread
    for v_max, gap in ((top, P.opponent_gap[1]), (top, P.opponent_gap[0]), (top - 2.0, 25.0)):
        s, v = gap, speed(gap, v_max)
        for _ in range(limit):
            s += v * P.dt
            v = speed(s, v_max)
        assert s < goal  # still short of the goal when time runs out
    s, v = P.opponent_gap[1], speed(P.opponent_gap[1], top)  # one more step and it is there
    for _ in range(limit + 1):
        s += v * P.dt
        v = speed(s, top)
    assert s >= goal
    # the env: the fastest opponent from its farthest start, the ego kept 5 m behind it on
    # its line: truncated at the limit, never at the goal
    task = dataclasses.replace(P, opponent_speed_spread=0.0, opponent_speed=top,
                               opponent_gap=(P.opponent_gap[1], P.opponent_gap[1]))  # fmt: skip
    env = RacingDZEnv(task=task)
    env.reset(seed=0)
    e = env.unwrapped
    assert e.task.max_steps == limit
    for _ in range(limit):
        s = e.opp_s - 5.0
        ey = float(e.opp_line.ey(s))
        x, y = TRACK.to_xy(s, ey)
        ego = rt.VehicleState(float(x), float(y), float(TRACK.frame(s)[2]), e.opp_v, 0.0, 0.0)
        e.place(ego, s, ey, 0.0, e.opp_s, top)
        _, _, term, trunc, info = env.step(np.zeros(2, np.float32))
        assert not info["is_success"]
        if term or trunc:
            break
    assert trunc and not term and e.steps == limit


# --- the planner's model --------------------------------------------------------------------


@pytest.fixture(scope="module")
def circuit():
    env = envs.make("racing")
    env.reset(seed=7)
    for _ in range(15):
        env.step(np.array([0.0, 0.5], np.float32))
    model = env.unwrapped.planner_model()
    return env, model, torch.as_tensor(model.planner_state(env))


def test_model_defaults_are_the_papers(circuit):
    env, model, _ = circuit
    assert model.params == ModelParams() and env.unwrapped.model_params == ModelParams()
    assert model.params.target_frame == "world" and model.max_lateral_accel is None
    assert model.params.opponent == "constant_velocity"
    assert envs.make("racing-stadium").unwrapped.planner_model().params == STADIUM_MODEL


def test_world_frame_targets(circuit):
    _, model, x = circuit
    v = model.params.world_speed
    a = torch.tensor([[-1.0, -1.0], [1.0, 0.5], [0.0, 0.0], [3.0, -3.0]], dtype=F64)
    torch.testing.assert_close(
        model.target(a), torch.tensor([[-v, -v], [v, v / 2], [0, 0], [v, -v]], dtype=F64)
    )
    x = x.clone()
    x[2], x[3], x[4] = 2.0, 12.0, 1.0  # yaw 2 rad, body velocity (12, 1)
    c, s = math.cos(2.0), math.sin(2.0)
    want = torch.tensor([12 * c - s, 12 * s + c], dtype=F64)
    torch.testing.assert_close(model.tracked(x), want)
    torch.testing.assert_close(model.world_velocity(x), want)
    # the track frame still scores the passing reward and the observation
    x[8] = 0.1
    v_t = float(model.track_velocity(x)[0])
    assert v_t == pytest.approx(12 * math.cos(0.1) - math.sin(0.1))
    # the error's components, also broadcast over candidates [M, 1] x [1, K]
    targets = model.target(torch.rand(3, 1, 2, dtype=F64) * 2 - 1)
    xs = x.expand(1, 5, model.nx)
    parts = model.tracking_error_parts(xs, targets)
    full = model.tracked(xs) - targets
    assert parts[0].shape == (3, 5)
    torch.testing.assert_close(torch.stack(parts, -1), full)
    # the track-frame option maps as the stadium's
    track = RacingModel(model.track, model.task, model.car, ModelParams(target_frame="track"))
    torch.testing.assert_close(track.target(torch.zeros(2, dtype=F64)),
                               torch.tensor([15.0, 0.0], dtype=F64))  # fmt: skip
    torch.testing.assert_close(track.tracked(x), model.track_velocity(x))


def test_opponent_is_predicted_at_constant_velocity(circuit):
    env, model, x0 = circuit
    e = env.unwrapped
    opp = rt.world_velocity(e.opp)
    np.testing.assert_allclose(x0[11:15].numpy(), [e.opp.x, e.opp.y, *opp])
    assert x0[9] == e.opp_s and x0[10] == e.opp_v
    u = torch.zeros(2, dtype=F64)
    x, dt = x0, e.task.dt
    for k in range(1, 11):  # the horizon: a straight line at its current velocity
        x = model.dynamics(x, u)
        np.testing.assert_allclose(x[11:13].numpy(), [e.opp.x + k * dt * opp[0],
                                                     e.opp.y + k * dt * opp[1]], rtol=1e-12)  # fmt: skip
        torch.testing.assert_close(x[13:], x0[13:])  # its velocity and the zone stay
        assert float(x[9]) == pytest.approx(e.opp_s + k * dt * e.opp_v)
        torch.testing.assert_close(model.opponent_position(x), x[11:13])
    # eq. (44) against the predicted point, not the opponent's line
    hit = x0.clone()
    hit[11:13] = x0[0:2] + torch.tensor([1.0, 0.5], dtype=F64)
    assert float(collision_cost(model, hit)) == 1.0 and bool(model.terminated(hit))
    line = RacingModel(model.track, model.task, model.car, dataclasses.replace(
        ModelParams(), opponent="line"))  # fmt: skip
    assert float(collision_cost(line, hit)) == 0.0  # on the centreline at s_o, far ahead
    torch.testing.assert_close(line.dynamics(x0, u)[11:15], x0[11:15])
    # the observation sees the predicted point as the env sees the opponent
    obs = env.unwrapped._obs()
    np.testing.assert_allclose(model.observe(x0).numpy(), obs, rtol=1e-5, atol=1e-4)


def test_overtakes_are_marked():
    model = envs.make("racing").unwrapped.planner_model()
    s = np.linspace(0.0, 60.0, 61)
    ego = TRACK.to_xy(s, np.full_like(s, 3.0))
    opp = TRACK.to_xy(20.25 + 0.5 * s, np.zeros_like(s))[:, None]  # passed at s = 40.5
    label, steps = model.marks(ego, opp)
    assert label == "overtake" and steps.tolist() == [41]
    assert model.marks(ego, opp[:, :0])[1].size == 0
