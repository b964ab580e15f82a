"""What a run shows of its evaluations: table rows, the picture, the animation, W&B's config."""

from __future__ import annotations

import glob
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rlmpc.run.cli import main, parse
from rlmpc.run.media import episode_gif, frame_steps, table_row
from rlmpc.run.runlog import RunLogger, WandbConfig
from rlmpc.system.records import EpisodeStats, Trace, summarize
from tests import toy_env

TAB_BLUE = (31, 119, 180)  # the executed path
PLAN_GREEN = (65, 170, 65)  # the executed candidate's plan: tab:green at alpha 0.9 on white


def test_a_table_row_holds_each_columns_mean_and_std():
    stats = EpisodeStats(
        np.array([1.0, 3.0]), np.array([10, 20]), np.array([True, False]), np.array([0, 2]),
        {"final_distance": np.array([0.5, np.nan]), "never": np.array([np.nan, np.nan])},
    )  # fmt: skip
    row = table_row(summarize("toy-point", stats), 7, 700, final=False)
    assert row == {
        "iteration": 7, "env_steps": 700, "final": False, "episodes": 2,
        "success_rate_mean": 0.5, "success_rate_std": 0.5, "steps_mean": 15.0, "steps_std": 5.0,
        "reward_mean": 2.0, "reward_std": 1.0, "danger_steps_mean": 1.0, "danger_steps_std": 1.0,
        "final_distance_mean": 0.5, "final_distance_std": 0.0,
        "never_mean": None, "never_std": None,  # no episode had the figure
    }  # fmt: skip


def test_frames_are_every_step_or_spread_evenly_keeping_both_ends():
    assert frame_steps(5, 100).tolist() == [0, 1, 2, 3, 4, 5]
    f = frame_steps(499, 100)
    assert len(f) == 100 and f[0] == 0 and f[-1] == 499 and (np.diff(f) > 0).all()
    with pytest.raises(ValueError, match="max_frames"):
        frame_steps(10, 1)


def _pixels_near(frame: Image.Image, colour: tuple[int, int, int], tol: int = 30) -> int:
    a = np.asarray(frame.convert("RGB"), dtype=np.int64)
    return int((np.abs(a - np.array(colour)).max(-1) <= tol).sum())


def test_the_animation_draws_the_executed_path_growing_and_the_planned_candidates(tmp_path):
    t = np.linspace(0.0, 3.0, 31)
    positions = np.stack([t, 0.2 * np.sin(t)], -1)  # [31, 2]
    plans = np.stack([np.stack([positions[s : s + 4] + [0, 0.3 * (m + 1)] for m in range(2)])
                      for s in (0, 10, 20)])  # [P=3, M=2, H+1=4, 2]  # fmt: skip
    trace = Trace(positions, np.zeros((31, 0, 2)), np.array([0, 10, 20]), plans,
                  np.array([1.5, 0.8, 0.6, 0.6]), -12.0, False)  # fmt: skip
    gif = episode_gif(trace, toy_env.ToyModel(), tmp_path / "episode.gif", max_frames=16)
    im = Image.open(gif)
    assert im.n_frames == 16 and im.size == (256, 256)
    im.seek(0)
    first = _pixels_near(im, TAB_BLUE), _pixels_near(im, PLAN_GREEN)
    im.seek(15)
    last = _pixels_near(im, TAB_BLUE), _pixels_near(im, PLAN_GREEN)
    assert last[0] > first[0] + 100  # the executed path grew across the picture
    assert first[1] > 0 and last[1] > 0  # the executed candidate's plan is drawn throughout


def test_a_rewind_drops_the_evaluations_logged_after_the_checkpoint(tmp_path):
    logger = RunLogger(tmp_path, {}, WandbConfig(wandb_mode="disabled"), 100, "r", progress=False)
    for i in (1, 2, 3, 4):
        logger.log({"iteration": i, "env_steps": 10 * i})
        if i % 2 == 0:
            logger.evaluation({"iteration": i - 2, "env_steps": 10 * (i - 2), "final": False})
    logger.rewind(3)  # a restore to the checkpoint of iteration 3
    logger.log({"iteration": 4, "env_steps": 40})
    logger.evaluation({"iteration": 2, "env_steps": 20, "final": False})
    logger.close()
    rows = [json.loads(line) for line in open(tmp_path / "evaluations.jsonl")]
    assert [(r["iteration"], r["logged_at"]) for r in rows] == [(0, 2), (2, 4)]


