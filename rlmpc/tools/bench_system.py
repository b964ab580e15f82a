"""``python -m rlmpc.bench system``: end-to-end training throughput against the paper's loop.

Two figures measured in the same run, on the same machine:

* **system**: a real training run (`rlmpc.run.train.train`: Ray actors acting with the batched
  planner, the learner updating beside them) on Lunar Lander with M=4, K=100, H=10, timed in
  steady state (after the first iterations, which include actor start-up): env steps/s
  learned on.
* **reference**, the paper-faithful loop (App. E): one env, one pytorch-mppi controller per
  candidate, candidates one after another, then PPO's update every n_steps, all in one
  process: ``1 / (seconds per acting step + seconds per update / n_steps)``, the acting part
  timed over ``--reference-steps`` steps and the update timed once on a real iteration of data.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

import envs


def add_system_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "system",
        help="end-to-end env steps/s (acting + learning) vs the paper-faithful loop",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--env", default=envs.BENCHMARK_ENV, choices=envs.names(local=True))
    p.add_argument(
        "--iterations", type=int, default=16, help="learner iterations of the system run (>= 4)"
    )
    p.add_argument(
        "--num-actors", type=int, default=None, help="rollout actors (default: launch.py's)"
    )
    p.add_argument(
        "--envs-per-actor", type=int, default=None, help="envs per actor (default: launch.py's)"
    )
    p.add_argument(
        "--reference-steps", type=int, default=60, help="acting steps timed for the reference"
    )
    p.add_argument(
        "--rho0", type=float, default=None,
        help="the run's influence ratio rho0 (default: launch.py's); 0: no virtual data",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run_system)


def _config(args: argparse.Namespace, run_dir: str):
    from rlmpc.run.cli import parse

    argv = [
        "--env", args.env, "--total-env-steps", str(args.iterations * 2048), "--eval-every", "0",
        "--final-eval-episodes", "0", "--checkpoint-every", "1000000", "--wandb-mode", "disabled",
        "--no-progress", "--runs-dir", run_dir, "--run-name", "bench", "--seed", str(args.seed),
    ]  # fmt: skip
    if args.num_actors:
        argv += ["--num-actors", str(args.num_actors)]
    if args.envs_per_actor:
        argv += ["--envs-per-actor", str(args.envs_per_actor)]
    if args.rho0 is not None:
        argv += ["--influence-ratio-rho0", str(args.rho0)]
    return parse(argv).cfg


def measure_system(cfg) -> tuple[float, dict]:
    """Steady-state env steps/s of a real training run (iterations 3.. of the run)."""
    import ray

    from rlmpc.run.train import train

    run_dir = train(cfg)
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    a, b = rows[2], rows[-1]
    sps = (b["env_steps"] - a["env_steps"]) / (b["time"] - a["time"])
    ray.shutdown()
    return sps, {"iterations": len(rows), "last": b}


def measure_reference(cfg, steps: int, seed: int) -> tuple[float, float, float]:
    """(env steps/s, s per acting step, s per update) of the paper-faithful loop."""
    from dataclasses import replace

    from rlmpc.system.learner import Learner
    from rlmpc.system.records import FragmentId
    from rlmpc.system.worker import RolloutWorker, WorkerSpec

    torch.set_num_threads(1)
    spec = WorkerSpec(cfg.run.env, 1, cfg.run.num_candidates, replace(cfg.planner, backend="pytorch_mppi"),
                      cfg.networks, seed)  # fmt: skip
    ref = RolloutWorker(0, spec)
    ref.collect(FragmentId(0, 0), 2, None, 0)  # warm-up
    start = time.perf_counter()
    ref.collect(FragmentId(1, 0), steps, None, 0)
    act = (time.perf_counter() - start) / steps
    # one PPO update on a real iteration of data (collected fast with the batched planner)
    n = cfg.ppo.n_steps
    fast = RolloutWorker(0, replace(spec, n_envs=64, planner=cfg.planner))
    real, virtual, _ = fast.collect(FragmentId(0, 0), n // 64, None, 0)
    learner = Learner(ref.model.nobs, ref.model.na, cfg.ppo, cfg.networks, cfg.influence_ratio)
    start = time.perf_counter()
    learner.train([real], [virtual] if virtual is not None else [])
    update = time.perf_counter() - start
    return 1.0 / (act + update / n), act, update


def run_system(args: argparse.Namespace) -> dict[str, float]:
    if args.iterations < 4:
        raise SystemExit("rlmpc.bench system: --iterations must be >= 4")
    if args.reference_steps < 1:
        raise SystemExit("rlmpc.bench system: --reference-steps must be >= 1")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(args, tmp)
        run = cfg.run
        print(
            f"system bench: env={run.env} M={run.num_candidates} K={cfg.planner.num_samples} "
            f"H={cfg.planner.planning_horizon} actors={run.num_actors}×{run.envs_per_actor} envs, "
            f"n_steps={cfg.ppo.n_steps}, rho0={cfg.influence_ratio.rho0}, "
            f"{args.iterations} iterations"
        )
        ref_sps, act, update = measure_reference(cfg, args.reference_steps, args.seed)
        print(f"  reference: {act * 1e3:.1f} ms per acting step, {update:.2f} s per update "
              f"-> {ref_sps:.1f} env-steps/s")  # fmt: skip
        sps, info = measure_system(cfg)
        print(f"  system: {sps:.0f} env-steps/s over iterations 3..{info['iterations']}")
    return {
        "system_env_steps_per_s": sps,
        "reference_env_steps_per_s": ref_sps,
        "system_ratio": sps / ref_sps,
        "system_minutes_per_1M_steps": 1e6 / sps / 60,
        "reference_hours_per_1M_steps": 1e6 / ref_sps / 3600,
    }
