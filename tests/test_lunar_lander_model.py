"""Lunar Lander with a danger zone (App. B.2): the env's extras and its approximate model.

The generic env contract (checker, seeding, pickling replay, ψ, batching shapes, render)
is in test_env_contract.py; this file checks what is specific to Lunar Lander.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.box2d.lunar_lander import LunarLander, heuristic

from envs.lunar_lander.body import (
    AIRFRAME,
    DT,
    HALF_H,
    HALF_W,
    VX_OBS,
    VY_OBS,
    W_OBS,
    engine_powers,
)
from envs.lunar_lander.env import LunarLanderDZEnv
from envs.lunar_lander.model import VELOCITY_SCALE, ZONE_PENALTY, LunarLanderModel, shaping
from rlmpc.bench.model_error import one_step_errors

OUT_OF_THE_WAY = (0.7, 0.8, 0.2, 0.2)  # a zone no heuristic landing goes near


def _transitions(env: gym.Env, steps: int, seed: int, policy) -> tuple[torch.Tensor, ...]:
    """Planner states, controls, next planner states ``[N, nx]``, ``[N, nu]``, ``[N, nx]`` and
    env rewards ``[N]`` of real non-terminal steps (``policy(obs, rng) -> u``)."""
    model = env.unwrapped.planner_model()
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    xs, us, x1s, rs = [], [], [], []
    while len(xs) < steps:
        x = model.planner_state(env)
        u = np.asarray(policy(obs, rng), dtype=np.float32)
        obs, reward, terminated, truncated, _ = env.step(u)
        if terminated or truncated:
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
            continue
        xs.append(x), us.append(u), x1s.append(model.planner_state(env)), rs.append(reward)
    return tuple(torch.tensor(np.array(a), dtype=torch.float64) for a in (xs, us, x1s, rs))


def _random(obs, rng):
    return rng.uniform(-1.0, 1.0, 2)


def _heuristic_for(env: gym.Env):
    return lambda obs, rng: heuristic(env.unwrapped.lander_env, obs[:8])


# ---------------------------------------------------------------------------- the model


def test_airframe_is_box2ds_lander():
    """The derived masses are Box2D's, and the legs hang where the derivation puts them."""
    lander = LunarLander(continuous=True)
    lander.reset(seed=0)
    for _ in range(30):  # let the leg motors settle the legs on their joint limits
        lander.step(np.zeros(2))
    hull, legs = lander.lander, lander.legs
    assert AIRFRAME.mass == pytest.approx(hull.mass + legs[0].mass + legs[1].mass, rel=1e-6)
    assert AIRFRAME.hull_com == pytest.approx(hull.localCenter.y, rel=1e-5)
    # Box2D's inertia is about the body origin
    i_hull = hull.inertia - hull.mass * hull.localCenter.y**2
    m_leg = legs[0].mass
    centres = [np.array(hull.GetLocalPoint(leg.position)) for leg in legs]
    com = (hull.mass * hull.localCenter.y + m_leg * sum(c[1] for c in centres)) / AIRFRAME.mass
    inertia = i_hull + hull.mass * (hull.localCenter.y - com) ** 2
    inertia += sum(
        leg.inertia + m_leg * (c[0] ** 2 + (c[1] - com) ** 2)
        for leg, c in zip(legs, centres, strict=True)
    )
    assert AIRFRAME.com == pytest.approx(com, abs=2e-3)
    assert AIRFRAME.inertia == pytest.approx(inertia, rel=0.01)
    for leg, corners in zip(legs, AIRFRAME.leg_points, strict=True):
        w, h = 2 / 30, 8 / 30
        real = [np.array(hull.GetLocalPoint(leg.GetWorldPoint(c))) for c in ((-w, -h), (w, -h))]
        np.testing.assert_allclose(np.array(corners), np.array(real), atol=0.01)


