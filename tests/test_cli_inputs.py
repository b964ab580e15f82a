"""Bad input is refused before anything starts: every command's options, alone and together.

The five inputs that used to reach Ray or waste a run are refused by name; a seeded
property-based test (Hypothesis) then throws random values at every option of ``launch.py``
and of ``rlmpc.reproduce``: each draw is either refused (exit status 2, a message naming an
option) or accepted by the same parse and pre-start checks a real run goes through. No draw
may raise anything else, and none starts Ray (``ray.init`` fails the test if called).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import envs
from common.checks import writable_dir
from rlmpc.reproduce.__main__ import build_parser as reproduce_parser
from rlmpc.reproduce.__main__ import main as reproduce_main
from rlmpc.run import cli
from rlmpc.run.config import TrainConfig


@pytest.fixture(autouse=True)
def no_ray(monkeypatch, tmp_path):
    """Ray must never start here; relative output paths land in a temporary directory."""
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started by a command that should have been refused")

    monkeypatch.setattr(ray, "init", refuse)
    import rlmpc.run.train

    monkeypatch.setattr(rlmpc.run.train, "train", refuse)
    monkeypatch.chdir(tmp_path)


def outcome(fn, argv: list[str]) -> tuple[int | None, str]:
    """``fn(argv)``'s exit status (None: returned) and what it wrote to stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            fn(argv)
        except SystemExit as stop:
            return (stop.code if isinstance(stop.code, int) else 1), err.getvalue()
    return None, err.getvalue()


def options_of(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings if s.startswith("--")}


def names_an_option(message: str, known: set[str]) -> bool:
    """The message points at one of the command's options (``argument --x`` or ``--x/--y``)."""
    return any(o in known for o in re.findall(r"--[a-z0-9-]+", message))


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--seed", "-1"], "--seed"),
        (["--eval-seed", "-1"], "--eval-seed"),
        (["--learning-rate", "inf"], "--learning-rate"),
        (["--runs-dir", "/proc/x"], "--runs-dir"),
        (["--ent-coef", "inf"], "--ent-coef"),
        (["--seed", str(2**32)], "--seed"),
        (["--eval-seed", str(2**32 - 5)], "--eval-seed"),  # its 50 episodes' seeds overflow
        (["--clip-range", "nan"], "--clip-range"),
        (["--actor-timeout", "inf"], "--actor-timeout"),
        (["--noise-sigma", "inf"], "--noise-sigma"),
        (["--ray-address", "not an address"], "--ray-address"),
        (["--actor-resources", "x=inf"], "--actor-resources"),
    ],
)
def test_the_inputs_that_reached_ray_are_refused_by_name(argv, option):
    code, err = outcome(cli.main, ["--env", "acrobot", *argv])
    assert code == 2, err
    assert option in err, err


def test_a_run_directory_that_holds_a_run_is_refused_before_anything_starts(tmp_path):
    run = tmp_path / "runs" / "taken"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "ckpt_000001.pt").write_bytes(b"x")
    code, err = outcome(cli.main, ["--runs-dir", str(tmp_path / "runs"), "--run-name", "taken"])
    assert code == 2 and "--run-name" in err and "--resume" in err, err


