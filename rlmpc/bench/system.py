"""``python -m rlmpc.bench system``: end-to-end training throughput against the paper's loop.

Two figures measured in the same run, on the same machine:

* **system**: a real training run (`rlmpc.run.train.train`: Ray actors acting with the batched
  planner, the learner updating beside them) on Lunar Lander with M=4, K=100, H=10, timed in
  steady state (after the first iterations, which include actor start-up): env steps/s
  learned on.
* **reference**, the paper-faithful loop (App. E): one env, one pytorch-mppi controller per
  candidate, candidates one after another, then PPO's update every n_steps, all in one
  process: ``1 / (seconds per acting step + seconds per update / n_steps)``, the update timed
  once on a real iteration of data. The acting part is timed over the same stretch of an
  episode's life as the system's steady state: the system is timed from iteration 3 on, its
  envs then ``3·T`` steps into their lives (T = n_steps / envs, 32 by default), so the
  reference steps its env through those ``3·T`` steps untimed and times the next
  ``--reference-steps`` (default: as many as each of the system's envs is timed for,
  ``(iterations - 3)·T``). Timing it from a fresh episode instead, as this benchmark did
  before, compared a reference lander in the air with a system whose landers are mostly on
  the ground, where the model's contact solver costs more per step (`envs.lunar_lander.body`),
  in the reference as in the system. Half of those steps and one update are timed before the
  system run and the rest after it (`Reference`), so that a drift in the machine's speed
  during the run falls on both figures alike.

Where the system's time goes, from its ``time/*`` metrics over the same steady-state
iterations (medians): acting (``collect``: an actor's fragment), waiting (the driver for the
actors' fragments, beside its update), the learner's update, and transfer (fetching the
fragments' arrays); with the ceiling each side sets, ``n_steps`` over its seconds per
iteration. Peak memory: the sum over the run's processes (this one and every process it
started: Ray's, the actors, the learner) polled every second from ``/proc`` (Linux), as RSS
(a shared page counted in every process that maps it) and as PSS (shared pages split between
their processes: what the run costs the machine).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch

import envs
from rlmpc.run.procfs import descendants


def add_system_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "system",
        help="end-to-end env steps/s (acting + learning) vs the paper-faithful loop",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--env", default=envs.BENCHMARK_ENV, type=envs.registry.env_arg)
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
        "--reference-steps", type=int, default=None,
        help="acting steps timed for the reference (default: the system's per-env span)",
    )  # fmt: skip
    p.add_argument(
        "--rho0", type=float, default=None,
        help="the run's influence ratio rho0 (default: launch.py's); 0: no virtual data",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--diagnostics-cost", action="store_true",
        help="instead: the bound's diagnostics (bound/*, docs/rho.md) on against off, the "
             "two runs in this process taking turns iteration by iteration; prints their "
             "cost as a share of env steps/s, acting and learning apart",
    )  # fmt: skip
    p.set_defaults(run=run_system)


def _config(args: argparse.Namespace, run_dir: str, diagnostics: bool = True):
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
    if not diagnostics:
        argv += ["--no-diagnostics"]
    return parse(argv).cfg


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB; (0, 0) once it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    kib = {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines()[1:]
           if line.split()[-1] == "kB"}  # fmt: skip
    return kib.get("Rss", 0), kib.get("Pss", 0)


class PeakMemory:
    """Peak summed RSS and PSS (GiB) of this process and its descendants, polled in a thread
    while the ``with`` block runs. A poll of a training run's 13 processes costs ≈ 80 ms of
    this process's CPU (the kernel walks each one's page tables for ``smaps_rollup``): at 4
    polls a second that took a third of a core from the run it measured, so one a second."""

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s, self.rss_gib, self.pss_gib, self.processes = every_s, 0.0, 0.0, 0
        self.polls, self.error = 0, None
        self._stop = threading.Event()

    def _poll(self) -> None:
        try:
            while True:
                pids = descendants(os.getpid())
                mem = [_memory_kib(p) for p in pids]
                self.rss_gib = max(self.rss_gib, sum(m[0] for m in mem) / 2**20)
                self.pss_gib = max(self.pss_gib, sum(m[1] for m in mem) / 2**20)
                self.processes = max(self.processes, sum(1 for m in mem if m[0]))
                self.polls += 1
                if self._stop.wait(self.every_s):
                    return
        except Exception as err:  # no /proc (not Linux), ...: reported, never a silent zero
            self.error = f"{type(err).__name__}: {err}"

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


TIME_SPLIT = {"acting": "time/collect_s", "waiting": "time/wait_actors_s",
              "update": "time/update_s", "transfer": "time/fetch_s",
              "iteration": "time/iteration_s"}  # fmt: skip


def measure_system(cfg) -> tuple[float, dict]:
    """Steady-state env steps/s of a real training run (iterations 3.. of the run), the
    median seconds per iteration of each part (`TIME_SPLIT`) and the run's peak memory."""
    import ray

    from rlmpc.run.train import train

    with PeakMemory() as mem:
        run_dir = train(cfg)
        ray.shutdown()
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    a, b = rows[2], rows[-1]
    sps = (b["env_steps"] - a["env_steps"]) / (b["time"] - a["time"])
    split = {part: statistics.median(r[key] for r in rows[3:] if key in r)
             for part, key in TIME_SPLIT.items() if any(key in r for r in rows[3:])}  # fmt: skip
    return sps, {"iterations": len(rows), "last": b, "split": split, "memory": mem}