def test_engine_constants_agree_with_a_fit_on_real_flight():
    """The derived engine effects match least-squares fits on real flight steps within 5 %.

    Regressors: main power along the body axis, side power across it, side power times
    ``sin²φ`` and ``cos²φ`` for the spin. The same fits on the model's predictions of the
    same steps give the derived constants (plus the small hull/joint-centre coupling);
    the real fits average out the engines' zero-mean dispersion noise.
    """
    env = LunarLanderDZEnv(danger_zone=OUT_OF_THE_WAY)
    x, u, x1, _ = _transitions(env, 1500, seed=1, policy=_random)
    flight = (x[:, 6:8].sum(1) + x1[:, 6:8].sum(1)) == 0
    x, u, x1 = x[flight], u[flight], x1[flight]
    pred = env.planner_model().dynamics(x, u)
    phi = x[:, 4].numpy()
    main = np.where(u[:, 0] > 0, (u[:, 0].clamp(0, 1) + 1) / 2, 0.0)
    side = np.where(u[:, 1].abs() > 0.5, u[:, 1], 0.0)
    spin = np.stack([side * np.sin(phi) ** 2, side * np.cos(phi) ** 2], 1)

    def fits(nxt: torch.Tensor) -> np.ndarray:
        dvx = ((nxt[:, 2] - x[:, 2]) / VX_OBS).numpy()
        dvy = ((nxt[:, 3] - x[:, 3]) / VY_OBS).numpy() + 10.0 * DT  # gravity is known
        dw = ((nxt[:, 5] - x[:, 5]) / W_OBS).numpy()
        along = -np.sin(phi) * dvx + np.cos(phi) * dvy
        across = np.cos(phi) * dvx + np.sin(phi) * dvy
        lstsq = lambda a, b: np.linalg.lstsq(a, b, rcond=None)[0]
        return np.concatenate(
            [lstsq(main[:, None], along), lstsq(side[:, None], across), lstsq(spin, -dw)]
        )

    real, model = fits(x1), fits(pred)
    assert model[0] == pytest.approx(AIRFRAME.main_dv, rel=1e-3)
    assert model[2] == pytest.approx(AIRFRAME.side_dw_sin2, rel=1e-2)
    assert model[3] == pytest.approx(AIRFRAME.side_dw_cos2, rel=1e-2)
    np.testing.assert_allclose(real[[0, 1, 3]], model[[0, 1, 3]], rtol=0.05)
    np.testing.assert_allclose(real[2], model[2], rtol=0.15)  # sin²φ is rarely large


def test_one_step_error_is_near_the_noise_floor():
    """Relative one-step error (rlmpc.bench.model_error) under random controls.

    Bounds, with the measured figures (600 steps, seed 0) in brackets:
    * in flight (no leg down before or after; ~98 % of steps): < 0.30 [0.21]. The floor is
      the engines' random dispersion, which the mean model cannot see: the main impulse's
      lever arm is ``4 ± 2`` px (uniform), a ±50 % spread (std 29 %) in the thrust, and the
      side engines' ±25 %. A model without engines and gravity (constant velocity) misses
      by about as much as the state moves (> 0.8);
    * contact steps (a leg down before or after, ~2 % of steps): mean miss < 1.5 per step
      [1.04; 0.69–1.11 over seeds 0–2], leg flags (0/1) included: off the pad the terrain is
      unknown, and a tumbling lander's legs hit it unpredictably;
    * overall (`one_step_errors`, the reported figure): < 0.70 [0.50; 0.33–0.52 over seeds
      0–3]: the 2 % contact steps at ~1 on top of the flight error.
    """
    env = LunarLanderDZEnv()
    model = env.planner_model()
    x, u, x1, _ = _transitions(env, 600, seed=0, policy=_random)
    err = (model.dynamics(x, u) - x1).norm(dim=-1)
    step = (x1 - x).norm(dim=-1)
    flight = (x[:, 6:8].sum(1) + x1[:, 6:8].sum(1)) == 0
    assert flight.float().mean() > 0.9
    assert err[flight].mean() / step[flight].mean() < 0.30
    coast = x.clone()
    coast[:, 0] += x[:, 2] / VX_OBS * DT / HALF_W
    coast[:, 1] += x[:, 3] / VY_OBS * DT / HALF_H
    coast_err = (coast - x1).norm(dim=-1)
    assert coast_err[flight].mean() / step[flight].mean() > 0.8
    assert err[~flight].mean() < 1.5
    result = one_step_errors("lunarlander", steps=600, seed=0, policy="random")
    assert result.relative < 0.70