def test_evaluate_and_the_baselines_refuse_bad_seeds_and_outputs():
    from rlmpc.baselines.rllib import main as rllib_main
    from rlmpc.run.evaluate import main as evaluate_main

    for argv, option in [
        (["--checkpoint", "x", "--seed", "-1"], "--seed"),
        (["--checkpoint", "x", "--episodes", "0"], "--episodes"),
        (["--checkpoint", "x", "--out", "/proc/x"], "--out"),
        (["--checkpoint", "x", "--seed", str(2**32 - 1), "--episodes", "2"], "--seed"),
        (["--checkpoint", "/nonexistent/run"], "--checkpoint"),
    ]:
        code, err = outcome(evaluate_main, argv)
        assert code == 2 and option in err, (argv, err)
    from rlmpc.baselines.planner_alone import main as alone_main

    for argv, option in [(["--seed", "-1"], "--seed"), (["--out", "/proc/x"], "--out")]:
        code, err = outcome(alone_main, ["--env", "acrobot", "--episodes", "1", *argv])
        assert code == 2 and option in err, (argv, err)
    base = ["--algo", "ppo", "--env", "acrobot", "--out", "w"]
    for argv, option in [
        (["--env-steps", "100", "--seed", "-1"], "--seed"),
        (["--env-steps", "0"], "--env-steps"),
        (["--env-steps", "100", "--eval-seed", "nan"], "--eval-seed"),
        (["--env-steps", "100", "--eval-episodes", "-3"], "--eval-episodes"),
    ]:
        code, err = outcome(rllib_main, base + argv)
        assert code == 2 and option in err, (argv, err)


# -- the property-based test -------------------------------------------------------------

#: texts a user might type (or mistype) for any option
_SPECIAL = [
    "-1", "0", "1", "2", "64", "-0.5", "0.5", "1.5", "nan", "NaN", "inf", "-inf", "+inf",
    "1e308", "-1e308", "1e-320", "1e400", "4294967295", "4294967296", "9223372036854775808",
    "99999999999999999999999", "abc", "", " ", "True", "none", "None", "x=y", "=1", "a=",
    "raise=2", "raise=0.5", "stall=nan", "nan_obs=1e-3", "carla=1", "carla=-1", "k=v=1",
    "carla=inf", "x=1e400", "x=nan",
    "/proc/x", "..", "runs/a b", "auto", "localhost:6379", "ray://h:10001", "h:0", "cuda",
    "cuda:0", "cpu", "cuda:x", "fixed", "adaptive", "loss", "sample", "track", "quad",
]  # fmt: skip


def _texts():
    return st.one_of(
        st.sampled_from(_SPECIAL),
        st.integers(-(10**20), 10**20).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.text(alphabet="abcxyz0123456789=.-_/ ", max_size=8),
    )


def _draws(parser: argparse.ArgumentParser, skip: set[str]):
    """argv lists of 1-4 options of ``parser``, each with random values."""
    actions = [
        a for a in parser._actions
        if a.option_strings and not set(a.option_strings) & skip
        and not isinstance(a, argparse._HelpAction)
    ]  # fmt: skip

    @st.composite
    def one(draw):
        a = draw(st.sampled_from(actions))
        flag = max(a.option_strings, key=len)
        if isinstance(a, argparse.BooleanOptionalAction):
            return [draw(st.sampled_from([s for s in a.option_strings if s.startswith("--")]))]
        if a.nargs == 0:  # store_true
            return [flag]
        if a.nargs in ("*", "+"):
            lo = 0 if a.nargs == "*" else 1
            return [flag, *draw(st.lists(_texts(), min_size=lo, max_size=3))]
        if a.choices is not None and draw(st.booleans()):
            return [flag, str(draw(st.sampled_from(list(a.choices))))]
        return [flag, draw(_texts())]

    return st.lists(one(), min_size=1, max_size=4).map(lambda parts: sum(parts, []))


_LAUNCH = cli.build_parser(envs.DEFAULT_ENV)


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(env=st.sampled_from(envs.names(local=True)), argv=_draws(_LAUNCH, {"--env"}))
def test_every_launch_option_is_refused_by_name_or_accepted_by_the_run_checks(env, argv):
    """Random values for every option of ``launch.py``, several at once: exit 2 naming an
    option, or a config that the run's own pre-start checks pass and its specs build from."""
    known = options_of(_LAUNCH)
    result: list[cli.Invocation] = []
    code, err = outcome(lambda a: result.append(cli.parse(a)), ["--env", env, *argv])
    if code is not None:
        assert code == 2, (argv, err)
        assert names_an_option(err, known), (argv, err)
        return
    assert_runnable(result[0].cfg)