def test_the_method_label_and_the_video_option_on_the_command_line(capsys):
    assert parse([]).cfg.method == "ppo-mppi-rho0.3"
    assert parse(["--influence-ratio-mode", "adaptive"]).cfg.method == "ppo-mppi-adaptive0.3"
    cfg = parse(["--wandb-method", "pure-mppi", "--wandb-group", "EXP", "--seed", "4"]).cfg
    assert cfg.method == "pure-mppi" and cfg.wandb.wandb_group == "EXP"
    assert list(cfg.wandb_config())[:4] == ["method", "env", "seed", "run"]
    assert cfg.wandb_config()["seed"] == 4
    assert parse(["--eval-video-frames", "0"]).cfg.run.eval_video_frames == 0
    with pytest.raises(SystemExit):
        parse(["--eval-video-frames", "1"])
    assert "--eval-video-frames: eval_video_frames must be in [2, 150]" in capsys.readouterr().err


def _wandb_records(path: Path):
    """The records of an offline W&B run's ``.wandb`` file: W&B's 7-byte header, then a
    LevelDB-style log of 32 KiB blocks (records of crc32, length, type: full, first, middle,
    last), each record a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, chunks = path.read_bytes(), 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _, n, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # a block's padding
            pos += left
            continue
        chunks, pos = chunks + data[pos + 7 : pos + 7 + n], pos + 7 + n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


@pytest.fixture
def toy():
    yield toy_env.register()
    toy_env.unregister()


def test_a_serial_run_logs_its_evaluations_picture_and_animation_to_wandb(toy, tmp_path):
    """The toy task, 2 iterations: a periodic evaluation (after iteration 1, filmed:
    --eval-video-every 1) and the final one; TensorBoard's events beside metrics.jsonl."""
    main(["--env", "toy-point", "--serial", "--runs-dir", str(tmp_path), "--run-name", "toy",
          "--no-progress", "--wandb-mode", "offline", "--wandb-group", "EXP",
          "--wandb-method", "m1", "--seed", "3", "--eval-video-every", "1"])  # fmt: skip
    run_dir = tmp_path / "toy"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (run_dir / "tensorboard").glob("events.out.tfevents.*")
    tb = EventAccumulator(str(events))
    tb.Reload()
    metrics = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    scalars = tb.Scalars("loss/value")
    assert [e.step for e in scalars] == [r["env_steps"] for r in metrics]
    assert [e.value for e in scalars] == pytest.approx([r["loss/value"] for r in metrics])
    assert {"rho", "sps", "loss/value", "restores"} <= set(tb.Tags()["scalars"])
    gif = Image.open(run_dir / "eval_episode.gif")
    final = json.loads((run_dir / "eval.json").read_text())
    lengths = {
        final["steps"]["mean"] - final["steps"]["std"],
        final["steps"]["mean"] + final["steps"]["std"],
    }
    assert gif.n_frames - 1 in lengths  # the first episode's steps, every one (toy: <= 40)
    rows = [json.loads(line) for line in open(run_dir / "evaluations.jsonl")]
    assert [(r["iteration"], r["env_steps"], r["final"]) for r in rows] == [(1, 32, False),
                                                                           (2, 64, True)]  # fmt: skip
    assert rows[1]["final_distance_mean"] == final["final_distance"]["mean"]
    assert rows[1]["danger_steps_std"] == final["danger_steps"]["std"]

    (offline,) = glob.glob(str(run_dir / "wandb" / "offline-run-*"))
    media = Path(offline) / "files" / "media"
    tables = [json.loads(p.read_text()) for p in media.glob("table/eval/table_*.table.json")]
    assert sorted(len(t["data"]) for t in tables) == [1, 2]  # after each evaluation
    table = max(tables, key=lambda t: len(t["data"]))
    assert table["columns"] == [k for k in rows[0] if k != "logged_at"]
    assert table["data"][1] == [rows[1][k] for k in table["columns"]]
    (image,) = media.glob("images/eval/episodes_*.png")
    assert image.read_bytes() == (run_dir / "eval_episodes.png").read_bytes()
    (trace,) = media.glob("videos/eval/episode_trace_*.gif")
    assert trace.read_bytes() == (run_dir / "eval_episode.gif").read_bytes()
    videos = {p.read_bytes() for p in media.glob("videos/eval/episode_video_*.mp4")}
    assert videos == {(run_dir / "eval_episode.mp4").read_bytes(),
                      (run_dir / "videos" / "eval_32.mp4").read_bytes()}  # fmt: skip

    (log,) = glob.glob(str(Path(offline) / "run-*.wandb"))
    records = list(_wandb_records(Path(log)))
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert run.run_group == "EXP"
    assert (config["method"], config["env"], config["seed"]) == ("m1", "toy-point", 3)
    assert config["run"]["seed"] == 3 and config["wandb"]["wandb_method"] == "m1"
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]  # fmt: skip
    last = history[-1]
    assert last["_step"] == 64 and last["eval/table/nrows"] == 2
    assert last["eval/episodes/_type"] == "image-file"
    assert last["eval/episode_video/_type"] == last["eval/episode_trace/_type"] == "video-file"
