"""``python launch.py``: parse and validate the whole configuration, then train.

Options are generated from the component dataclasses (`rlmpc.run.config`); per-env presets
(``--env``) set their defaults, and ``--resume RUN_DIR`` makes the stored config of that run
the defaults (any option given on the command line still wins). Every value is validated
before Ray starts; a bad one ends the program with the option's name and allowed range.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from learners.policy import NetworkConfig
from learners.ppo import PPOConfig
from learners.rho import InfluenceRatioConfig
from rlmpc.run.cliargs import add_dataclass_args, build_dataclass
from rlmpc.run.config import ENV_CHOICES, PRESETS, RunConfig, TrainConfig, planner_class
from rlmpc.run.runlog import WandbConfig

_SECTIONS: list[tuple[str, type, str, str]] = [
    # (config section, class, help title, flag prefix)
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
    ("wandb", WandbConfig, "Weights & Biases", ""),
]


def build_parser(
    env: str, defaults: dict[str, dict[str, Any]] | None = None
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launch.py",
        description="Train PPO-MPPI (Hori et al., arXiv 2512.17091) on an embedded local Ray, "
        "or on the Ray cluster this machine belongs to.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue the run in RUN_DIR from its newest checkpoint")  # fmt: skip
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to join ('auto': the one this machine is part of, as under "
                        "`ray submit`); default: $RAY_ADDRESS if set, else an embedded local Ray")  # fmt: skip
    defaults = defaults or {}
    for section, cls, title, prefix in _SECTIONS:
        cls = cls or planner_class(env)
        preset = {**PRESETS.get(env, {}).get(section, {}), **defaults.get(section, {})}
        if section == "run":
            preset["env"] = env
        add_dataclass_args(parser, cls, title, defaults=preset, prefix=prefix)
    return parser


def parse(argv: list[str] | None = None) -> tuple[TrainConfig, Path | None, str | None]:
    """Parse and validate; exits with a message naming the bad option."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--env", default=None)
    pre.add_argument("--resume", default=None)
    known, _ = pre.parse_known_args(argv)
    stored: dict[str, dict[str, Any]] = {}
    resume = Path(known.resume) if known.resume else None
    if resume is not None:
        cfg_file = resume / "config.yaml"
        if not cfg_file.is_file():
            build_parser("acrobot").error(f"argument --resume: {cfg_file} does not exist")
        stored = yaml.safe_load(cfg_file.read_text())
    env = known.env or stored.get("run", {}).get("env", "acrobot")
    if env not in ENV_CHOICES:
        build_parser("acrobot").error(
            f"argument --env: invalid choice {env!r} (choose from {', '.join(ENV_CHOICES)})"
        )
    parser = build_parser(env, stored)
    ns = parser.parse_args(argv)
    try:
        parts = {}
        for section, cls, _, _ in _SECTIONS:
            parts[section] = build_dataclass(cls or planner_class(env), ns)
        cfg = TrainConfig(**parts)
    except (ValueError, TypeError) as e:
        parser.error(_name_option(str(e)))
    for option, device in (("--learner-device", cfg.run.learner_device),
                           ("--actor-device", cfg.run.actor_device)):  # fmt: skip
        if device.startswith("cuda") and not torch.cuda.is_available():
            parser.error(f"argument {option}: {device!r} asked for, but torch sees no CUDA device")
    if resume is not None and stored.get("run", {}).get("env") not in (None, env):
        parser.error(
            f"argument --env: the run in {resume} trains {stored['run']['env']!r}, not {env!r}"
        )
    return cfg, resume, ns.ray_address


def _name_option(message: str) -> str:
    """Prefix a validation message with the command-line option of the field it names."""
    for _, cls, _, prefix in _SECTIONS:
        classes = [cls] if cls else [planner_class(e) for e in ENV_CHOICES]
        for c in classes:
            for f in dataclasses.fields(c):
                for spelled in (f"{c.__name__}.{f.name} ", f"{f.name} must", f"{f.name} ("):
                    if message.startswith(spelled) or f" {spelled}" in message:
                        return f"argument --{(prefix + f.name).replace('_', '-')}: {message}"
    return message


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg, resume, address = parse(argv)
    from rlmpc.system.driver import train

    train(cfg, resume=resume, ray_address=address, argv=argv)
