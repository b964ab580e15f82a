"""A user's grid over ``launch.py`` options: ``python -m rlmpc.reproduce --grid my_grid.yaml``.

The file names an experiment of the user's own and its methods; it runs as the catalog's
experiments do (`rlmpc.reproduce.catalog`): cells ``results/<experiment>/<env>/<method>/
seed<k>.json``, Tune trials, ``results/<experiment>.md`` and its curves. Every key but
``experiment``, ``envs`` and one of ``methods`` / ``product`` may be left out::

    experiment: mygrid              # the results' folder; not a catalog experiment's name
    envs: [acrobot, lunarlander]    # registered envs (a name or a list)
    seeds: [0, 1]                   # default: the preset's (--seeds wins)
    env_steps: 200000               # per PPO-MPPI cell; default: the preset's (--env-steps wins)
    eval_episodes: 20               # default: the preset's (--eval-episodes wins)
    args: [--num-samples, 64]       # launch.py options every method gets
    methods:                        # method name: its launch.py options
      rho0.3: [--influence-ratio-rho0, 0.3]
      adaptive: [--influence-ratio-mode, adaptive]
    product:                        # and/or a method per combination of these values
      --influence-ratio-rho0: [0, 0.3]
      --num-candidates: [2, 4]      # names: influence-ratio-rho0_0.3+num-candidates_4, ...
    baselines: [sb3-ppo, mppi]      # the catalog's baselines beside them (ppo, sac, sb3-ppo,
                                    # sb3-sac, mppi)

A ``product`` value ``true`` / ``false`` of a switch gives ``--flag`` / ``--no-flag``. The
options the sweep sets itself (env, seed, budget, run directory, W&B run labels) are refused,
and so is any option ``launch.py`` does not have; every cell's options are then parsed by
``launch.py``'s own parser (`rlmpc.reproduce.cells.plan`). All before Ray starts.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import envs
from common.checks import SEED_MAX
from rlmpc.reproduce.catalog import (
    EXPERIMENTS,
    MPPI,
    PPO,
    SAC,
    SB3_PPO,
    SB3_SAC,
    Experiment,
    Method,
)

#: the keys a grid file may hold
KEYS = ("experiment", "envs", "seeds", "env_steps", "eval_episodes", "args", "methods",
        "product", "baselines")  # fmt: skip
#: the catalog's baselines a grid may run beside its methods
BASELINES = {m.name: m for m in (PPO, SAC, SB3_PPO, SB3_SAC, MPPI)}
#: ``launch.py`` options that each cell's own (env, seed, budget, directories, labels) set
SWEEP_OPTIONS = ("--env", "--seed", "--total-env-steps", "--final-eval-episodes", "--runs-dir",
                 "--run-name", "--resume", "--serial", "--ray-address", "--wandb-group",
                 "--wandb-method", "--wandb-mode", "--progress", "--no-progress")  # fmt: skip
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


class GridError(ValueError):
    """A grid file that cannot run; ``key`` names the entry at fault."""

    def __init__(self, path: Path, key: str, message: str) -> None:
        super().__init__(f"--grid {path}: {key}: {message}")
        self.key = key


@dataclass(frozen=True)
class Grid:
    """A grid file, checked: its experiment (methods and envs) and its budgets."""

    experiment: Experiment
    seeds: tuple[int, ...] | None
    env_steps: int | None
    eval_episodes: int | None


def _value(v: Any) -> str:
    return str(v) if not isinstance(v, float) else f"{v:g}"


def _argv(path: Path, key: str, args: Any) -> tuple[str, ...]:
    if isinstance(args, str | int | float):
        args = str(args).split()
    if not isinstance(args, list) or not all(isinstance(a, str | int | float) for a in args):
        raise GridError(path, key, f"a list of launch.py options and values, got {args!r}")
    return tuple(_value(a) for a in args)


def _product(path: Path, product: Any) -> dict[str, tuple[str, ...]]:
    """``product``'s methods: name -> options, one per combination of the values."""
    if not isinstance(product, dict) or not product:
        raise GridError(
            path, "product", f"a mapping of options to lists of values, got {product!r}"
        )
    axes = []
    for option, values in product.items():
        values = values if isinstance(values, list) else [values]
        if not str(option).startswith("--") or not values:
            raise GridError(path, "product", f"{option!r}: an option (--name) and a non-empty "
                                              f"list of its values")  # fmt: skip
        axes.append([(str(option), v) for v in values])
    methods = {}
    for combo in itertools.product(*axes):
        args: list[str] = []
        parts = []
        for option, v in combo:
            if isinstance(v, bool):
                args.append(option if v else "--no-" + option[2:])
            else:
                args += [option, _value(v)]
            parts.append(f"{option[2:]}_{str(v).lower() if isinstance(v, bool) else _value(v)}")
        methods["+".join(parts)] = tuple(args)
    return methods


