"""App. E's "pure MPPI": the planner's objective = −r̂ (planners/reward_cost.py), run alone
(rlmpc/baselines/planner_alone.py, rlmpc/baselines/mppi.py); and the default objective unchanged."""

from __future__ import annotations

import math

import pytest
import torch

from common.checks import ConfigError
from envs import planner_config
from planners.costs import CompositeCost, build_planner, running_cost
from planners.mppi import rollout
from planners.reward_cost import RewardCost
from rlmpc.baselines import planner_alone
from rlmpc.baselines.mppi import run_pure_mppi_cell
from rlmpc.baselines.planner_alone import run_alone
from rlmpc.run import cli
from tests import toy_env
from tests.conftest import seed_offset
from tests.test_costs import F64, model_and_state


def minus_return_twin(model, states, controls, terminal: bool = True) -> torch.Tensor:
    """Plain loop: −Σ_k (r̂(x_k, u_k) + R_T(x_{k+1})), stopping after the first terminal x_{k+1}."""
    out = []
    for path, u in zip(states, controls, strict=True):
        total = 0.0
        for k in range(u.shape[0]):
            total += float(model.reward(path[k], u[k]))
            if terminal:
                total += float(model.terminal_reward(path[k + 1]))
            if bool(model.terminated(path[k + 1])):
                break
        out.append(-total)
    return torch.tensor(out, dtype=F64)


def acrobot_paths():
    """Six 10-step paths: hanging (the tip in a zone put on it, or not), and swinging near the
    top, where some reach the goal height within the horizon."""
    model, x0 = model_and_state("acrobot")
    g = torch.Generator().manual_seed(1)
    x = x0.repeat(6, 1)
    x[:, :4] = 0.0
    x[1, 4:8] = torch.tensor([0.0, -2.0, 0.8, 0.8])  # zone on the hanging tip: −51 per step
    x[2:, 0] = math.pi - torch.tensor([1.0, 1.2, 1.4, 2.2])
    x[2:, 2] = 1.5
    u = torch.rand(6, 10, 1, generator=g, dtype=F64) * 2 - 1
    return model, rollout(model.dynamics, x, u), u


def lunar_paths():
    """Eight 10-step paths drifting right near the viewport's edge: some leave it within H
    (terminal: gymnasium's −100), the others do not."""
    model, x0 = model_and_state("lunarlander")
    g = torch.Generator().manual_seed(2)
    x = x0.repeat(8, 1)
    x[:, 0] = torch.linspace(0.85, 0.99, 8, dtype=F64)
    x[:, 1] = torch.linspace(0.2, 0.6, 8, dtype=F64)
    u = torch.rand(8, 10, 2, generator=g, dtype=F64) * 2 - 1
    return model, rollout(model.dynamics, x, u), u


@pytest.mark.parametrize("paths", [acrobot_paths, lunar_paths])
@pytest.mark.parametrize("terminal", [True, False])
def test_reward_objective_is_minus_the_reward_model_summed_until_termination(paths, terminal):
    model, states, u = paths()
    ended = model.terminated(states[:, 1:]).any(-1)
    assert ended.any() and not ended.all()  # both cases are checked
    cost = RewardCost(model, terminal).path_sum(states, u, torch.zeros(len(u), 1, model.nt))
    torch.testing.assert_close(cost, minus_return_twin(model, states, u, terminal))


def test_acrobot_reward_objective_by_hand():
    """Hanging still for H steps: −1 per step, −50 more per step with the tip in the zone."""
    model, states, u = acrobot_paths()
    cost = RewardCost(model).path_sum(states, u, torch.zeros(6, 1, 2))
    assert float(cost[0]) == pytest.approx(10.0, abs=1e-9)  # swings a little: no zone, no goal
    assert float(cost[1]) == pytest.approx(510.0, abs=1e-9)


