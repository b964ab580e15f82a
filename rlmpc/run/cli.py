"""``python launch.py``: parse and validate the whole configuration, then train.

Options are generated from the component dataclasses (`rlmpc.run.config`); the env's presets
(``--env``, `envs.registry.EnvSpec.presets`) set their defaults, and ``--resume RUN_DIR``
makes the stored config of that run the defaults (any option given on the command line still
wins). Every value and every rule between values is checked before Ray starts; a bad one ends
the program (status 2) naming its options, found from the error's ``fields``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import yaml

import envs
from common.checks import prog_name, ray_address_problem
from learners.policy import NetworkConfig
from learners.pompc import KLPriorConfig
from learners.ppo_loss import PPOConfig
from learners.rho import InfluenceRatioConfig
from rlmpc.run.checks import RunSpecs, resolve
from rlmpc.run.cliargs import add_dataclass_args, build_dataclass, flag, value_problem
from rlmpc.run.config import RunConfig, TrainConfig
from rlmpc.run.runlog import WandbConfig

_SECTIONS: list[tuple[str, type | None, str, str]] = [
    # (config section, class (None: the env's planner preset), help title, flag prefix)
    ("run", RunConfig, "run", ""),
    ("ppo", PPOConfig, "PPO (Table 3)", ""),
    (
        "influence_ratio",
        InfluenceRatioConfig,
        "influence ratio ρ (§4.2, Alg. 2)",
        "influence-ratio-",
    ),
    ("networks", NetworkConfig, "networks", ""),
    ("planner", None, "MPPI planner (App. C, Table 5)", ""),
    ("kl", KLPriorConfig, "PO-MPC's KL prior (Serra-Gomez et al., arXiv 2510.04280)", ""),
    ("wandb", WandbConfig, "Weights & Biases", ""),
]
_PREFIX = {section: prefix for section, _, _, prefix in _SECTIONS}


class Invocation(NamedTuple):
    """A parsed command line: the run's config and how to run it."""

    cfg: TrainConfig
    resume: Path | None = None
    ray_address: str | None = None
    serial: bool = False
    specs: RunSpecs | None = None
    """the config resolved into the components' specs (`rlmpc.run.checks.resolve`)"""
    print_config: bool = False
    """print the resolved config and stop (``--print-config``)"""


def build_parser(
    env: str, defaults: dict[str, dict[str, Any]] | None = None
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog_name("launch.py"),
        description="Train PPO-MPPI (Hori et al., arXiv 2512.17091) on an embedded local Ray, "
        "on the Ray cluster this machine belongs to, or in this one process (--serial).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue the run in RUN_DIR from its newest checkpoint")  # fmt: skip
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="a YAML config (the layout of a run's config.yaml, any subset of it: "
                        "section -> field -> value): its values replace the env's presets, and "
                        "the options given here replace its values")  # fmt: skip
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML (loadable with --config) and exit")  # fmt: skip
    backend = parser.add_mutually_exclusive_group()
    backend.add_argument("--ray-address", default=None,
                         help="Ray cluster to join ('auto': the one this machine is part of, as under "
                         "`ray submit`); default: $RAY_ADDRESS if set, else an embedded local Ray")  # fmt: skip
    backend.add_argument("--serial", action="store_true",
                         help="run every component in this process, without Ray (debugging); "
                         "the same numbers as on Ray")  # fmt: skip
    defaults = defaults or {}
    spec = envs.spec(env)
    for section, cls, title, prefix in _SECTIONS:
        cls = cls or spec.planner
        preset = {**spec.presets.get(section, {}), **defaults.get(section, {})}
        if section == "run":
            preset["env"] = env
        run = section == "run"
        add_dataclass_args(
            parser, cls, title, defaults=preset, prefix=prefix,
            notes={"env": "; ".join(f"{n}: {envs.spec(n).summary}" for n in envs.names())}
            if run else None,
        )  # fmt: skip
    return parser


