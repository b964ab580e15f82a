"""Faults injected on purpose (`rlmpc.system.faults`): each costs its episode, never the run.

The worker tests force one fault at a known step (the injector's ``schedule``) in one env of
a toy-env worker and compare it with a twin worker without the fault: the other envs act
exactly as the twin's, the faulted env as the twin's up to the fault, and exactly one episode
is dropped and counted under its kind. No Ray starts here.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from learners.policy import NetworkConfig
from rlmpc.run.cli import parse
from rlmpc.run.train import train
from rlmpc.system.checkpoint import load_checkpoint
from rlmpc.system.faults import KINDS, STALL_PAST_TIMEOUT, FaultInjector, InjectedFault, parse_rates
from rlmpc.system.records import EpisodeStats, FragmentId
from rlmpc.system.worker import RolloutWorker, WorkerSpec
from tests import toy_env

DETECTED = {"raise": "raise", "nan_obs": "nan", "nan_reward": "nan", "stall": "stall"}


@pytest.fixture
def toy():
    toy_env.register()
    yield
    toy_env.unregister()


def test_parse_rates_takes_kind_prob_entries_and_refuses_the_rest():
    assert parse_rates(["raise=0.5", "stall=1"]) == {"raise": 0.5, "stall": 1.0}
    assert parse_rates([]) == {}
    for bad in ["raise=0", "raise=1.5", "raise=nan", "raise", "bogus=0.1", "=0.1"]:
        with pytest.raises(ValueError, match="KIND=PROB"):
            parse_rates([bad])
    with pytest.raises(ValueError, match="twice"):
        parse_rates(["nan_obs=0.1", "nan_obs=0.2"])


def _steps(env: gym.Env, n: int, seed: int = 5) -> list[tuple[np.ndarray, float]]:
    env.reset(seed=seed)
    u = np.zeros(env.action_space.shape, env.action_space.dtype)
    return [env.step(u)[:2] for _ in range(n)]


def test_injector_draws_its_own_stream_and_leaves_the_env_untouched():
    """Same seed, same faults; the env steps exactly as unwrapped, rewards aside where hit."""
    make = lambda seed: FaultInjector(envs.make("acrobot"), {"nan_reward": 0.2}, seed)
    a, b, c = (_steps(make(seed), 60) for seed in (1, 1, 2))
    clean = _steps(envs.make("acrobot"), 60)
    hit = lambda run: [not np.isfinite(r) for _, r in run]
    assert hit(a) == hit(b) != hit(c) and 3 < sum(hit(a)) < 30
    for (o, r), (o_ref, r_ref), h in zip(a, clean, hit(a), strict=True):
        np.testing.assert_array_equal(o, o_ref)
        assert h or r == r_ref


@pytest.mark.parametrize("kind", KINDS)
def test_a_scheduled_fault_fires_at_its_step(kind):
    env = FaultInjector(envs.make("acrobot"), schedule={3: kind}, stall_seconds=0.02)
    env.reset(seed=0)
    u = np.zeros(env.action_space.shape, env.action_space.dtype)
    for _ in range(3):
        o, r, *_ = env.step(u)
        assert np.isfinite(o).all() and np.isfinite(r)
    if kind == "raise":
        with pytest.raises(InjectedFault):
            env.step(u)
        return
    start = time.perf_counter()
    o, r, *_ = env.step(u)
    took = time.perf_counter() - start
    assert np.isfinite(o).all() == (kind != "nan_obs")
    assert np.isfinite(r) == (kind != "nan_reward")
    assert took >= 0.02 or kind != "stall"
    assert np.isfinite(env.step(u)[1])  # once


def _toy_spec(**kw) -> WorkerSpec:
    return WorkerSpec(
        "toy-point", 3, 3, toy_env.ToyPlannerConfig(), NetworkConfig(hidden_sizes=(16,)), seed=4,
        **kw,
    )  # fmt: skip


def _concat(parts):
    """Fields along time, less the optional ones a worker leaves None (PO-MPC's candidates)."""
    return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))
            if parts[0][i] is not None]  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_each_fault_costs_exactly_its_episode(toy, kind):
    T0, T1, r = 11, 49, 1  # env 1's step 10 (the last of the first fragment) fails
    # a timeout far above a toy step's time even on a loaded machine (its p99.9: ~50 ms)
    timeout = 0.5 if kind == "stall" else math.inf
    torch.manual_seed(0)  # the same initial policy for both
    faulty = RolloutWorker(0, _toy_spec(env_step_timeout=timeout))
    torch.manual_seed(0)
    twin = RolloutWorker(0, _toy_spec())
    stall = STALL_PAST_TIMEOUT * 0.5
    faulty.envs[r] = FaultInjector(faulty.envs[r], schedule={T0 - 1: kind}, stall_seconds=stall)
    first, _, res0 = faulty.collect(FragmentId(0, 0), T0, None, 0)
    assert res0.episodes.faults == {DETECTED[kind]: 1}
    assert (faulty.acting.warm[r] == 0).all()  # the new episode starts cold
    second, virtual, res1 = faulty.collect(FragmentId(1, 0), T1, None, 0)
    assert res1.episodes.faults == {}  # counted once
    real = _concat([first, second])
    ref = _concat([twin.collect(FragmentId(i, 0), t, None, 0)[0] for i, t in enumerate((T0, T1))])
    # nothing non-finite reaches the learner
    assert all(np.isfinite(a.astype(float)).all() for a in (*real, *virtual))
    # the other envs act exactly as without the fault; env 1 until it
    others = [0, 2]
    for a, b in zip(real, ref, strict=True):
        np.testing.assert_allclose(a[:, others], b[:, others], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a[: T0 - 1, r], b[: T0 - 1, r], rtol=1e-5, atol=1e-6)
    obs, _, _, rewards, terminated, truncated, next_obs = real
    t = T0 - 1  # the faulted step: a truncation at s_t, reward 0
    assert truncated[t, r] and not terminated[t, r] and rewards[t, r] == 0
    np.testing.assert_array_equal(next_obs[t, r], obs[t, r])
    # exactly one episode dropped: every other ended episode is counted, that one is not
    done = real[4] | real[5]
    stats = EpisodeStats.concat([res0.episodes, res1.episodes])
    assert len(stats.returns) == done.sum() - 1 and stats.faults == {DETECTED[kind]: 1}
    assert stats.lengths.max() <= toy_env.STEPS  # its steps are not added to the next one
    ended_others = (ref[4] | ref[5])[:, others].sum()
    assert ended_others == done[:, others].sum() and ended_others >= 2


