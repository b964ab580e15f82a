"""The batched MPPI: bad input and options refused by name, non-finite samples, and agreement
with pytorch-mppi on the env models (helpers: `tests.test_mppi`)."""

from __future__ import annotations

import pytest
import torch

from planners.mppi import (
    make_planner,
)
from tests.test_mppi import H, K, assert_same_plan, cost, dynamics, toy, toy_inputs

# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("x", lambda x, a, w, n: (x[0], a, w, n)),
        ("a", lambda x, a, w, n: (x, a[:2], w, n)),
        ("a", lambda x, a, w, n: (x, a[:, 0], w, n)),
        ("warm", lambda x, a, w, n: (x, a, w[:, :-1], n)),
        ("warm", lambda x, a, w, n: (x, a, w[..., :1], n)),
        ("noise", lambda x, a, w, n: (x, a, w, n[:, :-1])),
        ("x", lambda x, a, w, n: (x.clone().index_fill_(1, torch.tensor([0]), torch.nan), a, w, n)),
        ("a", lambda x, a, w, n: (x, a.clone().index_fill_(2, torch.tensor([1]), torch.inf), w, n)),
        (
            "warm",
            lambda x, a, w, n: (x, a, w.clone().index_fill_(1, torch.tensor([2]), torch.nan), n),
        ),
    ],
)
def test_bad_inputs_name_the_argument(name, make):
    planner = toy()
    x, a, warm = toy_inputs()
    noise = planner.sample_noise(3, x)
    x, a, warm, noise = make(x, a, warm, noise)
    with pytest.raises(ValueError, match=rf"^{name} "):
        planner.plan(x, a, warm, noise=noise)


def test_non_finite_samples_get_zero_weight_and_all_non_finite_raises():
    def spiky(x, u, target):  # NaN cost wherever a control beyond 5 was applied
        return torch.where(u.abs().amax(-1) > 5, torch.nan, cost(x, u, target))

    planner = toy(terminal_cost=None, u_min=None, u_max=None)
    spiky_planner = make_planner(
        dynamics, spiky, 2, num_samples=K, horizon=H, lambda_temp=0.5, noise_sigma=0.5
    )
    x, a, warm = toy_inputs()
    noise = planner.sample_noise(3, x, torch.Generator().manual_seed(0))
    noise[:, :10, 3] = 10.0  # samples 0..9 of every state go through a huge control
    plan = spiky_planner.plan(x, a, warm, noise=noise)
    assert (plan.weights[:, :, :10] == 0).all()
    assert torch.isfinite(plan.controls).all()
    torch.testing.assert_close(plan.weights.sum(-1), torch.ones(3, 4, dtype=torch.float64))
    # the same plan as with those samples left out
    few = make_planner(
        dynamics, cost, 2, num_samples=K - 10, horizon=H, lambda_temp=0.5, noise_sigma=0.5
    )
    ref = few.plan(x, a, warm, noise=noise[:, 10:])
    torch.testing.assert_close(plan.controls, ref.controls)
    oracle = make_planner(dynamics, spiky, 2, backend="pytorch_mppi", num_samples=K, horizon=H)
    with pytest.raises(ValueError, match="non-finite"):  # pytorch-mppi's weights would be NaN
        oracle.plan(x, a, warm, noise=noise)
    noise[1, :, 0] = 10.0  # every sample of state 1
    with pytest.raises(ValueError, match="non-finite"):
        spiky_planner.plan(x, a, warm, noise=noise)


def test_diverging_rollouts_get_zero_weight():
    def blowup(x, u):  # the state overflows wherever the first velocity goes past 3
        nxt = dynamics(x, u)
        return torch.where(nxt[..., 2:3].abs() > 3, torch.inf, nxt)

    planner = make_planner(blowup, cost, 2, num_samples=K, horizon=H, noise_sigma=0.5)
    x = torch.zeros(2, 4, dtype=torch.float64)
    x[0, 2] = 2.95
    a = torch.zeros(2, 1, 2, dtype=torch.float64)
    plan = planner.plan(
        x, a, torch.zeros(2, H, 2, dtype=torch.float64), generator=torch.Generator().manual_seed(0)
    )
    assert (plan.weights[0] == 0).any() and torch.isfinite(plan.controls).all()


@pytest.mark.parametrize(
    ("option", "value"),
    [("num_samples", 0), ("horizon", 0), ("lambda_temp", 0.0), ("noise_sigma", -1.0),
     ("noise_sigma", [1.0, 2.0, 3.0]), ("u_min", [0.0, 0.0, 0.0]), ("u_min", 2.0)],
)  # fmt: skip
def test_bad_options_name_the_option(option, value):
    with pytest.raises(ValueError, match=option):
        toy(**{option: value})


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend"):
        toy("scipy")


@pytest.mark.parametrize("name", ["acrobot", "lunarlander", "racing"])
def test_matches_pytorch_mppi_on_env_models_with_table5_costs(name):
    """Same noise, Table-5 cost (eq. 38) on the real model: same controls, candidate by candidate."""
    import envs
    from envs import planner_config
    from planners.costs import build_planner

    env = envs.make(name)
    model = env.unwrapped.planner_model()
    states = []
    for seed in (0, 1):
        env.reset(seed=seed)
        states.append(torch.as_tensor(model.planner_state(env), dtype=torch.float64))
    x = torch.stack(states)
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, model.na, generator=g, dtype=torch.float64) * 2 - 1
    warm = 0.5 * torch.rand(2, 10, model.nu, generator=g, dtype=torch.float64) - 0.25
    config = planner_config(name, num_samples=32)
    value = lambda s: -(model.tracked(s) ** 2).sum(-1)  # eq. (41) terminal cost rides along
    batched = build_planner(model, config, value_fn=value)
    oracle = build_planner(model, config, value_fn=value, backend="pytorch_mppi")
    noise = batched.sample_noise(2, x, g)
    assert_same_plan(batched.plan(x, a, warm, noise=noise), oracle.plan(x, a, warm, noise=noise),
                     rtol=1e-9, atol=1e-9)  # fmt: skip


def test_bench_planner_command_ends_with_key_value_lines(capsys):
    import rlmpc.bench as bench

    argv = ["planner", "--batch-sizes", "1", "3", "--num-samples", "8", "--horizon", "4",
            "--repeats", "1", "--min-seconds", "0", "--threads", "1"]  # fmt: skip
    figures = bench.main(argv)
    lines = capsys.readouterr().out.strip().splitlines()[-6:]
    keys = [f"planner_B{b}_{k}" for b in (1, 3) for k in
            ("batched_env_steps_per_s", "pytorch_mppi_env_steps_per_s", "ratio")]  # fmt: skip
    assert [line.split(": ")[0] for line in lines] == keys == list(figures)
    assert all(float(line.split(": ")[1]) > 0 for line in lines)
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="CUDA"):
            bench.main(["planner", "--device", "cuda"])
