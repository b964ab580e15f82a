"""Watching an agent: filmed evaluations (the same figures, real frames, the planner's paths
where the env maps them) and ``python -m rlmpc.enjoy`` on every env."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import envs
from envs import planner_config
from learners.policy import NetworkConfig
from rlmpc.enjoy import main as enjoy_main
from rlmpc.run.enjoy import HOLD_S
from rlmpc.run.media import EXECUTED, OTHERS, ZONE, overlaid
from rlmpc.system import checkpoint as ckpt
from rlmpc.system.records import Filming, Video, Weights
from rlmpc.system.worker import EVAL_ACTOR_ID, RolloutWorker, WorkerSpec
from tests import toy_env


@pytest.fixture
def toy():
    yield toy_env.register()
    toy_env.unregister()


def _toy_evaluator(render: bool = True) -> RolloutWorker:
    spec = WorkerSpec("toy-point", 3, 4, toy_env.ToyPlannerConfig(), NetworkConfig((16,)),
                      seed=3, keep_virtual=False, render=render)  # fmt: skip
    return RolloutWorker(EVAL_ACTOR_ID, spec)


def test_recording_and_filming_change_no_figure_of_an_evaluation(toy):
    """M-1 candidates drawn for the pictures and the frames rendered leave every episode as
    an evaluation that records nothing plays it (the toy's episodes move with any draw)."""
    worker = _toy_evaluator()
    plain = worker.evaluate(None, 5, seed=100, record=0)
    filmed = worker.evaluate(None, 5, seed=100, record=3, film=Filming(2, 8, 64))
    a, b = plain.episodes, filmed.episodes
    for field in ("returns", "lengths", "success", "danger_steps"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    np.testing.assert_array_equal(a.extra["final_distance"], b.extra["final_distance"])
    assert plain.traces == [] and len(filmed.traces) == 3
    assert [t.video is not None for t in filmed.traces] == [True, True, False]


def test_a_filmed_episode_keeps_evenly_spread_frames_and_maps_the_plans_onto_them(toy):
    """At most max_frames frames, every s-th step from 0 and the last state; the executed
    candidate's path starts at the point, drawn where the env draws it (its pixels)."""
    worker = _toy_evaluator()
    result = worker.evaluate(None, 1, seed=7, record=1, film=Filming(1, 8, 64))
    trace = result.traces[0]
    video = trace.video
    steps = len(trace.positions) - 1  # the toy truncates at 40
    assert steps == 40 and len(video.frames) <= 8 and video.frames.shape[1:] == (48, 64, 3)
    stride = video.steps[1] - video.steps[0]
    kept = video.steps[:-1]
    assert video.steps[-1] == steps and (kept == np.arange(len(kept)) * stride).all()
    assert video.fps == pytest.approx(10 / stride)  # the toy's render_fps, real time
    env = worker.envs[0].unwrapped
    starts = video.plans[:-1, 0, 0]  # [F-1, 2]: where each frame's executed path begins
    np.testing.assert_allclose(starts, env.pixels(trace.positions[video.steps[:-1]]), atol=1e-3)
    assert np.isnan(video.plans[-1]).all()  # the last state: no plan
    env.reset(seed=7)  # the first frame is the env's own at the episode's start
    np.testing.assert_array_equal(video.frames[0], env.render())


def _near(frame: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int((np.abs(frame.astype(int) - colour).max(-1) < 10).sum())


def test_the_overlay_draws_the_candidates_and_the_zone_where_the_env_maps_points():
    frames = np.full((2, 40, 60, 3), 255, np.uint8)
    path = np.stack([np.linspace(5, 50, 6), np.full(6, 20.0)], -1)  # a row across the frame
    plans = np.stack([np.stack([path, path + [0, 10]]), np.full((2, 6, 2), np.nan)])
    zone = np.array([[10, 2], [30, 2], [30, 8], [10, 8]], np.float32)
    video = Video(frames, np.array([0, 3]), plans.astype(np.float32), zone, 10.0)
    drawn = overlaid(video)
    assert _near(drawn[0], EXECUTED) >= 40 and _near(drawn[0], OTHERS) >= 40  # two lines
    assert _near(drawn[0][20:21], EXECUTED) >= 40  # candidate 0 along row 20
    assert _near(drawn[1], EXECUTED) == _near(drawn[1], OTHERS) == 0  # no plan: none drawn
    assert _near(drawn[1], ZONE) >= 40  # the zone's outline on every frame
    bare = video._replace(plans=np.zeros((2, 0, 0, 2), np.float32), zone=np.zeros((0, 2)))
    assert overlaid(bare) is frames  # an env that maps no points: its frames alone


def test_an_env_that_renders_nothing_is_evaluated_without_frames(toy):
    result = _toy_evaluator(render=False).evaluate(None, 2, seed=7, record=1, film=Filming())
    assert result.traces[0].video is None


def _checkpoint(env: str, root: Path) -> Path:
    """A run directory holding one checkpoint of a fresh policy on ``env`` (a small planner)."""
    spec = WorkerSpec(env, 1, 3, planner_config(env, num_samples=8), NetworkConfig((8,)), seed=5)
    worker = RolloutWorker(0, spec)
    state = ckpt.Checkpoint(
        counters={"iteration": 1, "env_steps": 8}, recent=[], version=1, learner={},
        weights=Weights(worker.policy.state_dict()), worker=spec,
        config={"run": {"env": env, "seed": 0}},
    )  # fmt: skip
    run_dir = root / env
    ckpt.save_checkpoint(run_dir, 1, state)
    return run_dir


@pytest.mark.parametrize("env", ["acrobot", "lunarlander", "racing"])
def test_enjoy_films_the_envs_own_frames_into_an_mp4(env, tmp_path, capsys):
    import imageio_ffmpeg

    run_dir = _checkpoint(env, tmp_path)
    enjoy_main([str(run_dir), "--episodes", "1", "--max-steps", "12", "--width", "128"])
    assert "return" in capsys.readouterr().out
    reader = imageio_ffmpeg.read_frames(str(run_dir / "enjoy.mp4"))
    meta = reader.__next__()
    frames = [np.frombuffer(f, np.uint8).reshape(meta["size"][1], meta["size"][0], 3)
              for f in reader]  # fmt: skip
    fps = envs.make(env).metadata["render_fps"]
    assert meta["fps"] == pytest.approx(fps)
    assert len(frames) == 13 + math.ceil(HOLD_S * fps)  # 12 steps, the last state held
    # frame 0 is the env's own picture of the first evaluation episode's start (H.264 is lossy)
    e = envs.make(env, render_mode="rgb_array")
    e.reset(seed=1_000_000)  # the run's first evaluation episode (seed 0)
    own = np.asarray(Image.fromarray(e.render()).resize(meta["size"], Image.Resampling.BILINEAR))
    assert np.abs(frames[0].astype(int) - own).mean() < 6
    assert np.abs(frames[-1].astype(int) - frames[0]).mean() > 0  # it moved


def test_enjoy_refuses_an_env_without_frames(toy, tmp_path, capsys):
    class Blind(toy_env.ToyEnv):
        metadata = {"render_modes": []}

    blind = envs.register(envs.EnvSpec("toy-blind", "rlmpc-tests/ToyBlind-v0", Blind,
                                       toy_env.ToyPlannerConfig))  # fmt: skip
    try:
        run_dir = _checkpoint(blind.name, tmp_path)
        with pytest.raises(SystemExit) as err:
            enjoy_main([str(run_dir)])
        assert err.value.code == 1 and "renders no rgb_array frames" in capsys.readouterr().err
    finally:
        envs.registry._REGISTRY.pop(blind.name)
        envs.registry.ENV_IDS.pop(blind.name)


def test_a_filming_evaluator_renders_only_where_the_env_can(toy):
    """``render`` builds the envs with render_mode='rgb_array' only where the env's class
    declares it (the registry reads it without building one)."""
    assert "rgb_array" in envs.spec("toy-point").render_modes()
    assert envs.spec("acrobot").render_modes() == ("rgb_array",)
    worker = _toy_evaluator()
    assert worker.renders and worker.envs[0].unwrapped.render_mode == "rgb_array"
    assert not _toy_evaluator(render=False).renders
