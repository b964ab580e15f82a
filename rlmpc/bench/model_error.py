"""How wrong is the planner's model? One-step prediction error on states from real rollouts.

For each step of real rollouts, the model predicts the next observation from the env's
planner state, ``ŝ' = ψ(P̂(x_t, u_t))`` (eq. 6, exactly what virtual data is built from), and
compares it with the env's real next observation ``s'``. Steps that end an episode are left
out (the env resets there). Reported per observation component and as one scale-free
figure, the *relative one-step error*::

    rel = mean_t ||ŝ'_t - s'_t||  /  mean_t ||s'_t - s_t||

the size of the model's miss as a fraction of how far the observation actually moved.

The controls come from the env's own MPPI planner (Table 5 costs) tracking the target of a
fixed high-level action ``a = 0`` (``--policy planner``, the default: the states the
planner's virtual data starts from), from the planner tracking the model's scripted targets
(``scripted``, `envs.base.PlannerModel.scripted_action`: ``racing``'s ``a = 0`` asks its
world-frame target of standing still), from uniform random controls (``random``) or from
zero controls (``zero``).

Run ``python -m rlmpc.bench.model_error --env lunarlander`` (or ``racing``, ``racing-stadium``,
``acrobot``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import torch

import envs


@dataclass(frozen=True)
class ModelError:
    env: str
    steps: int
    relative: float  # mean ||ŝ' - s'|| / mean ||s' - s||
    mean_abs: np.ndarray  # [nobs] per-component mean |ŝ' - s'|
    max_abs: np.ndarray  # [nobs]
    mean_step: float  # mean ||s' - s||


POLICIES = ("planner", "scripted", "random", "zero")


def one_step_errors(
    name: str, steps: int = 2000, seed: int = 0, policy: str = "planner"
) -> ModelError:
    """Measure the model's one-step error over ``steps`` real transitions (see module doc)."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    env = envs.make(name)
    model = env.unwrapped.planner_model()
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    low, high = env.action_space.low, env.action_space.high
    planned = policy in ("planner", "scripted")
    if planned:
        from envs import planner_config
        from planners.costs import build_planner
        from planners.mppi import shift_warm_start

        cfg = planner_config(name)
        planner = build_planner(model, cfg)
        warm = torch.zeros(1, cfg.planning_horizon, model.nu)
        a0 = torch.zeros(1, 1, model.na)
        gen = torch.Generator().manual_seed(seed)
    preds, reals, prevs = [], [], []
    while len(reals) < steps:
        x = torch.as_tensor(model.planner_state(env), dtype=torch.float64)
        if planned:
            if policy == "scripted":
                a0 = model.scripted_action(torch.as_tensor(obs, dtype=torch.float32)[None])[None]
            plan = planner.plan(x[None].float(), a0, warm, generator=gen)
            u = plan.first[0, 0].double().numpy()
            warm = shift_warm_start(plan.controls[:, 0])
        else:
            u = rng.uniform(low, high) if policy == "random" else np.zeros_like(low)
        pred = model.observe(model.dynamics(x, torch.as_tensor(u, dtype=torch.float64)))
        next_obs, _, terminated, truncated, _ = env.step(u.astype(env.action_space.dtype))
        if terminated or truncated:
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
            if planned:
                warm = torch.zeros_like(warm)
            continue
        preds.append(pred.numpy())
        reals.append(np.asarray(next_obs, dtype=np.float64))
        prevs.append(np.asarray(obs, dtype=np.float64))
        obs = next_obs
    env.close()
    pred, real, prev = np.stack(preds), np.stack(reals), np.stack(prevs)
    err = pred - real
    mean_step = float(np.linalg.norm(real - prev, axis=1).mean())
    return ModelError(
        env=name,
        steps=len(real),
        relative=float(np.linalg.norm(err, axis=1).mean() / max(mean_step, 1e-12)),
        mean_abs=np.abs(err).mean(axis=0),
        max_abs=np.abs(err).max(axis=0),
        mean_step=mean_step,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="lunarlander", choices=sorted(envs.ENV_IDS))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policy", default="planner", choices=POLICIES)
    args = parser.parse_args(argv)
    if args.steps <= 0:
        parser.error("--steps must be > 0")
    r = one_step_errors(args.env, args.steps, args.seed, args.policy)
    np.set_printoptions(precision=4, suppress=True)
    print(f"env: {r.env}  steps: {r.steps}  policy: {args.policy}")
    print(f"per-component mean |ŝ'-s'|: {r.mean_abs}")
    print(f"per-component max  |ŝ'-s'|: {r.max_abs}")
    print(f"{r.env}_mean_step_norm: {r.mean_step:.5f}")
    print(f"{r.env}_relative_one_step_error: {r.relative:.5f}")


if __name__ == "__main__":
    main()