def options(err: Exception, section: str) -> list[str]:
    """The command-line options of the fields an error names (``err.fields``: ``name`` within
    ``section``'s class, or ``section.name``)."""
    out = []
    for field in getattr(err, "fields", ()):
        sec, _, name = field.rpartition(".")
        out.append(flag(_PREFIX.get(sec or section, "") + name))
    return out


def _refuse(parser: argparse.ArgumentParser, err: Exception, section: str) -> None:
    named = options(err, section)
    parser.error(f"argument {'/'.join(named)}: {err}" if named else str(err))


def parse(argv: list[str] | None = None) -> Invocation:
    """Parse and validate; exits (status 2) with a message naming the bad options."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--env", default=None)
    pre.add_argument("--resume", default=None)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    stored: dict[str, dict[str, Any]] = {}
    resume = Path(known.resume) if known.resume else None
    if known.env is not None:
        try:
            envs.spec(known.env)  # a registered name, or a user's MODULE:ATTRIBUTE (imported here)
        except ValueError as err:
            build_parser(envs.DEFAULT_ENV).error(f"argument --env: {err}")
    if known.config is not None:
        if resume is not None:
            build_parser(envs.DEFAULT_ENV).error(
                "argument --config: not with --resume (a resumed run keeps its config.yaml)"
            )
        stored = _config_file(Path(known.config), known.env)
    if resume is not None:
        cfg_file = resume / "config.yaml"
        if not cfg_file.is_file():
            build_parser(envs.DEFAULT_ENV).error(f"argument --resume: {cfg_file} does not exist")
        stored = yaml.safe_load(cfg_file.read_text())
        run = stored.get("run", {})
        if "env" in run:  # the task the run trained, under today's name (`envs.resolve_task`)
            try:
                run["env"] = envs.resolve_task(run["env"], stored.get("task_version"))
            except ValueError as err:
                build_parser(envs.DEFAULT_ENV).error(f"argument --resume: {err}")
    env = known.env or stored.get("run", {}).get("env", envs.DEFAULT_ENV)
    try:
        envs.spec(env)  # a registered name, or a user's MODULE:ATTRIBUTE (imported here)
    except ValueError as err:
        build_parser(envs.DEFAULT_ENV).error(f"argument --env: {err}")
    parser = build_parser(env, stored)
    ns = parser.parse_args(argv)
    parts = {}
    for section, cls, _, _ in _SECTIONS:
        try:
            parts[section] = build_dataclass(cls or envs.spec(env).planner, ns)
        except (ValueError, TypeError) as err:
            _refuse(parser, err, section)
    try:
        cfg = TrainConfig(**parts)
    except ValueError as err:
        _refuse(parser, err, "run")
    if resume is not None and stored.get("run", {}).get("env") not in (None, env):
        parser.error(
            f"argument --env: the run in {resume} trains {stored['run']['env']!r}, not {env!r}"
        )
    if ns.ray_address is not None and (problem := ray_address_problem(ns.ray_address)):
        parser.error(f"argument --ray-address: {problem}")
    if ns.print_config:
        return Invocation(cfg, resume, ns.ray_address, ns.serial, print_config=True)
    try:
        specs = resolve(cfg, cluster=bool(ns.ray_address or os.environ.get("RAY_ADDRESS")),
                        resume=resume)  # fmt: skip
    except ValueError as err:
        _refuse(parser, err, "run")
    return Invocation(cfg, resume, ns.ray_address, ns.serial, specs)


def _task_of_file(
    path: Path, name: str, version: int | None, fail: Callable[[str], NoReturn]
) -> str:
    """The registered env that a ``--config`` file's ``run.env`` (at its ``task_version``)
    names today (`envs.resolve_task`). A file without a version names today's task only where
    the task never changed: for one that did (``racing``), old data (version 1) and today's
    task are both readings, and the file must say which (exit 2, naming the versions that
    some env still keeps)."""
    try:
        now = envs.spec(name).version
        if version is None and now != 1:
            kept = {v: keeper for v in range(1, now) if (keeper := _keeper(name, v))}
            fail(f"argument --config: {path} names env {name!r} without task_version: {name!r} "
                 f"is now version {now} of its task; add 'task_version: {now}' for it (a run's "
                 "config.yaml records one)"
                 + "".join(f", or 'task_version: {v}' for the task it was at version {v} "
                           f"({keeper!r} now)" for v, keeper in kept.items()))  # fmt: skip
        return envs.resolve_task(name, version)
    except ValueError as err:
        fail(f"argument --config: {path}: run.env: {err}")


def _keeper(name: str, version: int) -> str | None:
    """The env that keeps task ``name`` at ``version`` (`envs.resolve_task`), None if none does."""
    try:
        return envs.resolve_task(name, version)
    except ValueError:
        return None


def _config_file(path: Path, env: str | None) -> dict[str, dict[str, Any]]:
    """A ``--config`` file's sections, checked: a mapping of known sections to known fields
    whose values have the fields' types (exit 2 naming the file, the field and its option);
    its ``run.env`` under today's name; a ``task_version`` that matches its env."""
    fail = build_parser(envs.DEFAULT_ENV).error
    if not path.is_file():
        fail(f"argument --config: {path} is not a file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        fail(f"argument --config: {path} is not YAML: {err}")
    if not isinstance(data, dict) or not all(
        isinstance(v, dict) for k, v in data.items() if k != "task_version"
    ):
        fail(f"argument --config: {path} must map sections to fields (as a run's config.yaml)")
    version = data.pop("task_version", None)
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        fail(f"argument --config: {path}: task_version takes an int, got {version!r}")
    run = data.get("run", {})
    if not isinstance(run.get("env", ""), str):
        fail(f"argument --config: {path}: run.env (the option --env) takes a str, "
             f"got {run['env']!r}")  # fmt: skip
    if "env" in run:
        run["env"] = _task_of_file(path, run["env"], version, fail)
    elif version is not None and (now := envs.spec(env or envs.DEFAULT_ENV).version) != version:
        fail(f"argument --config: {path}: task_version {version} is not the task of env "
             f"{env or envs.DEFAULT_ENV!r} (version {now})")  # fmt: skip
    classes = TrainConfig.section_classes(env or run.get("env", envs.DEFAULT_ENV))
    for section, fields in data.items():
        if section not in classes:
            fail(f"argument --config: {path}: unknown section {section!r} (the sections are "
                 f"{', '.join(classes)})")  # fmt: skip
        known = {f.name for f in dataclasses.fields(classes[section])}
        hints = typing.get_type_hints(classes[section])
        for name, value in fields.items():
            if name not in known:
                fail(f"argument --config: {path}: unknown field {section}.{name}")
            if problem := value_problem(hints[name], value):
                option = flag(_PREFIX.get(section, "") + name)
                fail(f"argument --config: {path}: {section}.{name} (the option {option}) takes "
                     f"{problem}, got {value!r}")  # fmt: skip
    return data


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    invocation = parse(argv)
    if invocation.print_config:
        print(yaml.safe_dump(invocation.cfg.to_dict(), sort_keys=False), end="")
        return
    from rlmpc.run.train import train
    from rlmpc.system.backend import ComponentDied, ComponentFailed
    from rlmpc.system.checkpoint import CheckpointError
    from rlmpc.system.learner import TrainingDiverged

    try:
        train(invocation.cfg, resume=invocation.resume, ray_address=invocation.ray_address,
              serial=invocation.serial, argv=argv, specs=invocation.specs)  # fmt: skip
    except (ComponentDied, ComponentFailed, CheckpointError, TrainingDiverged) as err:
        sys.exit(f"launch.py: the run stopped: {err}")