def test_only_the_training_actors_envs_are_wrapped(toy):
    cfg = parse(["--env", "toy-point", "--inject-faults", "raise=0.1", "stall=0.2",
                 "--env-step-timeout", "0.5"]).cfg  # fmt: skip
    spec = cfg.worker_spec()
    assert spec.inject_faults == (("raise", 0.1), ("stall", 0.2)) and spec.env_step_timeout == 0.5
    assert cfg.eval_spec(5).inject_faults == ()
    worker = RolloutWorker(0, spec)
    assert all(isinstance(e, FaultInjector) and e.stall_seconds == 0.75 for e in worker.envs)
    seeds = [e.rng.bit_generator.state["state"]["state"] for e in worker.envs]
    assert len(set(seeds)) == len(seeds)  # each env draws its own faults
    assert not any(isinstance(e, FaultInjector) for e in RolloutWorker(0, cfg.eval_spec(5)).envs)
    with pytest.raises(ValueError, match="finite env_step_timeout"):
        RolloutWorker(0, replace(spec, env_step_timeout=math.inf))


@pytest.mark.parametrize(
    "args", [["--inject-faults", "raise=2"], ["--inject-faults", "bogus=0.1"],
             ["--env-step-timeout", "0"]],
)  # fmt: skip
def test_bad_fault_options_are_refused_naming_the_option(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and args[0] in err
    if args[0] == "--inject-faults":
        assert all(k in err for k in KINDS) and "0 < PROB <= 1" in err


def test_a_serial_run_with_faults_finishes_with_finite_losses(tmp_path):
    cfg = parse(
        ["--env", "acrobot", "--num-actors", "2", "--envs-per-actor", "4", "--n-steps", "128",
         "--batch-size", "32", "--n-epochs", "1", "--hidden-sizes", "32", "32",
         "--num-samples", "16", "--total-env-steps", "1024", "--eval-every", "0",
         "--final-eval-episodes", "0", "--checkpoint-every", "100", "--threads", "1",
         "--runs-dir", str(tmp_path), "--run-name", "faults", "--no-progress",
         "--wandb-mode", "disabled",
         "--inject-faults", "raise=0.002", "nan_obs=0.002", "nan_reward=0.002"]
    ).cfg  # fmt: skip
    run_dir = train(cfg, serial=True)
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    assert [r["env_steps"] for r in rows] == [128 * i for i in range(1, 9)]
    losses = [v for r in rows for k, v in r.items() if k.startswith("loss/")]
    assert losses and all(math.isfinite(v) for v in losses)
    assert rows[-1]["episodes_faulted"] > 0
    assert rows[-1]["episodes_faulted"] == sum(
        r[f"faults/{k}"] for r in rows for k in ("raise", "nan", "stall")
    )
    assert rows[-1]["episodes_faulted"] == sum(
        int(n) for line in (run_dir / "events.log").read_text().splitlines()
        if "to faults" in line for n in [line.split(" dropped ")[1].split()[0]]
    )  # fmt: skip
    assert load_checkpoint(run_dir).worker.inject_faults == (
        ("raise", 0.002), ("nan_obs", 0.002), ("nan_reward", 0.002),
    )  # fmt: skip


def test_a_snapshot_carries_the_fault_draws():
    """A worker restored from a snapshot draws the same faults as the original from there on."""
    from rlmpc.system.faults import FaultInjector

    env = FaultInjector(envs_make_acrobot(), {"raise": 0.5}, seed=3)
    env.reset(seed=0)
    for _ in range(5):
        env._firing()
    state = env.get_state()
    ahead = [sorted(env._firing()) for _ in range(20)]
    env.set_state(state)
    assert [sorted(env._firing()) for _ in range(20)] == ahead


def envs_make_acrobot():
    import envs

    return envs.make("acrobot")