def assert_runnable(cfg: TrainConfig) -> None:
    """What an accepted config must give a run: its specs, finite floats, seeded streams that
    accept its seeds (the calls the actors, the learner and the evaluator make), a writable
    run directory."""
    cfg.worker_spec(), cfg.eval_spec(cfg.run.final_eval_episodes), cfg.schedule  # noqa: B018
    assert all(0 < v < math.inf for v in cfg.run.actor_resource_dict.values())  # Ray's bundles
    assert cfg.iterations >= 1 and cfg.fragment_len >= 1
    for section in dataclasses.fields(cfg):
        part = getattr(cfg, section.name)
        for f in dataclasses.fields(part):
            value = getattr(part, f.name)
            for v in value if isinstance(value, tuple) else (value,):
                if isinstance(v, float):
                    assert math.isfinite(v), (section.name, f.name, value)
    run = cfg.run
    np.random.SeedSequence([run.seed, 0, 0]).generate_state(4)  # a rollout worker's streams
    torch.Generator().manual_seed(run.seed)  # the learner's initial weights
    last = run.first_eval_seed + max(run.eval_episodes, run.final_eval_episodes) - 1
    torch.Generator().manual_seed(run.first_eval_seed)  # an evaluation's planner noise
    np.random.default_rng(last)  # the last evaluation episode's reset
    assert writable_dir(run.runs_dir) is None


#: every field a --config file may set (the default env's sections)
_FIELDS = [
    (section, f.name)
    for section, klass in TrainConfig.section_classes(envs.DEFAULT_ENV).items()
    for f in dataclasses.fields(klass) if f.init
]  # fmt: skip


def _yaml_values():
    """What a YAML file can hold for one field: scalars of every type, lists, null."""
    scalar = st.one_of(
        st.none(), st.booleans(), st.integers(-(10**20), 10**20),
        st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(_SPECIAL),
        st.text(alphabet="abcxyz0123456789=.-_/ ", max_size=6),
    )  # fmt: skip
    return st.one_of(scalar, st.lists(scalar, max_size=3))


@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(entries=st.lists(st.tuples(st.sampled_from(_FIELDS), _yaml_values()), min_size=1,
                        max_size=4))  # fmt: skip
def test_every_config_file_field_is_refused_by_name_or_accepted_by_the_run_checks(entries):
    """Random values of every type for the fields of a ``--config`` file, several at once:
    exit 2 naming the file's field or an option, or a config the run's checks pass."""
    import yaml

    data: dict[str, dict] = {}
    for (section, name), value in entries:
        data.setdefault(section, {})[name] = value
    with open("fuzz.yaml", "w") as f:  # the test's own directory (`no_ray`)
        yaml.safe_dump(data, f)
    known = options_of(_LAUNCH)
    result: list[cli.Invocation] = []
    code, err = outcome(lambda a: result.append(cli.parse(a)), ["--config", "fuzz.yaml"])
    if code is not None:
        assert code == 2, (data, err)
        field = re.search(r"fuzz\.yaml: (unknown field )?\w+\.\w+", err)
        assert field or names_an_option(err.replace("--config", ""), known), (data, err)
        return
    assert_runnable(result[0].cfg)


_REPRODUCE = reproduce_parser()


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(argv=_draws(_REPRODUCE, {"--from-results", "--dry-run", "--help"}))
def test_every_reproduce_option_is_refused_by_name_or_planned(argv):
    """``rlmpc.reproduce`` in ``--dry-run`` (it plans the cells and stops before Tune): exit 2
    naming an option, or a plan."""
    known = options_of(_REPRODUCE)
    code, err = outcome(reproduce_main, [*argv, "--dry-run"])
    assert code in (None, 0, 2), (argv, err)
    if code == 2:
        assert names_an_option(err, known) or "EXPERIMENT" in err or "invalid choice" in err, (
            argv, err,
        )  # fmt: skip
