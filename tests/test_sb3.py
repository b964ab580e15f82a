"""The Stable-Baselines3 baselines (`rlmpc.baselines.sb3`): Tables 3-4 on the built models,
checkpoint-and-continue through a Ray Tune cell killed with ``kill -9``, and the evaluation
episodes PPO-MPPI is judged on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from rlmpc.baselines import evaluate_policy, first_eval_seed  # noqa: E402
from rlmpc.baselines.sb3 import build_model, main, params, replay_digest, train_sb3  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def test_ppo_is_table_3():
    """Table 3 of the paper (App. C), as printed, read off the SB3 model that trains."""
    m = build_model("ppo", "acrobot", 0)
    assert m.learning_rate == 3e-4 and m.lr_schedule(1.0) == 3e-4
    assert m.policy.optimizer.param_groups[0]["lr"] == 3e-4
    assert (m.n_steps, m.batch_size, m.n_epochs) == (2048, 64, 10)
    assert (m.gamma, m.gae_lambda) == (0.99, 0.95)
    assert m.clip_range(1.0) == m.clip_range(0.0) == 0.2  # SB3 makes it a schedule
    assert (m.ent_coef, m.vf_coef) == (0.0, 0.5)
    assert m.n_envs == 1 and m.rollout_buffer.buffer_size == 2048


def test_sac_is_table_4():
    """Table 4 of the paper (App. C), as printed, read off the SB3 model that trains."""
    import torch
    from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit

    m = build_model("sac", "acrobot", 0)
    assert m.learning_rate == 3e-4
    for opt in (m.actor.optimizer, m.critic.optimizer, m.ent_coef_optimizer):
        assert opt.param_groups[0]["lr"] == 3e-4
    assert m.buffer_size == m.replay_buffer.buffer_size == 1_000_000
    assert (m.batch_size, m.tau, m.gamma) == (256, 0.005, 0.99)
    assert m.train_freq == TrainFreq(1, TrainFrequencyUnit.STEP) and m.gradient_steps == 1
    # "auto": learnt (an optimiser of its own), from 1.0
    assert m.ent_coef == "auto" and torch.exp(m.log_ent_coef).item() == pytest.approx(1.0)
    assert m.target_update_interval == 1


def test_bad_hyperparameters_and_input_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"unknown sac hyperparameters \['n_epochs'\]"):
        params("sac", {"n_epochs": 3})
    with pytest.raises(ValueError, match="gamma must be in"):
        params("ppo", {"gamma": 1.5})
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        params("sac", {"batch_size": 0})
    with pytest.raises(ValueError, match=r"algo must be one of \['ppo', 'sac'\]"):
        train_sb3("td3", "acrobot", 0, 100, tmp_path)
    with pytest.raises(ValueError, match="env must be one of"):
        train_sb3("sac", "cartpole", 0, 100, tmp_path)
    with pytest.raises(ValueError, match="env_steps must be >= 1"):
        train_sb3("sac", "acrobot", 0, 0, tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--seed", "-1"], "--seed"),
        (["--seed", str(2**32)], "--seed"),
        (["--env-steps", "0"], "--env-steps"),
        (["--eval-episodes", "0"], "--eval-episodes"),
        (["--eval-seed", str(2**32 - 2)], "--eval-seed"),
        (["--checkpoint-steps", "0"], "--checkpoint-steps"),
        (["--out", "/proc/never"], "--out"),
        (["--env", "mars"], "--env"),
    ],
)
def test_the_command_checks_its_options(args, option, tmp_path, capsys):
    base = {"--algo": "sac", "--env": "acrobot", "--env-steps": "10", "--out": str(tmp_path)}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    with pytest.raises(SystemExit) as err:
        main([x for kv in base.items() for x in kv])
    assert err.value.code == 2 and option in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_continued_run_keeps_its_curve_and_refuses_another_runs_checkpoint(tmp_path):
    small = {"n_steps": 64, "batch_size": 32, "n_epochs": 1}
    first = train_sb3("ppo", "acrobot", 2, 128, tmp_path, eval_episodes=1, overrides=small)
    assert set(first) == {"eval", "curve", "config", "wall_time_s"}
    assert set(first["curve"][0]) == {"iteration", "env_steps", "episode_return",
                                      "success_rate", "wall_time_s"}  # fmt: skip
    assert [r["env_steps"] for r in first["curve"]] == [64, 128]
    more = train_sb3("ppo", "acrobot", 2, 256, tmp_path, eval_episodes=1, overrides=small)
    assert more["curve"][:2] == first["curve"]
    assert [r["iteration"] for r in more["curve"]] == [1, 2, 3, 4]
    assert more["eval"]["env_steps"] == 256 and more["wall_time_s"] > first["wall_time_s"]
    attempts = [json.loads(x) for x in (tmp_path / "attempts.jsonl").read_text().splitlines()]
    assert [(a["attempt"], a["env_steps"]) for a in attempts] == [(1, 0), (2, 128)]
    assert attempts[1]["n_updates"] == 2  # SB3 counts epochs: two rollouts of one epoch
    with pytest.raises(ValueError, match="checkpoint of another run"):
        train_sb3("ppo", "acrobot", 3, 512, tmp_path, eval_episodes=1, overrides=small)
    with pytest.raises(ValueError, match="checkpoint of another run"):
        train_sb3("ppo", "acrobot", 2, 512, tmp_path, eval_episodes=1, overrides={})


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc): Ray starts the trial's worker in a process
    group of its own, which a kill of the driver's group misses."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree


def _pointer_steps(work: Path) -> int:
    try:
        return json.loads((work / "checkpoint.json").read_text())["env_steps"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


@pytest.fixture(scope="module")
def killed_cell(tmp_path_factory):
    """Table 1's ``sb3-sac`` cell on Acrobot through Tune (smoke preset: a checkpoint every 64
    env steps, 512 in all), the sweep killed with ``kill -9`` once a checkpoint at >= 128 is
    written, then the same command run again. Returns what the tests compare."""
    from stable_baselines3.common.save_util import load_from_pkl

    root = tmp_path_factory.mktemp("sb3-cell")
    results, runs = root / "results", root / "runs"
    args = [sys.executable, "-m", "rlmpc.reproduce", "table1", "--preset", "smoke", "--methods",
            "sb3-sac", "--env-steps", "sb3-sac=512", "--results", str(results), "--runs",
            str(runs), "--wandb-mode", "disabled"]  # fmt: skip
    work = runs / "table1" / "acrobot" / "sb3-sac" / "seed0"
    cell = results / "table1" / "acrobot" / "sb3-sac" / "seed0.json"
    driver = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while _pointer_steps(work) < 128 and driver.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint at >= 128 env steps"
            time.sleep(0.05)
    finally:
        for pid in _process_tree(driver.pid):  # the driver, its Ray and the trial
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        driver.wait()
    killed_at = _pointer_steps(work)
    time.sleep(0.5)
    assert _pointer_steps(work) == killed_at and not cell.exists()  # dead midway
    ckpt = work / json.loads((work / "checkpoint.json").read_text())["checkpoint"]
    before = {"state": json.loads((ckpt / "state.json").read_text()),
              "buffer": load_from_pkl(ckpt / "replay_buffer.pkl")}  # fmt: skip
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "1 cells run, 0 already finished, 0 stopped early by the scheduler, 0 failed" in r.stdout
    final = work / json.loads((work / "checkpoint.json").read_text())["checkpoint"]
    return {"killed_at": killed_at, "before": before, "work": work, "final": final,
            "cell": json.loads(cell.read_text())}  # fmt: skip


def test_a_killed_sac_cell_continues_from_its_last_checkpoint(killed_cell):
    from stable_baselines3.common.save_util import load_from_pkl

    killed_at, before = killed_cell["killed_at"], killed_cell["before"]
    assert 128 <= killed_at < 512 and killed_at % 64 == 0
    assert before["state"]["env_steps"] == killed_at
    attempts = [json.loads(x) for x in (killed_cell["work"] / "attempts.jsonl").read_text()
                .splitlines()]  # fmt: skip
    assert [a["env_steps"] for a in attempts] == [0, killed_at]
    # at restart: the killed run's step count, update count and replay buffer, exactly
    restart = attempts[1]
    assert restart["n_updates"] == before["state"]["n_updates"] == killed_at - 32
    assert restart["replay_buffer"] == replay_digest(before["buffer"])
    assert restart["replay_buffer"]["size"] == killed_at
    # and it went on from there: the buffer it ended with starts with the killed run's
    end = load_from_pkl(killed_cell["final"] / "replay_buffer.pkl")
    assert end.pos == 512 and not end.full
    for name in BUFFER_ARRAYS:
        np.testing.assert_array_equal(getattr(end, name)[:killed_at],
                                      getattr(before["buffer"], name)[:killed_at])  # fmt: skip
    cell = killed_cell["cell"]
    assert cell["kind"] == "sb3-sac" and cell["tune_trial"].startswith("_trial_")
    assert cell["budget"] == {"env_steps": 512, "eval_episodes": 1}
    assert cell["eval"]["env_steps"] == 512 and cell["config"]["library"] == "stable-baselines3"
    # the curve continued (the killed run's rows up to its checkpoint, then the new ones), and
    # so did the wall time
    n = len(before["state"]["curve"])
    assert cell["curve"][:n] == before["state"]["curve"]
    assert [r["iteration"] for r in cell["curve"]] == list(range(1, len(cell["curve"]) + 1))
    assert [r["env_steps"] for r in cell["curve"][n:]] == list(range(killed_at + 64, 513, 64))
    assert cell["wall_time_s"] > cell["curve"][-1]["wall_time_s"] > before["state"]["wall_time_s"]


def test_a_cell_is_evaluated_on_ppo_mppis_episodes(killed_cell):
    """The cell's evaluation: the final model's mean action on the episodes from
    `first_eval_seed` (the seed a PPO-MPPI run of that seed starts its evaluation from)."""
    from stable_baselines3 import SAC

    from rlmpc.run.cli import parse

    ev = killed_cell["cell"]["eval"]
    ppo_mppi = parse(["--env", "acrobot", "--seed", "0"]).cfg.run.first_eval_seed
    assert ev["eval_seed"] == first_eval_seed(0) == ppo_mppi and ev["seed"] == 0
    model = SAC.load(killed_cell["final"] / "model.zip", device="cpu")
    again = evaluate_policy("acrobot", lambda o: model.predict(o, deterministic=True)[0],
                            ev["episodes"], ppo_mppi)  # fmt: skip
    assert {k: ev[k] for k in again} == again
