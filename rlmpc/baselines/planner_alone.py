"""App. E's "MPPI used alone": the batched planner driven by a fixed high-level policy.

``python -m rlmpc.baselines.planner_alone --env lunarlander --episodes 50`` runs the env's hand-written
target policy (`envs.base.PlannerModel.scripted_action`) through the training planner (the
env's preset cost, K, H; M = 1) on the real env, with danger zones, through the evaluation
loop (`rlmpc.system.worker.RolloutWorker.evaluate`), and prints the paper's columns. It checks the low level on
its own: if the planner cannot carry out sensible targets, no high-level policy can learn to
use it. ``--set NAME=VALUE`` overrides the planner preset (``--set w_act=20 effort=control``),
so the same command measures every departure from Table 5.

``--policy initial`` instead acts as training starts: each step, one high-level action
sampled from a freshly initialised policy network (the executed candidate of training is one
such draw), which shows whether learning can start from the env's defaults. ``--policy
initial-mean`` acts with that network's mean action (what its evaluation would do).

``--objective reward`` is App. E's "pure MPPI" (Fig. 10): the planner's cost is the reward
model multiplied by −1 (`planners.reward_cost`), no high-level policy (``--policy none`` is
implied), no learning; `pure_mppi` is the same from Python. ``--seed`` then names the
evaluation protocol's seed: episodes ``1_000_000 + 10_000·seed + i`` (`first_eval_seed`);
``--eval-seed N`` runs episodes ``N + i`` instead (tuning and calibration seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import envs
from common.checks import episode_seeds_problem, seed_arg, writable_dir
from envs import planner_config
from learners.policy import NetworkConfig
from rlmpc.baselines.evaluate import first_eval_seed
from rlmpc.run.evaluate import format_table, plot_traces, summarize
from rlmpc.run.runlog import run_meta
from rlmpc.system.worker import EVAL_ACTOR_ID, RolloutWorker, WorkerSpec

POLICIES = ("scripted", "initial", "initial-mean", "none")
"""`run_alone`'s high-level policies."""