def _drop(env: LunarLander, height: float) -> None:
    """Put a settled lander at rest, level, ``height`` (obs y) above its resting height on the pad."""
    for _ in range(30):  # let the legs settle on their joint limits
        env.step(np.zeros(2))
    origin, angle = np.array(env.lander.position), env.lander.angle
    target = np.array([10.0, env.helipad_y + 18 / 30 + height * 20 / 3])
    c, s = math.cos(-angle), math.sin(-angle)
    for body in [env.lander, *env.legs]:
        p = np.array(body.position) - origin
        body.position = tuple(target + np.array([c * p[0] - s * p[1], s * p[0] + c * p[1]]))
        body.angle -= angle
        body.linearVelocity, body.angularVelocity = (0.0, 0.0), 0.0


@pytest.mark.parametrize(("height", "crashes"), [(0.02, False), (0.1, True)])
def test_level_drops_on_the_pad_end_as_in_box2d(height, crashes):
    """Engines off, dropped level onto the pad: 13 cm lands (the legs fold and unfold),
    67 cm folds the legs until the hull hits, in Box2D and in the model alike."""
    lander = LunarLander(continuous=True)
    lander.reset(seed=0)
    _drop(lander, height)
    for _ in range(300):
        _, reward, terminated, *_ = lander.step(np.array([-1.0, 0.0]))
        if terminated:
            break
    assert terminated and (reward == -100.0) is crashes
    model = LunarLanderModel()
    x = torch.tensor([0.0, height, 0, 0, 0, 0, 0, 0, *OUT_OF_THE_WAY], dtype=torch.float64)
    off = torch.tensor([-1.0, 0.0], dtype=torch.float64)
    ended = False
    for _ in range(300):
        x = model.dynamics(x, off)
        ended = bool(model.terminated(x))
        if ended:
            break
    assert ended is crashes
    if not crashes:  # at rest on both legs, where Box2D rests (obs y ~ -0.001)
        assert x[6:8].tolist() == [1.0, 1.0] and abs(x[3].item()) < 1e-3
        assert abs(x[1].item()) < 0.005


def test_terminated_cases():
    model = LunarLanderModel()
    z = OUT_OF_THE_WAY
    states = {
        "hovering": ([0.1, 0.5, 0, -0.1, 0.1, 0, 0, 0, *z], False),
        "out of view": ([-1.0, 0.5, 0, 0, 0, 0, 0, 0, *z], True),
        "hull in the ground": ([0.0, -0.1, 0, 0, 0, 0, 1, 1, *z], True),
        "on its side": ([0.0, -0.02, 0, 0, 1.6, 0, 0, 0, *z], True),
        "level, legs folded": ([0.0, -0.02, 0, 0, 0.0, 0, 1, 1, *z], False),
        "hard touchdown": ([0.0, 0.0, 0, -0.6, 0, 0, 1, 0, *z], True),
        "soft touchdown": ([0.0, 0.0, 0, -0.2, 0, 0, 1, 0, *z], False),
    }
    for name, (state, expected) in states.items():
        assert bool(model.terminated(torch.tensor(state))) is expected, name
    # gymnasium's -100 on exactly those states (the +100 of coming to rest is not predicted)
    x = torch.tensor([state for state, _ in states.values()], dtype=torch.float64)
    flags = torch.tensor([expected for _, expected in states.values()])
    torch.testing.assert_close(model.terminal_reward(x), -100.0 * flags.double())


