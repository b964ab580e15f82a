"""App. E's "MPPI used alone": the low level, driven by fixed high-level policies, on the real envs.

The figures of the slow tests are in docs/results.md (`python -m rlmpc.baselines.planner_alone`).
"""

from __future__ import annotations

import pytest

from rlmpc.baselines import planner_alone
from rlmpc.baselines.planner_alone import run_alone
from tests.conftest import seed_offset

#: episodes of the default-suite check, and how many must land (see the test's docstring)
LANDING_EPISODES, LANDING_NEEDED = 24, 18


def test_scripted_targets_land_the_lander_and_the_command_prints_its_figures(capsys, tmp_path):
    """The planner, told where to go, lands: at least 18 of 24 seeded episodes with zones.

    Each episode is a chaotic Box2D rollout whose outcome can flip with a reduction's float
    order (AMD vs Intel), so the test asserts a rate, not which episodes land. The committed
    50-episode figure is 0.96 (`results/planner_alone/lunarlander`; 0.95 on 20 episodes
    here); at p = 0.96 the chance that fewer than 18 of 24 land is 3e-5 (binomial), at p =
    0.9 it is 7e-3. Negative control: an untrained policy's random targets (``--policy
    initial``) land 0 of 24, and P(>= 18 of 24) at p = 0.3 is 7e-6. ``RLMPC_TEST_SEED_OFFSET``
    moves the episodes' seeds (the closing notes run it with other bases).
    """
    seed = 20_000 + seed_offset()
    planner_alone.main([
        "--env", "lunarlander", "--episodes", str(LANDING_EPISODES), "--seed", str(seed),
        "--out", str(tmp_path),
    ])  # fmt: skip
    key, value = capsys.readouterr().out.strip().splitlines()[-1].split(": ")
    assert key == "planner_alone_lunarlander_scripted_success_rate"
    assert round(float(value) * LANDING_EPISODES) >= LANDING_NEEDED, value
    assert (tmp_path / "alone_scripted.json").is_file()
    assert (tmp_path / "alone_scripted_episodes.png").is_file()


def test_paper_literal_effort_keeps_the_engines_firing_on_the_pad():
    """Table 5's w_act on ||u||² (the paper's literal eq. 43) cannot brake: the lander crashes
    where the preset's cost (effort on engine power, attitude term) lands it.

    A rate, not which episodes: 0 of 50 landed (docs/results.md), so at most 2 of 12 may; at a true
    rate of 0.05 the chance of 3 or more is 2 %, at 0.02 it is 0.2 %. Negative control: the
    preset lands 0.96, and then P(<= 2 of 12) is 1e-11."""
    literal, _, _ = run_alone("lunarlander", 12, seed=20_000 + seed_offset(), record=0,
                              w_act=20.0, effort="control", w_attitude=0.0)  # fmt: skip
    assert round(literal["success_rate"]["mean"] * 12) <= 2, literal["success_rate"]


def test_bad_planner_options_are_refused_naming_them(capsys):
    with pytest.raises(SystemExit) as err:
        planner_alone.main(["--env", "lunarlander", "--set", "effort=fuel"])
    assert err.value.code == 2 and "effort" in capsys.readouterr().err


@pytest.mark.slow
def test_scripted_targets_land_at_least_80_percent_of_50_episodes():
    """The issue's bar for the low level on its own (docs/results.md: planner alone)."""
    summary, _, _ = run_alone("lunarlander", 50, record=0)
    assert summary["success_rate"]["mean"] >= 0.8, summary


@pytest.mark.slow
def test_scripted_targets_finish_most_racing_episodes():
    summary, _, _ = run_alone("racing", 50, record=0)
    assert summary["success_rate"]["mean"] >= 0.8, summary


def test_initial_mean_acts_with_the_fresh_networks_mean():
    """``racing``'s world-frame targets: a fresh network's mean (a ≈ 0) asks the car to stand
    still, so it neither finishes nor crashes: the episodes run into the time limit. Its
    samples (``initial``) drive off in random directions instead."""
    seed = 20_000 + seed_offset()
    mean, _, model = run_alone("racing", 2, seed=seed, record=0, policy="initial-mean")
    assert mean["success_rate"]["mean"] == 0.0 and mean["collision_or_offtrack"]["mean"] == 0.0
    assert mean["steps"]["mean"] == model.task.max_steps
    # 70 % of sampled episodes end early (tuning episodes): all eight running out of time
    # has probability 0.3⁸ = 7e-5 (binomial) on any CPU's float order
    sampled, _, _ = run_alone("racing", 8, seed=seed, record=0, policy="initial")
    assert sampled["steps"]["mean"] < model.task.max_steps


def test_eval_seed_names_pure_mppis_episodes_and_only_theirs(capsys):
    summary, _, _ = planner_alone.pure_mppi("racing", 1, eval_seed=20_000, record=0,
                                            horizon=2)  # fmt: skip
    assert summary["eval_seed"] == 20_000 and summary["seed"] == 0
    with pytest.raises(SystemExit) as err:
        planner_alone.main(["--env", "racing", "--eval-seed", "20000"])
    assert err.value.code == 2 and "--eval-seed" in capsys.readouterr().err