class ScriptedPolicy:
    """The policy interface the acting loop uses (`mean`, `sample`), from ``model.scripted_action``."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def mean(self, obs: Tensor) -> Tensor:
        return self.model.scripted_action(obs)

    def sample(
        self, obs: Tensor, num_candidates: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        a = self.mean(obs)[:, None].expand(-1, num_candidates, -1)
        return a, torch.zeros(a.shape[:2], dtype=a.dtype, device=a.device)


class NoPolicy(ScriptedPolicy):
    """No high-level policy: the action is 0 (the planner's objective ignores it: App. E)."""

    def mean(self, obs: Tensor) -> Tensor:
        return obs.new_zeros(obs.shape[0], self.model.na)


class SampledPolicy:
    """A policy network acting stochastically: `mean` returns one draw of π(·|s) per state."""

    def __init__(self, policy: Any, generator: torch.Generator) -> None:
        self.policy, self.generator = policy, generator

    def mean(self, obs: Tensor) -> Tensor:
        return self.policy.sample(obs, 1, generator=self.generator)[0][:, 0]


def run_alone(env: str, episodes: int, seed: int = 20_000, n_envs: int = 50, record: int = 3,
              policy: str = "scripted", **planner_options: Any) -> tuple[dict[str, Any], Any, Any]:  # fmt: skip
    """``episodes`` episodes (seeds ``seed + i``) of the ``policy`` ('scripted', 'initial': a
    fresh policy network's samples, 'initial-mean': its mean, or 'none': action 0) + MPPI,
    ``n_envs`` at once; (summary, `EvalResult`, model)."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    spec = WorkerSpec(
        env=env, n_envs=min(n_envs, episodes), num_candidates=1,
        planner=planner_config(env, **planner_options), networks=NetworkConfig(), seed=seed,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the initial policy's weights: the same for the same seed
        worker = RolloutWorker(EVAL_ACTOR_ID, replace(spec, keep_virtual=False))
    if policy == "scripted":
        worker.policy = ScriptedPolicy(worker.model)
    elif policy == "none":
        worker.policy = NoPolicy(worker.model)
    elif policy == "initial":
        worker.policy = SampledPolicy(worker.policy, worker.gen)
    # 'initial-mean': the worker's own freshly initialised network, acting with its mean
    result = worker.evaluate(None, episodes, seed=seed, record=record)
    summary = summarize(env, result.episodes)
    summary["planner"] = {f.name: getattr(spec.planner, f.name) for f in fields(spec.planner)}
    summary["seed"], summary["policy"] = seed, policy
    return summary, result, worker.model


def pure_mppi(env: str, episodes: int = 50, seed: int = 0, record: int = 3,
              eval_seed: int | None = None, n_envs: int = 10,
              **planner_options: Any) -> tuple[dict[str, Any], Any, Any]:  # fmt: skip
    """App. E's "pure MPPI" (Fig. 10): MPPI alone with the reward model ×(−1) as its cost.

    The env's Table-5 planner (K, H, Σ, λ; ``planner_options`` override it) with
    ``objective="reward"`` and no high-level policy, on the evaluation protocol's episodes:
    ``eval_seed + i`` with ``eval_seed = 1_000_000 + 10_000·seed`` by default, ``n_envs`` at
    once (10, as `rlmpc.run.config.TrainConfig.eval_spec`). (summary with ``seed`` and
    ``eval_seed``, `EvalResult`, model).
    """
    if planner_options.get("objective", "reward") != "reward":
        raise ValueError(
            f"pure MPPI plans with objective 'reward', got {planner_options['objective']!r}"
        )
    first = first_eval_seed(seed) if eval_seed is None else eval_seed
    summary, result, model = run_alone(env, episodes, first, n_envs, record, policy="none",
                                       **{**planner_options, "objective": "reward"})  # fmt: skip
    summary["seed"], summary["eval_seed"] = seed, first
    return summary, result, model


def _number(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default=envs.BENCHMARK_ENV, type=envs.registry.env_arg,
                        help="an env whose planner model has a scripted policy")  # fmt: skip
    parser.add_argument("--episodes", type=int, default=50, help="episodes (1..10000)")
    parser.add_argument("--seed", type=seed_arg, default=None,
                        help="seed of the first episode (default 20000); with --objective reward "
                        "the run seed of the evaluation protocol (default 0)")  # fmt: skip
    parser.add_argument(
        "--policy", default="scripted", choices=POLICIES,
        help="the env's scripted targets, an untrained policy acting as in training (its "
        "samples) or as evaluated (its mean), or none",
    )  # fmt: skip
    parser.add_argument(
        "--eval-seed", type=seed_arg, default=None,
        help="with --objective reward: the first episode's seed (default: the evaluation "
        "protocol's 1_000_000 + 10_000·seed)",
    )  # fmt: skip
    parser.add_argument(
        "--objective", default="composite", choices=["composite", "reward"],
        help="the planner's cost: eq. (38) on the policy's targets, or App. E's pure MPPI "
        "(−r̂, no policy; --seed is then the run seed of the evaluation protocol)",
    )  # fmt: skip
    parser.add_argument(
        "--out", default=None, help="directory for alone.json and alone_episodes.png"
    )
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="NAME=VALUE",
        help="planner options overriding the preset, e.g. w_act=20 effort=control",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not 1 <= args.episodes <= 10_000:
        parser.error(f"argument --episodes: must be in [1, 10000], got {args.episodes}")
    if args.out is not None and (problem := writable_dir(args.out)):
        parser.error(f"argument --out: {problem}")
    if args.seed is not None and (problem := episode_seeds_problem(args.seed, args.episodes)):
        parser.error(f"argument --seed/--episodes: {problem}")
    options = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"argument --set: expected NAME=VALUE, got {item!r}")
        options[name] = _number(value)
    torch.set_num_threads(1)
    pure = args.objective == "reward"
    if pure and args.policy != "scripted":
        parser.error("argument --policy: --objective reward runs without a policy")
    if args.eval_seed is not None and not pure:
        parser.error("argument --eval-seed: only with --objective reward (else --seed)")
    try:
        if pure:
            seed = 0 if args.seed is None else args.seed
            summary, result, model = pure_mppi(args.env, args.episodes, seed,
                                               eval_seed=args.eval_seed, **options)  # fmt: skip
        else:
            seed = 20_000 if args.seed is None else args.seed
            summary, result, model = run_alone(
                args.env, args.episodes, seed, policy=args.policy, **options
            )
    except NotImplementedError as err:
        parser.error(f"argument --env: {err}")
    except (TypeError, ValueError) as err:
        parser.error(f"argument --set: {err}")
    summary.update(run_meta(argv, "-m rlmpc.baselines.planner_alone"))
    label = "pure" if pure else args.policy
    print(format_table(summary))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"alone_{label}.json").write_text(json.dumps(summary, indent=2))
        plot_traces(result, out / f"alone_{label}_episodes.png", model)
    key = f"planner_alone_{envs.spec(args.env).name}_{label}"
    for name in result.episodes.extra:  # the env's own figures (its registry entry), then success
        if summary.get(name):
            print(f"{key}_{name}: {summary[name]['mean']:.3f}")
    print(f"{key}_success_rate: {summary['success_rate']['mean']:.3f}")


if __name__ == "__main__":
    main()