def test_reward_terms_match_the_env_and_the_zone_costs_five():
    """r̂ is the env's dense reward: the same terms on the predicted next state.

    On flight steps ``r̂ - r_env`` is exactly ``shaping(x̂') - shaping(x')`` (fuel and zone
    terms agree to float32 round-off), and the total agrees within 1.5 per step on average
    (measured ~0.7: the shaping weighs speed by 100, and the one-step speed error is
    ~0.006) with the same sign on > 80 % of the steps whose reward exceeds 1 in size.
    """
    env = LunarLanderDZEnv(danger_zone=(0.0, 0.9, 0.6, 0.6))  # the lander falls through it
    model = env.planner_model()
    x, u, x1, r_env = _transitions(env, 300, seed=2, policy=_random)
    flight = (x[:, 6:8].sum(1) + x1[:, 6:8].sum(1)) == 0
    assert model.in_danger(x1).any() and (~model.in_danger(x1)).any()
    pred = model.dynamics(x, u)
    r_hat = model.reward(x, u)
    gap = r_hat - r_env - (shaping(pred) - shaping(x1))
    assert gap[flight].abs().max() < 1e-3
    assert (r_hat - r_env)[flight].abs().mean() < 1.5
    big = flight & (r_env.abs() > 1.0)
    assert (torch.sign(r_hat[big]) == torch.sign(r_env[big])).float().mean() > 0.8
    # the zone alone: the same state with the zone over it costs exactly ZONE_PENALTY more
    state = x[0].clone()
    nxt = model.dynamics(state, u[0])
    inside, outside = state.clone(), state.clone()
    inside[8:10] = nxt[0:2]
    outside[8:10] = nxt[0:2] + 0.5
    diff = model.reward(inside, u[0]) - model.reward(outside, u[0])
    assert diff.item() == pytest.approx(-ZONE_PENALTY, abs=1e-9)


def test_env_zone_penalty_is_exactly_five():
    """Same seed, zone moved: the physics is identical and rewards differ by -5 inside."""
    over, away = (0.0, 0.9, 0.6, 0.6), (0.0, 0.9, 0.02, 0.02)
    runs = []
    for zone in (over, away):
        env = LunarLanderDZEnv(danger_zone=zone)
        env.reset(seed=4)
        runs.append([env.step(np.array([0.0, 0.0], np.float32)) for _ in range(40)])
    inside_steps = 0
    for (o_a, r_a, *_, i_a), (o_b, r_b, *_, i_b) in zip(*runs, strict=True):
        np.testing.assert_array_equal(o_a[:8], o_b[:8])
        assert i_b["in_danger"] is False
        assert r_a - r_b == pytest.approx(-ZONE_PENALTY * i_a["in_danger"], abs=1e-9)
        inside_steps += i_a["in_danger"]
    assert 0 < inside_steps < 40


def test_target_and_tracked():
    model = LunarLanderModel()
    a = torch.tensor([[1.0, -1.0], [0.2, 3.0]])
    expected = VELOCITY_SCALE * torch.tensor([[1.0, -1.0], [0.2, 1.0]])
    torch.testing.assert_close(model.target(a), expected)
    x = torch.arange(12.0)
    torch.testing.assert_close(model.tracked(x), torch.tensor([2.0, 3.0]))


