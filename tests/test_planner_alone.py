"""App. E's "MPPI used alone": the low level, driven by fixed high-level policies, on the real envs.

The figures of the slow tests are in the README (`python -m rlmpc.tools.planner_alone`).
"""

from __future__ import annotations

import pytest

from rlmpc.tools import planner_alone
from rlmpc.tools.planner_alone import run_alone


def test_scripted_targets_land_the_lander_and_the_command_prints_its_figures(capsys, tmp_path):
    """Two episodes with zones: the planner, told where to go, lands both between the flags."""
    planner_alone.main(["--env", "lunarlander", "--episodes", "2", "--out", str(tmp_path)])
    key, value = capsys.readouterr().out.strip().splitlines()[-1].split(": ")
    assert key == "planner_alone_lunarlander_scripted_success_rate" and float(value) == 1.0
    assert (tmp_path / "alone_scripted.json").is_file()
    assert (tmp_path / "alone_scripted_episodes.png").is_file()


def test_paper_literal_effort_keeps_the_engines_firing_on_the_pad():
    """Table 5's w_act on ||u||² (the paper's literal eq. 43) cannot brake: the lander crashes
    where the preset's cost (effort on engine power, attitude term) lands it."""
    literal, _, _ = run_alone("lunarlander", 2, record=0, w_act=20.0, effort="control",
                              w_attitude=0.0)  # fmt: skip
    assert literal["success_rate"]["mean"] == 0.0


def test_bad_planner_options_are_refused_naming_them(capsys):
    with pytest.raises(SystemExit) as err:
        planner_alone.main(["--env", "lunarlander", "--set", "effort=fuel"])
    assert err.value.code == 2 and "effort" in capsys.readouterr().err


@pytest.mark.slow
def test_scripted_targets_land_at_least_80_percent_of_50_episodes():
    """The issue's bar for the low level on its own (README: planner alone)."""
    summary, _, _ = run_alone("lunarlander", 50, record=0)
    assert summary["success_rate"]["mean"] >= 0.8, summary


@pytest.mark.slow
def test_scripted_targets_finish_most_racing_episodes():
    summary, _, _ = run_alone("racing", 50, record=0)
    assert summary["success_rate"]["mean"] >= 0.8, summary