def test_planner_with_reward_objective_scores_its_plans_by_minus_the_return():
    model, states, _ = lunar_paths()
    config = planner_config("lunarlander", objective="reward", num_samples=16)
    assert isinstance(running_cost(model, config), RewardCost)
    x = states[:, 0]
    a = torch.zeros(len(x), 2, model.na, dtype=F64)  # two candidates: the target is ignored
    plan = build_planner(model, config).plan(
        x,
        a,
        torch.zeros(len(x), 10, model.nu, dtype=F64),
        generator=torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(plan.controls[:, 0], plan.controls[:, 1])
    torch.testing.assert_close(plan.costs[:, 0], minus_return_twin(model, plan.paths[:, 0],
                                                                   plan.controls[:, 0]))  # fmt: skip


# the default objective, eq. (38): values computed before `objective` existed (same inputs)
_BEFORE = {
    "acrobot": ([129.5011073921591, 112.51172619611205, 114.65502573106723],
                [-0.19071994723082544, 0.9999999278278642, 0.5824685106763914],
                [1348.5670839513425, 1016.6859416230764, 926.7260347657873]),
    "lunarlander": ([58.360985479876376, 62.16640849422443, 59.56755916827497],
                    [-0.15287297597463761, 0.1045348558495817, 0.8710718458806569,
                     -0.8611270667416989, 0.27290994471239355, -0.022277575654887423],
                    [578.7214850742416, 600.7769952798892, 558.893865616173]),
}  # fmt: skip


@pytest.mark.parametrize("name", ["acrobot", "lunarlander"])
def test_default_objective_is_unchanged(name):
    model, x0 = model_and_state(name)
    config = planner_config(name)
    assert config.objective == "composite" and config.planning_horizon == 10
    g = torch.Generator().manual_seed(7)
    x = x0 + 0.1 * torch.randn(3, model.nx, generator=g, dtype=F64)
    x[:, model.zone_slice] = x0[model.zone_slice]
    u = torch.randn(3, model.nu, generator=g, dtype=F64)
    a = torch.rand(3, model.na, generator=g, dtype=F64) * 2 - 1
    cost_fn = running_cost(model, config)
    assert isinstance(cost_fn, CompositeCost)
    costs, first, plan_costs = (torch.tensor(v, dtype=F64) for v in _BEFORE[name])
    torch.testing.assert_close(cost_fn(x, u, model.target(a)), costs, rtol=1e-9, atol=1e-9)
    plan = build_planner(model, planner_config(name, num_samples=8)).plan(
        x, a[:, None], torch.zeros(3, 10, model.nu, dtype=F64),
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    torch.testing.assert_close(plan.first.flatten(), first, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(plan.costs.flatten(), plan_costs, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("options", "named"),
    [({"objective": "score"}, ("objective",)),
     ({"objective": "reward", "backend": "pytorch_mppi"}, ("objective", "backend")),
     ({"reward_terminal": 1}, ("reward_terminal",))],
)  # fmt: skip
def test_bad_objective_options_are_refused_naming_them(options, named):
    with pytest.raises(ConfigError, match=named[0]) as err:
        planner_config("acrobot", **options)
    assert err.value.fields == named


def test_training_refuses_the_reward_objective(capsys):
    """The policy's action would not reach the planner: nothing to learn."""
    with pytest.raises(SystemExit) as err:
        cli.parse(["--env", "acrobot", "--objective", "reward"])
    assert err.value.code == 2 and "--objective" in capsys.readouterr().err


def test_the_command_refuses_a_policy_with_the_reward_objective(capsys):
    with pytest.raises(SystemExit) as err:
        planner_alone.main(["--env", "acrobot", "--objective", "reward", "--policy", "initial"])
    assert err.value.code == 2 and "--policy" in capsys.readouterr().err


@pytest.fixture
def toy():
    yield toy_env.register()
    toy_env.unregister()


def test_pure_mppi_reaches_the_goal_of_a_dense_reward(toy):
    """The toy task's r̂ = −|p − goal| is dense: with H = 1 s and λ = 0.1, −r̂ alone steers the
    point mass to the goal; the default objective with no policy (target velocity 0) does not.

    A rate over 10 episodes, not which ones: at λ = 0.1 the planner all but picks its best
    sample, and a CPU's rounding can swap two near-tied ones. Measured: 250 of 250 reach it
    (50 episodes at each of the seed bases 20000, 21000, ..., 24000), a rate of at least 0.988
    (95 % lower bound), at which fewer than 8 of 10 happens with probability 2e-4 (binomial;
    1.2 % even at 0.95). Standing still cannot reach a goal 3 m away (the negative control)."""
    options = {"horizon": 10, "lambda_temp": 0.1}
    seed = 20_000 + seed_offset()
    pure, _, _ = run_alone("toy-point", 10, seed=seed, n_envs=10, record=0, policy="none",
                           objective="reward", **options)  # fmt: skip
    still, _, _ = run_alone("toy-point", 10, seed=seed, n_envs=10, record=0, policy="none",
                            **options)  # fmt: skip
    assert pure["success_rate"]["mean"] >= 0.8 and still["success_rate"]["mean"] == 0.0
    assert pure["final_distance"]["mean"] < 0.5 * still["final_distance"]["mean"]
    cell = run_pure_mppi_cell("toy-point", seed=0, episodes=10, eval_seed=seed, **options)
    assert cell["eval"]["eval_seed"] == seed
    assert {k: v for k, v in cell["eval"].items() if k not in ("seed", "eval_seed", "env_steps")} \
        == {k: v for k, v in pure.items() if k not in ("seed", "planner", "policy")}  # fmt: skip


def test_pure_mppi_cell_on_acrobot_has_the_keys_and_the_columns():
    cell = run_pure_mppi_cell("acrobot", seed=3, episodes=2, num_samples=16)
    assert set(cell) == {"eval", "curve", "config", "wall_time_s"} and cell["curve"] == []
    ev = cell["eval"]
    for column in ("success_rate", "steps", "reward", "danger_steps"):
        assert set(ev[column]) == {"mean", "std"}
    assert (ev["env"], ev["episodes"], ev["env_steps"]) == ("acrobot", 2, 0)
    assert (ev["seed"], ev["eval_seed"]) == (3, 1_030_000)
    assert cell["config"]["objective"] == "reward"
    assert cell["config"]["planner"]["objective"] == "reward"
    assert cell["config"]["planner"]["num_samples"] == 16


def test_pure_mppi_cell_repeats_for_a_seed(toy):
    """Same seed, same evaluation; another seed, other episodes."""
    options = {"horizon": 10, "lambda_temp": 0.1}
    first = run_pure_mppi_cell("toy-point", seed=1, episodes=3, **options)
    assert first["eval"] == run_pure_mppi_cell("toy-point", seed=1, episodes=3, **options)["eval"]
    other = run_pure_mppi_cell("toy-point", seed=2, episodes=3, **options)["eval"]
    assert other["eval_seed"] == 1_020_000 and other["reward"] != first["eval"]["reward"]


@pytest.mark.slow
def test_pure_mppi_cell_on_acrobot_repeats_for_a_seed():
    cell = run_pure_mppi_cell("acrobot", seed=3, episodes=2, num_samples=16)
    assert run_pure_mppi_cell("acrobot", seed=3, episodes=2, num_samples=16)["eval"] == cell["eval"]