def test_batched_model_equals_per_row_calls():
    """[B, K, nx] states (flight, near the pad, legs down) give the per-row results."""
    model = LunarLanderModel()
    gen = torch.Generator().manual_seed(0)
    B, K = 3, 4
    x = torch.rand(B, K, 12, generator=gen, dtype=torch.float64) - 0.5
    x[..., 1] = torch.rand(B, K, generator=gen, dtype=torch.float64) * 0.1 - 0.02
    x[..., 6:8] = (torch.rand(B, K, 2, generator=gen) > 0.5).double()
    x[..., 8:12] = torch.tensor(OUT_OF_THE_WAY, dtype=torch.float64)
    u = torch.rand(B, K, 2, generator=gen, dtype=torch.float64) * 2 - 1
    batched = (model.dynamics(x, u), model.reward(x, u), model.terminated(x), model.observe(x))
    for b in range(B):
        for k in range(K):
            row = (
                model.dynamics(x[b, k], u[b, k]),
                model.reward(x[b, k], u[b, k]),
                model.terminated(x[b, k]),
                model.observe(x[b, k]),
            )
            for full, one in zip(batched, row, strict=True):
                torch.testing.assert_close(full[b, k], one)
    assert batched[0][..., 6:8].sum() > 0  # some legs are down in the batch


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_row_rollout_equals_the_generic_rollout_bit_for_bit(dtype):
    """`LunarLanderModel.rollout_component_major` (what `planners.mppi.sample_rollout` uses for
    this model) gives `dynamics` called H times, exactly: in flight, near the pad with legs
    down and up (the contact solver), with x broadcast over the samples, controls past the
    bounds and on the engines' thresholds."""
    from planners.mppi import sample_rollout

    model = LunarLanderModel()
    gen = torch.Generator().manual_seed(3)
    B, K, H = 4, 50, 10
    x = torch.rand(B, 1, 12, generator=gen, dtype=dtype) - 0.5
    x[:2, :, 1] = torch.rand(2, 1, generator=gen, dtype=dtype) * 0.1 - 0.02  # at the pad
    x[0, :, 6:8] = 1.0
    x[..., 8:12] = torch.tensor(OUT_OF_THE_WAY, dtype=dtype)
    u = torch.rand(B, K, H, 2, generator=gen, dtype=dtype) * 2.4 - 1.2
    u[0, 0, :, 0], u[0, 1, :, 1] = 0.0, 0.5  # the thresholds: main off at 0, side at 0.5

    def generic(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:  # not the bound method
        return model.dynamics(x, u)

    fast, ref = sample_rollout(model.dynamics, x, u), sample_rollout(generic, x, u)
    assert fast.shape == ref.shape == (B, K, H + 1, 12) and fast.stride() == ref.stride()
    assert torch.equal(fast, ref)
    assert fast[..., 6:8].sum() > 0 and fast[..., 6:8].sum() < fast[..., 6:8].numel()


def test_engine_powers_and_the_danger_indicator_equal_their_definitions():
    """The float-mask forms give gymnasium's throttle map and eq. (42)'s indicator exactly."""
    u = torch.tensor([[-1.5, -0.2], [0.0, 0.5], [1e-7, -0.5], [0.3, 0.50001], [2.0, -0.9]])
    main, side = engine_powers(u)
    c = u.clamp(-1.0, 1.0)
    assert torch.equal(main, torch.where(c[:, 0] > 0, (c[:, 0] + 1) / 2, 0.0))
    assert torch.equal(side, torch.where(c[:, 1].abs() > 0.5, c[:, 1], 0.0))
    model = LunarLanderModel()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 12, generator=gen) * 2 - 1
    x[..., 8:12] = torch.tensor([0.0, 0.0, 1.0, 1.0])
    x[:4, :2] = torch.tensor([[0.5, 0.0], [-0.5, 0.5], [0.50001, 0.0], [0.0, -0.5]])  # edges
    indicator = model.danger_indicator(x)
    assert indicator.dtype == x.dtype
    assert torch.equal(indicator, model.in_danger(x).to(x.dtype))
    assert indicator[:2].tolist() == [1.0, 1.0] and indicator[2] == 0.0


def test_a_batch_of_flying_and_touching_landers_equals_per_row_calls():
    """`body_step_rows` runs the contact solver on the rows that may touch only (`touching`):
    a batch mixing landers high up, at the pad with legs up and down, and sinking fast gives
    each row's own one-row result, exactly."""
    from envs.lunar_lander.body import engine_kick, rotation, touching

    model = LunarLanderModel()
    gen = torch.Generator().manual_seed(1)
    for high in (10, 30):  # most rows touch (solved in place), or few (gathered)
        n = 40
        x = torch.rand(n, 12, generator=gen, dtype=torch.float64) - 0.5
        x[:high, 1] = 1.0  # high up: never touching
        k = high + (n - high) // 2
        x[high:k, 1] = torch.rand(k - high, generator=gen, dtype=torch.float64) * 0.06 - 0.01
        x[high:k, 6:8] = torch.tensor([1.0, 0.0], dtype=torch.float64)  # at the pad, a leg down
        x[k:, 1], x[k:, 3], x[k:, 6:8] = 0.05, -0.9, 0.0  # sinking fast towards it, legs up
        x[..., 8:12] = torch.tensor(OUT_OF_THE_WAY, dtype=torch.float64)
        u = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 2 - 1
        state = x[:, :8].t().contiguous()
        kicked = torch.empty(3, n, dtype=torch.float64)
        main, side = engine_powers(u)
        engine_kick(state, rotation(state[4]), main, side, model.gravity, out=kicked)
        assert len(touching(state, kicked)) == n - high  # exactly the rows near the pad
        batched = model.dynamics(x, u)
        rows = torch.stack([model.dynamics(x[i], u[i]) for i in range(n)])
        assert torch.equal(batched, rows)
        assert batched[high:, 6:8].sum() > 0 and batched[:high, 6:8].sum() == 0