def _check_options(path: Path, method: str, args: tuple[str, ...], env_names: list[str]) -> None:
    """Refuse options ``launch.py`` does not have on any of the envs, and the sweep's own."""
    from rlmpc.run.cli import build_parser

    for env in env_names:
        known = build_parser(env)._option_string_actions  # every spelling of every option
        for token in args:
            if not token.startswith("--"):
                continue
            option = token.split("=", 1)[0]
            if option in SWEEP_OPTIONS:
                raise GridError(path, f"methods: {method}", f"{option} is set by the sweep for "
                                "each cell (use envs, seeds, env_steps, eval_episodes)")  # fmt: skip
            if option not in known:
                raise GridError(path, f"methods: {method}",
                                f"launch.py has no option {option} (on {env})")  # fmt: skip


def load_grid(path: str | Path) -> Grid:
    """Read and check a grid file (module docstring); `GridError` names what is wrong."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise GridError(path, "file", err.strerror or str(err)) from None
    except yaml.YAMLError as err:
        raise GridError(path, "file", f"not YAML: {err}") from None
    if not isinstance(data, dict):
        raise GridError(path, "file", f"a mapping of {list(KEYS)}, got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - set(KEYS))
    if unknown:
        raise GridError(path, unknown[0], f"unknown key; a grid file holds {list(KEYS)}")
    name = data.get("experiment")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise GridError(
            path, "experiment", f"a folder name (letters, digits, . _ + -), got {name!r}"
        )
    if name in EXPERIMENTS and not EXPERIMENTS[name].paper.startswith("grid "):
        raise GridError(path, "experiment", f"{name!r} is the catalog's; choose another name")
    env_names = data.get("envs")
    env_names = [env_names] if isinstance(env_names, str) else env_names
    if not isinstance(env_names, list) or not env_names:
        raise GridError(path, "envs", f"an env or a list of envs, got {env_names!r}")
    bad = [e for e in env_names if e not in envs.names()]
    if bad:
        raise GridError(path, "envs", f"unknown {bad}; choose from {envs.names()}")
    seeds = data.get("seeds")
    if seeds is not None:
        seeds = [seeds] if isinstance(seeds, int) else seeds
        if (not isinstance(seeds, list) or not seeds
                or not all(isinstance(s, int) and 0 <= s <= SEED_MAX for s in seeds)):  # fmt: skip
            raise GridError(path, "seeds", f"integers in [0, {SEED_MAX}], got {seeds!r}")
    budgets = {}
    for key, low in (("env_steps", 1), ("eval_episodes", 1)):
        v = data.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < low):
            raise GridError(path, key, f"an integer >= {low}, got {v!r}")
        budgets[key] = v
    common = _argv(path, "args", data.get("args", []))
    methods: dict[str, tuple[str, ...]] = {}
    listed = data.get("methods", {})
    if not isinstance(listed, dict):
        raise GridError(path, "methods", f"a mapping of method names to options, got {listed!r}")
    for method, args in listed.items():
        methods[str(method)] = _argv(path, f"methods: {method}", args)
    if "product" in data:
        for method, args in _product(path, data["product"]).items():
            if method in methods:
                raise GridError(path, "product", f"method {method!r} is also under methods")
            methods[method] = args
    baselines = data.get("baselines", [])
    baselines = [baselines] if isinstance(baselines, str) else baselines
    if not isinstance(baselines, list) or any(b not in BASELINES for b in baselines):
        raise GridError(path, "baselines", f"any of {list(BASELINES)}, got {baselines!r}")
    if not methods:
        raise GridError(path, "methods", "no methods: give methods or product")
    for method, args in methods.items():
        if not _NAME.fullmatch(method) or method in BASELINES:
            raise GridError(path, f"methods: {method}", "a method name is a folder name "
                            f"(letters, digits, . _ + -) and none of {list(BASELINES)}")  # fmt: skip
        _check_options(path, method, (*common, *args), env_names)
    experiment = Experiment(
        name, f"grid {path.name}",
        tuple(Method(m, args=(*common, *args), summary=" ".join((*common, *args)))
              for m, args in methods.items()) + tuple(BASELINES[b] for b in baselines),
        envs=tuple(env_names),
    )  # fmt: skip
    return Grid(experiment, None if seeds is None else tuple(seeds), budgets["env_steps"],
                budgets["eval_episodes"])  # fmt: skip
