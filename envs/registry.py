"""The env registry: what each task env declares once, and what the system asks it.

An env enters the system with one `register(EnvSpec(...))`: its short name (``--env``), its
gymnasium id and entry point, the Table-5 planner preset it plans with, the run defaults that
differ for it, the figures of an ended episode (the paper's table columns beyond success,
steps and reward), and what its actors need from a Ray cluster (CARLA servers). The system
(`rlmpc`) reads only this; it names no env. `envs/__init__.py` registers the paper's envs;
a test suite or a user module can register more the same way.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

#: the columns every env's evaluation table has: (``eval.json`` key, header)
BASE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("success_rate", "success"),
    ("steps", "steps"),
    ("reward", "reward"),
)


def info_success(info: dict[str, Any]) -> bool:
    """An episode's success from its last ``info``: ``is_success`` (or ``success``)."""
    return bool(info.get("is_success", info.get("success", False)))


def no_metrics(info: dict[str, Any]) -> dict[str, float]:
    """No env-specific figures."""
    return {}


def never_lost(info: dict[str, Any]) -> bool:
    """An env without an external simulator never loses one."""
    return False


@dataclass(frozen=True)
class EnvSpec:
    """One task env, as the system sees it (see the module docstring)."""

    name: str
    """short name on the command line (``--env``)"""
    id: str
    """gymnasium id, ``<namespace>/<Name>-v<k>``"""
    entry_point: str | Callable[..., gym.Env]
    """``"module:Class"`` or a callable building the env (as `gymnasium.register`)"""
    planner: type
    """the env's planner preset: a `planners.costs.PlannerConfig` subclass (Table 5)"""
    summary: str = ""
    """one line for ``--help``"""
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """run defaults that differ for this env: config section -> field -> value (the paper's
    envs read theirs from ``envs/<task>/presets.yaml``: `read_presets`)"""
    episode_metrics: Callable[[dict[str, Any]], dict[str, float]] = no_metrics
    """the env's own figures of an ended episode, from its last ``info`` (name -> value)"""
    success: Callable[[dict[str, Any]], bool] = info_success
    """whether an ended episode succeeded, from its last ``info``"""
    episode_lost: Callable[[dict[str, Any]], bool] = never_lost
    """whether an episode ended because the env lost its simulator (a server), not by the
    task, from its last ``info``: the rollout worker drops it and counts a ``lost`` fault"""
    columns: tuple[tuple[str, str], ...] = BASE_COLUMNS
    """the evaluation table's columns: (``eval.json`` key, header)"""
    probe: str | None = None
    """an env with the same spaces and planner-model sizes that builds without external
    resources (the system probes it for the networks' sizes); None: this env itself"""
    resources_per_env: Mapping[str, float] = field(default_factory=dict)
    """Ray resources an actor needs per env it steps (one CARLA server each: ``carla=1``)"""
    node_env_kwargs: str | Callable[[int], list[dict[str, Any]]] | None = None
    """per-env constructor arguments for ``n`` envs on the node an actor runs on (a CARLA
    server of that node each), or ``"module:function"`` naming such a callable"""
    requires: tuple[str, ...] = ()
    """Python modules the env needs (refused before a run starts when missing)"""
    version: int = 1
    """the task's version, raised whenever the task changes under the same name (dynamics,
    reward, action frame, episode layout): checkpoints, run directories and result cells
    record it, so an old one never resumes or tabulates as a different task (`resolve_task`)"""
    formerly: tuple[tuple[str, int], ...] = ()
    """(name, version) pairs this task was registered as before: data recorded under one of
    them is this task's (the stadium Racing task was ``racing`` version 1)"""

    def make(self, **kwargs: Any) -> gym.Env:
        return gym.make(self.id, **kwargs)

    def render_modes(self) -> tuple[str, ...]:
        """The render modes the env's class declares (``metadata["render_modes"]``), read
        without building an env: ``"rgb_array"`` among them means ``render()`` gives frames
        (evaluation videos, `python -m rlmpc.enjoy`)."""
        creator = self.entry_point
        if isinstance(creator, str):
            from gymnasium.envs.registration import load_env_creator

            creator = load_env_creator(creator)
        return tuple(getattr(creator, "metadata", {}).get("render_modes", ()))

    def env_kwargs(self, n: int) -> list[dict[str, Any]] | None:
        """Constructor arguments for ``n`` envs on this node (None: none needed)."""
        fn = self.node_env_kwargs
        if fn is None:
            return None
        if isinstance(fn, str):
            module, _, name = fn.partition(":")
            fn = getattr(importlib.import_module(module), name)
        return fn(n)

    def resources(self, n_envs: int) -> dict[str, float]:
        """The Ray resources of an actor stepping ``n_envs`` of these envs."""
        return {k: v * n_envs for k, v in self.resources_per_env.items()}

    def missing(self) -> list[str]:
        """The `requires` modules that cannot be imported here."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


_REGISTRY: dict[str, EnvSpec] = {}
#: short name -> gymnasium id, for every registered env
ENV_IDS: dict[str, str] = {}


def register(spec: EnvSpec) -> EnvSpec:
    """Add an env (and its gymnasium id); registering the same name again replaces it."""
    if not spec.name or "/" in spec.name:
        raise ValueError(f"env name must be non-empty without '/', got {spec.name!r}")
    _REGISTRY[spec.name] = spec
    ENV_IDS[spec.name] = spec.id
    if spec.id in gym.registry:
        del gym.registry[spec.id]
    gym.register(id=spec.id, entry_point=spec.entry_point, disable_env_checker=True)
    return spec


def ensure(spec: EnvSpec) -> None:
    """Register ``spec`` in this process unless an env of its name is registered already (a
    Ray actor's process knows only the envs its own imports register)."""
    if spec.name not in _REGISTRY:
        register(spec)


#: ``module:attribute`` references loaded in this process -> the name their env registered as
_REFS: dict[str, str] = {}
#: the directories user env modules were imported from (Ray's local workers get them on
#: their path: `module_roots`)
_ROOTS: list[str] = []


def is_reference(name: str) -> bool:
    """Whether ``name`` is a ``module:attribute`` reference to a user's env (not a short name)."""
    return ":" in name and "/" not in name.split(":", 1)[0]


def load(ref: str) -> EnvSpec:
    """The env a ``"package.module:attribute"`` reference names, registered in this process.

    The attribute is an `EnvSpec` (or a callable returning one); the module is imported as
    Python would (installed packages, the job's working directory on a cluster), else from
    the current directory, as ``python -m`` would. Raises `ValueError` saying what is wrong.
    """
    if ref in _REFS and _REFS[ref] in _REGISTRY:
        return _REGISTRY[_REFS[ref]]
    module_name, _, attribute = ref.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"an env reference is MODULE:ATTRIBUTE, got {ref!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        cwd = os.getcwd()
        if cwd in sys.path or err.name != module_name.split(".")[0]:
            raise ValueError(f"cannot import {module_name!r} for env {ref!r}: {err}") from None
        sys.path.insert(0, cwd)  # as `python -m` would: the working directory first
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err2:
            sys.path.remove(cwd)
            raise ValueError(f"cannot import {module_name!r} for env {ref!r}: {err2}") from None
    obj = getattr(module, attribute, None)
    if obj is None:
        raise ValueError(f"module {module_name!r} has no attribute {attribute!r} (env {ref!r})")
    if not isinstance(obj, EnvSpec) and callable(obj):
        obj = obj()
    if not isinstance(obj, EnvSpec):
        raise ValueError(
            f"{ref!r} names a {type(obj).__name__}, not an envs.EnvSpec (its registry entry)"
        )
    if module.__file__ is not None:  # the directory the top-level package sits in
        file = Path(module.__file__).resolve()
        depth = len(module_name.split(".")) + (file.name == "__init__.py")
        root = str(file.parents[depth - 1])
        if root not in _ROOTS:
            _ROOTS.append(root)
    register(obj)
    _REFS[ref] = obj.name
    return obj


def env_arg(text: str) -> str:
    """An argparse ``type`` for ``--env``: a registered name or a ``MODULE:ATTRIBUTE``
    reference (imported here); argparse's error otherwise, with the choices."""
    import argparse

    try:
        spec(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def module_roots() -> list[str]:
    """The directories user env modules were loaded from in this process (for Ray's workers)."""
    return list(_ROOTS)


def spec(name: str) -> EnvSpec:
    """The registered env of that short name (or gymnasium id), or the env a
    ``module:attribute`` reference names (`load`); `ValueError` if none."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if is_reference(name):
        return load(name)
    for s in _REGISTRY.values():
        if s.id == name:
            return s
    raise ValueError(
        f"unknown env {name!r}; choose one of {names()} or name your own as MODULE:ATTRIBUTE"
    )


def resolve_task(name: str, version: int | None = None) -> str:
    """The registered env that recorded data of task ``name`` at ``version`` belong to (data
    without a version: version 1, every task's first): ``name`` itself when its version
    matches, else the env that lists ``(name, version)`` in its `EnvSpec.formerly`;
    `ValueError` when none does (the task changed and nothing kept the old one)."""
    version = 1 if version is None else int(version)
    if is_reference(name):  # a user's env: the task its module defines now
        current = load(name)
        if current.version != version:
            raise ValueError(
                f"{name!r} is now version {current.version} of its task, not {version}"
            )
        return name
    current = _REGISTRY.get(name)
    if current is not None and current.version == version:
        return name
    for s in _REGISTRY.values():
        if (name, version) in s.formerly:
            return s.name
    if current is None:
        raise ValueError(f"unknown env {name!r}; choose one of {names()}")
    raise ValueError(
        f"{name!r} version {version} is not registered: {name!r} is now version "
        f"{current.version}, and no env keeps the old task"
    )


def contract_problems(spec: EnvSpec) -> list[str]:
    """What the env ``spec`` names lacks of the contract the system relies on (`probe`)."""
    return probe(spec)[1]


def probe(spec: EnvSpec) -> tuple[Any, list[str]]:
    """The env's planner model (None where there is none) and what the env lacks of the
    contract the system relies on (empty: nothing): a `PlannerConfig` preset, an env with
    ``planner_model()`` returning an `envs.base.PlannerModel`, its danger-zone slice, and an
    observation layout that ``observe`` (ψ) rebuilds from the planner state. Builds the env
    (or its ``probe`` env) once."""
    from envs.base import PlannerModel
    from planners.costs import PlannerConfig

    problems = []
    if not (isinstance(spec.planner, type) and issubclass(spec.planner, PlannerConfig)):
        problems.append(
            f"planner preset: {spec.planner!r} is not a planners.costs.PlannerConfig subclass"
        )
    env = make(spec.probe or spec.name)
    try:
        base = env.unwrapped
        if not callable(getattr(base, "planner_model", None)):
            return None, [*problems, f"planner model: {type(base).__name__} has no "
                          "planner_model() returning its envs.base.PlannerModel (P̂, r̂, ψ "
                          "for the planner)"]  # fmt: skip
        model = base.planner_model()
        if not isinstance(model, PlannerModel):
            return None, [*problems, f"planner model: planner_model() returned a "
                          f"{type(model).__name__}, not an envs.base.PlannerModel"]  # fmt: skip
        zone = getattr(model, "zone_slice", None)
        if not isinstance(zone, slice) or len(range(model.nx)[zone]) != 4:
            problems.append(
                f"danger-zone slice: {type(model).__name__}.zone_slice must pick the 4 entries "
                f"(cx, cy, w, h) of the planner state [nx={model.nx}], got {zone!r}"
            )
        obs_shape, act_shape = env.observation_space.shape, env.action_space.shape
        if obs_shape != (model.nobs,):
            problems.append(
                f"observation layout: the model's nobs = {model.nobs}, the env's observations "
                f"are {obs_shape}"
            )
        if (
            act_shape != (model.nu,)
            or len(model.u_low) != model.nu
            or len(model.u_high) != model.nu
        ):
            problems.append(
                f"controls: the model's nu = {model.nu} (u_low, u_high of that length), the "
                f"env's actions are {act_shape}"
            )
        if problems:
            return model, problems
        obs, _ = env.reset(seed=0)
        x = torch.as_tensor(model.planner_state(env), dtype=torch.float64)
        if x.shape != (model.nx,):
            return model, [f"planner state: planner_state(env) is {tuple(x.shape)}, the model's "
                           f"nx = {model.nx}"]  # fmt: skip
        rebuilt = model.observe(x).numpy()
        if rebuilt.shape != obs.shape or not np.allclose(rebuilt, obs, rtol=1e-3, atol=1e-3):
            problems.append(
                "observation layout: observe(planner_state(env)) does not rebuild the env's "
                "observation (ψ must map a planner state to the observation the policy sees, "
                "for the virtual data)"
            )
    finally:
        env.close()
    return model, problems


def names(local: bool = False) -> list[str]:
    """Registered short names, in registration order; ``local``: only the envs that run on
    this machine alone (their envs need no cluster resources such as simulator servers)."""
    return [n for n, s in _REGISTRY.items() if not (local and s.resources_per_env)]


def read_presets(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """An env's presets from its YAML file (section -> field -> value; lists become tuples,
    as the config dataclasses hold them); `ValueError` naming the file when it is not such a
    mapping. A top-level ``task_version`` (as in a run's config.yaml) is the file's, for
    ``launch.py --config FILE``, not a preset: it is left out."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    if isinstance(data, dict):
        data.pop("task_version", None)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: presets are a mapping of section -> field -> value")
    tup = lambda v: tuple(v) if isinstance(v, list) else v
    return {sec: {k: tup(v) for k, v in fields.items()} for sec, fields in data.items()}


def planner_config(name: str, **overrides: Any) -> Any:
    """The Table-5 planner preset of a registered env (`EnvSpec.planner`) with ``overrides``;
    `ValueError` for an env that is not registered (and the preset's own for a bad value)."""
    return spec(name).planner(**overrides)


def make(name: str, **kwargs: Any) -> gym.Env:
    """Build an env by short name or gymnasium id."""
    return spec(name).make(**kwargs)