def reference_window(cfg, iterations: int) -> tuple[int, int]:
    """(steps stepped untimed, steps timed) of the reference's env: the span of its life that
    each of the system's envs is timed over (`measure_system`: iterations 3.. of the run)."""
    run = cfg.run
    per_env = max(cfg.ppo.n_steps // (run.num_actors * run.envs_per_actor), 1)
    return 3 * per_env, (iterations - 3) * per_env


class Reference:
    """The paper-faithful loop, timed in halves around the system run.

    Its env is stepped ``skip`` steps untimed first (`reference_window`); `time` then times
    ``steps`` acting steps (continuing the same episode from call to call) and one PPO update
    on a real iteration of data (collected fast with the batched planner, once). Timing half
    of the steps and an update before the system run and the rest after it puts a drift in
    the machine's speed (this 2-core VM's varies by a third within minutes) on both figures
    alike instead of on the ratio.
    """

    def __init__(self, cfg, seed: int, skip: int = 0) -> None:
        from dataclasses import replace

        from rlmpc.system.learner import Learner
        from rlmpc.system.records import FragmentId
        from rlmpc.system.worker import RolloutWorker, WorkerSpec

        torch.set_num_threads(1)
        spec = WorkerSpec(cfg.run.env, 1, cfg.run.num_candidates, replace(cfg.planner, backend="pytorch_mppi"),
                          cfg.networks, seed)  # fmt: skip
        self.worker, self.fid, self.n = RolloutWorker(0, spec), FragmentId, cfg.ppo.n_steps
        self.worker.collect(FragmentId(0, 0), 2 + skip, None, 0)  # warm-up, then into the window
        fast = RolloutWorker(0, replace(spec, n_envs=64, planner=cfg.planner))
        self.data = fast.collect(FragmentId(0, 0), self.n // 64, None, 0)[:2]
        model = self.worker.model
        self.learner = Learner(model.nobs, model.na, cfg.ppo, cfg.networks, cfg.influence_ratio)
        self.act_s, self.steps, self.updates = 0.0, 0, []

    def time(self, steps: int) -> None:
        """Time ``steps`` more acting steps and one more update."""
        start = time.perf_counter()
        self.worker.collect(self.fid(len(self.updates) + 1, 0), steps, None, 0)
        self.act_s, self.steps = self.act_s + time.perf_counter() - start, self.steps + steps
        real, virtual = self.data
        start = time.perf_counter()
        self.learner.train([real], [virtual] if virtual is not None else [])
        self.updates.append(time.perf_counter() - start)

    def figures(self) -> tuple[float, float, float]:
        """(env steps/s, s per acting step, s per update: the mean of the timed ones)."""
        act, update = self.act_s / self.steps, statistics.mean(self.updates)
        return 1.0 / (act + update / self.n), act, update


class _Side:
    """One side of the paired diagnostics benchmark: the run's actors (`RolloutWorker`s, in
    this process) and its learner, diagnostics on or off, timed per iteration."""

    def __init__(self, cfg, on: bool) -> None:
        from dataclasses import replace

        from rlmpc.system.worker import RolloutWorker

        spec = replace(cfg.worker_spec(), diagnostics=on)
        self.workers = [RolloutWorker(a, spec) for a in range(cfg.run.num_actors)]
        self.learner = replace(cfg.learner_spec(), diagnostics=on).build()
        self.steps = max(cfg.ppo.n_steps // (cfg.run.num_actors * spec.n_envs), 1)
        self.weights = self.learner.get_weights()
        self.act_s: list[float] = []  # all actors' CPU seconds, an iteration
        self.act_max_s: list[float] = []  # the slowest actor's
        self.learn_s: list[float] = []

    def iteration(self, index: int) -> bytes:
        """One learner iteration: every actor's fragment, then the update. Returns the real
        observations' bytes (the two sides must act alike: the diagnostics only observe)."""
        from rlmpc.system.records import FragmentId

        version = self.learner.version
        frags, actors = [], []
        for w_id, w in enumerate(self.workers):  # each actor's CPU seconds apart
            start = time.process_time()
            frags.append(w.collect(FragmentId(index, w_id), self.steps, self.weights, version))
            actors.append(time.process_time() - start)
        start = time.process_time()
        self.learner.train([f[0] for f in frags], [f[1] for f in frags if f[1] is not None])
        self.weights = self.learner.get_weights()
        self.learn_s.append(time.process_time() - start)
        self.act_s.append(sum(actors))
        self.act_max_s.append(max(actors))
        return b"".join(f[0].obs.tobytes() for f in frags)


def diagnostics_cost(args: argparse.Namespace) -> dict[str, float]:
    """The bound's diagnostics (`learners.bound`; on by default) against the same run without
    them, **paired**: both runs (same config, same seed) live in this process and take turns
    iteration by iteration (on first in even iterations, off first in odd ones), so that the
    machine's drift, which on this 2-core VM moves a whole run's env steps/s by up to a
    quarter within minutes, falls on both alike. An earlier form of this benchmark ran four
    whole system runs (off, on, on, off) and measured 10.2, 2.9 and 4.8 % on the same quiet
    machine: the drift between runs was larger than the effect (docs/rho.md).

    Each side is the run's actors and learner one after the other in one thread (the system
    runs them side by side on their own cores), timed in this process's CPU seconds
    (`time.process_time`, one torch thread), which another job on the machine stretches far
    less than it does wall time. Timed from iteration 4 on: the cost on each
    side, ``1 - t_off / t_on`` of acting and of learning, and of both together (serial), as a
    share of env steps/s; and an estimate of the system's: there the actors and the learner
    run side by side, each on its own core, so an iteration takes the longest of them, and
    the cost is ``1 - Σ max(slowest actor_off, learn_off) / Σ max(slowest actor_on,
    learn_on)`` (issue 30's budget: at most 0.05). An estimate: it leaves out what Ray adds
    per iteration (moving the fragments and their extra diagnostic arrays, ``[T, B, nobs+2]``
    floats beside the fragment's own), which the whole-run benchmark included and could not
    resolve. The timed iterations are an even number from an even index, half of them
    on-first; garbage is collected between the two sides, untimed. The two sides' real
    observations are compared bit for bit every iteration: the diagnostics only observe."""
    if args.iterations < 6:
        raise SystemExit("rlmpc.bench system: --diagnostics-cost needs --iterations >= 6")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(args, tmp)
    sides = {on: _Side(cfg, on) for on in (False, True)}
    same = True
    for i in range(args.iterations):
        order = (True, False) if i % 2 == 0 else (False, True)
        obs = {}
        for side in order:
            gc.collect()
            obs[side] = sides[side].iteration(i + 1)
        same = same and obs[True] == obs[False]
    off, on = sides[False], sides[True]
    timed = slice(4, 4 + 2 * ((args.iterations - 4) // 2))
    act = 1.0 - sum(off.act_s[timed]) / sum(on.act_s[timed])
    learn = 1.0 - sum(off.learn_s[timed]) / sum(on.learn_s[timed])
    t_off = [a + b for a, b in zip(off.act_s[timed], off.learn_s[timed], strict=True)]
    t_on = [a + b for a, b in zip(on.act_s[timed], on.learn_s[timed], strict=True)]
    both = 1.0 - sum(t_off) / sum(t_on)
    p_off = [max(a, b) for a, b in zip(off.act_max_s[timed], off.learn_s[timed], strict=True)]
    p_on = [max(a, b) for a, b in zip(on.act_max_s[timed], on.learn_s[timed], strict=True)]
    system = 1.0 - sum(p_off) / sum(p_on)
    per = sorted(1.0 - a / b for a, b in zip(t_off, t_on, strict=True))
    q = statistics.quantiles(per, n=4) if len(per) >= 2 else [per[0]] * 3
    steps = on.steps * len(on.workers) * on.workers[0].spec.n_envs
    print(
        f"  {len(t_on)} timed iterations of {steps} env steps a side; the two sides acted "
        f"alike: {same}"
    )
    print(
        f"  acting:   off {statistics.mean(off.act_s[timed]):.3f} s, on "
        f"{statistics.mean(on.act_s[timed]):.3f} s an iteration: cost {act:+.1%}"
    )
    print(
        f"  learning: off {statistics.mean(off.learn_s[timed]):.3f} s, on "
        f"{statistics.mean(on.learn_s[timed]):.3f} s an iteration: cost {learn:+.1%}"
    )
    print(
        f"  both (serial): off {steps * len(t_off) / sum(t_off):.0f}, on "
        f"{steps * len(t_on) / sum(t_on):.0f} env-steps/s: cost {both:+.1%} (per "
        f"iteration: median {q[1]:+.1%}, 25-75 % {q[0]:+.1%} to {q[2]:+.1%})"
    )
    print(
        f"  the system's, estimated (actors and learner side by side, an iteration the longest "
        f"of them): off {steps * len(p_off) / sum(p_off):.0f}, on {steps * len(p_on) / sum(p_on):.0f} "
        f"env-steps/s: cost {system:+.1%}"
    )
    if not same:
        raise SystemExit("rlmpc.bench system: the diagnostics changed the real data")
    return {"diagnostics_off_env_steps_per_s": steps * len(t_off) / sum(t_off),
            "diagnostics_on_env_steps_per_s": steps * len(t_on) / sum(t_on),
            "diagnostics_cost": both, "diagnostics_cost_acting": act,
            "diagnostics_cost_learning": learn,
            "diagnostics_cost_system": system}  # fmt: skip


def run_system(args: argparse.Namespace) -> dict[str, float]:
    if args.iterations < 4:
        raise SystemExit("rlmpc.bench system: --iterations must be >= 4")
    if args.diagnostics_cost:
        print(f"system bench, diagnostics on against off, paired: env={args.env}, "
              f"{args.iterations} iterations a side")  # fmt: skip
        return diagnostics_cost(args)
    if args.reference_steps is not None and args.reference_steps < 2:
        raise SystemExit("rlmpc.bench system: --reference-steps must be >= 2 (two halves)")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(args, tmp)
        run = cfg.run
        print(
            f"system bench: env={run.env} M={run.num_candidates} K={cfg.planner.num_samples} "
            f"H={cfg.planner.planning_horizon} actors={run.num_actors}×{run.envs_per_actor} envs, "
            f"n_steps={cfg.ppo.n_steps}, rho0={cfg.influence_ratio.rho0}, "
            f"{args.iterations} iterations"
        )
        skip, steps = reference_window(cfg, args.iterations)
        steps = args.reference_steps or steps
        reference = Reference(cfg, args.seed, skip)
        reference.time(steps // 2)  # half before the system run, half after (`Reference`)
        sps, info = measure_system(cfg)
        print(f"  system: {sps:.0f} env-steps/s over iterations 3..{info['iterations']}")
        reference.time(steps - steps // 2)
        ref_sps, act, update = reference.figures()
        print(f"  reference: {act * 1e3:.1f} ms per acting step (steps {skip}..{skip + steps} "
              f"of its env, half before the system run, half after), {update:.2f} s per "
              f"update (before: {reference.updates[0]:.2f}, after: {reference.updates[1]:.2f}) "
              f"-> {ref_sps:.1f} env-steps/s")  # fmt: skip
    split, mem, n = info["split"], info["memory"], cfg.ppo.n_steps
    print("  per iteration (median s): " + ", ".join(f"{k} {v:.3f}" for k, v in split.items()))
    figures = {
        "system_env_steps_per_s": sps,
        "reference_env_steps_per_s": ref_sps,
        "system_ratio": sps / ref_sps,
        "system_minutes_per_1M_steps": 1e6 / sps / 60,
        "reference_hours_per_1M_steps": 1e6 / ref_sps / 3600,
    }
    figures |= {f"split_{k}_s": v for k, v in split.items()}
    if split.get("update"):  # the learner alone (fetch, then update) could take this many
        figures["learner_ceiling_env_steps_per_s"] = n / (
            split["update"] + split.get("transfer", 0.0)
        )
    if split.get("acting"):  # each actor's fragment covers n / num_actors env steps
        figures["acting_ceiling_env_steps_per_s"] = n / split["acting"]
    if mem.error or not mem.polls:
        print(f"  peak memory not measured: {mem.error or 'never polled'}")
    else:
        figures |= {"peak_rss_gib": mem.rss_gib, "peak_pss_gib": mem.pss_gib,
                    "processes": float(mem.processes)}  # fmt: skip
    return figures