def test_scripted_contact_solver_equals_its_python(monkeypatch):
    """The contact solver runs as TorchScript (`envs.lunar_lander.solver.contact_impulses`):
    bit for bit its own Python (`impulse_steps`, the eager ops), in float32 and float64."""
    import envs.lunar_lander.body as body
    from envs.lunar_lander.solver import impulse_steps

    assert isinstance(body.contact_impulses, torch.jit.ScriptFunction)
    gen = torch.Generator().manual_seed(2)
    for dtype in (torch.float32, torch.float64):
        n = 300
        velocity = torch.randn(3, n, generator=gen, dtype=dtype)
        r = torch.randn(4, n, generator=gen, dtype=dtype) * 0.5
        targets = torch.randn(2, n, generator=gen, dtype=dtype)
        # several calls: the JIT profiles the first ones, then runs its optimised graph
        scripted = [body.leg_impulses(velocity, r, targets) for _ in range(4)]
        with monkeypatch.context() as m:
            m.setattr(body, "contact_impulses", impulse_steps)  # the same function, eagerly
            eager = body.leg_impulses(velocity, r, targets)
        assert all(torch.equal(s, eager) for s in scripted)
        assert not torch.equal(eager, velocity)  # impulses landed


def test_planner_state_kept_from_the_step_is_the_worlds():
    """`LunarLanderModel.planner_state` hands out the state the env's reset or step read off
    Box2D (`LunarLanderDZEnv.planner_x`), a copy, equal to reading the world again."""
    import envs  # noqa: F401  (registers the ids)
    from envs.lunar_lander.airframe import body_state

    env = gym.make("rlmpc/LunarLanderDZ-v0")
    model = env.unwrapped.planner_model()
    env.reset(seed=4)
    for t in range(30):
        x = model.planner_state(env)
        base = env.unwrapped
        fresh = np.concatenate([body_state(base.lander_env), base.zone.as_tuple()])
        assert np.array_equal(x, fresh)
        x[:] = 0.0  # a copy: the env's own is untouched
        assert np.array_equal(model.planner_state(env), fresh)
        if env.step(np.array([0.6, 0.0], np.float32) if t % 3 else env.action_space.sample())[2]:
            env.reset(seed=t)


def test_path_reward_equals_reward_of_each_step():
    """`LunarLanderModel.path_reward` (x_{k+1} read off a rolled-out path) gives `reward(x_k,
    u_k)` exactly, on paths that fly, touch down and cross the zone."""
    from planners.mppi import rollout

    model = LunarLanderModel()
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(6, 12, generator=gen) - 0.5
    x[:3, 1], x[:2, 6:8] = 0.03, 1.0
    x[..., 8:12] = torch.tensor([0.0, 0.1, 0.6, 0.6])  # a zone the paths cross
    u = torch.rand(6, 10, 2, generator=gen) * 2.4 - 1.2
    paths = rollout(model.dynamics, x, u)
    expected = model.reward(paths[:, :-1], u)
    assert torch.equal(model.path_reward(paths, u), expected)
    assert (paths[..., 6:8] > 0.5).any() and (expected < -4).any()  # touching, in the zone


def test_tracking_error_parts_equal_the_error_unbound():
    """The per-component tracking error (eq. 39's cost reads it) equals `tracking_error`'s
    components, on the planner's broadcast shapes ([B, 1, K, H, nx] states, component-major,
    against [B, M, 1, 1, nt] targets)."""
    model = LunarLanderModel()
    x = torch.randn(12, 5, 3, 7).permute(2, 3, 1, 0).unsqueeze(1)  # [3, 1, 7, 5, 12]
    target = torch.randn(3, 4, 1, 1, 2)
    parts = model.tracking_error_parts(x, target)
    whole = model.tracking_error(x, target).unbind(-1)
    assert len(parts) == 2 and all(torch.equal(p, w) for p, w in zip(parts, whole, strict=True))
