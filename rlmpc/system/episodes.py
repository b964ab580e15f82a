"""Episodes as a rollout worker runs them: the figures of those that end, and what comes next.

`EpisodeTracker` keeps the running sums of the episodes in flight and the figures of those
that ended (return, length, success, steps in the danger zone, and the env's own figures
from the registry); an episode cut short by a failing env step is dropped and only counted. What happens when an episode ends is the acting mode's:

* `Training`: the env starts its next episode from its own random stream, forever;
* `Evaluation`: the env starts evaluation episode ``seed + i`` until ``N`` have started,
  then rests; the first ``record`` episodes are recorded for the pictures (`Trace`: the
  executed path, the candidates' planned paths every ``plan_every`` steps, the zone), and
  the first ``film.episodes`` of them filmed in the env's own frames (`Reel`, `Video`).

Recording changes nothing an evaluation measures: the executed action is the mean's plan,
made with the evaluation's own noise whether or not its episode is recorded, and the M-1
candidates drawn for the pictures come from a generator of their own (`Evaluation.gen`),
planned apart with the same noise; rendering draws no random numbers.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import torch

import envs
from envs.base import env_pixels
from rlmpc.system.records import EpisodeStats, Filming, Trace, Video

_log = logging.getLogger(__name__)


def guarded_step(env: Any, u: np.ndarray, timeout: float, who: tuple[int, int]) -> tuple | str:
    """``env.step(u)``, or the fault that costs its episode: 'raise' (the step raised), 'nan'
    (a non-finite observation or reward), 'stall' (slower than ``timeout`` s). ``who``:
    (actor, env) for the log."""
    start = time.perf_counter()
    try:
        out = env.step(u)
    except Exception as err:  # whatever the env raises costs its episode, not the actor
        _log.info("actor %d, env %d: step raised %r; episode dropped", *who, err)
        return "raise"
    if not (math.isfinite(out[1]) and all(map(math.isfinite, np.ravel(out[0]).tolist()))):
        return "nan"  # (plain Python on the few numbers: ~1 µs where NumPy's took ~3)
    if time.perf_counter() - start > timeout:
        return "stall"
    return out


class EpisodeTracker:
    """Running sums of the ``n`` envs' episodes in flight, and the list of those that ended."""

    def __init__(self, n: int, env: str) -> None:
        self.env = env
        self.ret = np.zeros(n)
        self.len = np.zeros(n, np.int64)
        self.danger = np.zeros(n, np.int64)
        self.ended: list[tuple[float, int, bool, int, dict[str, float]]] = []
        self.faults: dict[str, int] = {}

    def step(self, b: int, reward: float, info: dict[str, Any]) -> None:
        self.ret[b] += reward
        self.len[b] += 1
        self.danger[b] += int(bool(info.get("in_danger", False)))

    def end(self, b: int, info: dict[str, Any]) -> None:
        spec = envs.spec(self.env)
        self.ended.append(
            (self.ret[b], int(self.len[b]), spec.success(info), int(self.danger[b]),
             spec.episode_metrics(info))
        )  # fmt: skip
        self.clear(b)

    def clear(self, b: int) -> None:
        """Forget env ``b``'s episode in flight (it restarts without ending)."""
        self.ret[b], self.len[b], self.danger[b] = 0.0, 0, 0

    def drop(self, b: int, fault: str) -> None:
        """Env ``b``'s episode was cut short by a ``fault``: counted as such, not as ended."""
        self.faults[fault] = self.faults.get(fault, 0) + 1
        self.clear(b)

    def pop(self) -> EpisodeStats:
        """The ended (and the faulted) episodes since the last `pop`."""
        ended, self.ended = self.ended, []
        faults, self.faults = self.faults, {}
        keys = sorted({k for e in ended for k in e[4]})
        return EpisodeStats(
            np.array([e[0] for e in ended], dtype=np.float64),
            np.array([e[1] for e in ended], dtype=np.int64),
            np.array([e[2] for e in ended], dtype=bool),
            np.array([e[3] for e in ended], dtype=np.int64),
            {k: np.array([e[4].get(k, np.nan) for e in ended]) for k in keys},
            faults,
        )


class Training:
    """Acting to train: explore (M candidates, a uniform one executed), episodes forever."""

    explore = True
    drops_faults = True
    """a failing env step costs its episode (`RolloutWorker._act`), never the worker"""

    def after_step(self, r: int, env: Any) -> None:
        return None

    def next_episode(self, r: int, env: Any, tracker: EpisodeTracker) -> np.ndarray | None:
        """The first observation of env ``r``'s next episode (None: the env rests)."""
        return env.reset()[0]

    def restart(self, r: int, env: Any) -> np.ndarray:
        """After an episode lost to the env's simulator: a fresh one, from the env's stream."""
        return env.reset()[0]


def _even_size(width: int, height: int, max_width: int) -> tuple[int, int]:
    """A frame's size scaled down to at most ``max_width`` across, both sides even (what
    H.264's 4:2:0 frames need)."""
    factor = min(1.0, max_width / width)
    return max(2, round(width * factor / 2) * 2), max(2, round(height * factor / 2) * 2)


class Reel:
    """The frames of one filmed episode (`Filming`): ``env.render()`` every ``stride`` steps,
    scaled to at most ``width`` pixels across; when a frame would make ``max_frames`` of them,
    every other one is dropped and ``stride`` doubles, so the frames stay evenly spread (steps
    0, s, 2s...) and at most ``max_frames - 1``. The episode's last state is always the last
    frame. Each frame keeps the
    candidates' planned paths from its state and the zone's corners, in its pixels
    (`envs.base.Pixels`), where the env maps its plane onto its frames."""

    def __init__(self, film: Filming, env: Any, zone: np.ndarray) -> None:
        if film.max_frames < 2 or film.width < 2:
            raise ValueError(f"filming needs max_frames >= 2 and width >= 2, got {film}")
        self.film, self.stride = film, 1
        self.frames: list[np.ndarray] = []
        self.steps: list[int] = []
        self.plans: list[np.ndarray | None] = []
        self.pixels = env_pixels(env)
        self.render_fps = float(env.metadata.get("render_fps", 30))
        cx, cy, w, h = (float(v) for v in zone)
        self.zone_xy = np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy - h / 2],
                                 [cx + w / 2, cy + h / 2], [cx - w / 2, cy + h / 2]])  # fmt: skip
        self.scale = np.ones(2)  # pixels of the kept frames per pixel of the env's

    def wants(self, t: int) -> bool:
        return t % self.stride == 0

    def shoot(self, t: int, env: Any, plan_xy: np.ndarray | None) -> None:
        """The frame of env's state at step ``t``, with ``plan_xy [M, H+1, 2]`` (the plane of
        `PlannerModel.position`; None: no plan drawn on it)."""
        frame = env.render()
        if frame is None:
            return
        from PIL import Image

        height, width = frame.shape[:2]
        size = _even_size(width, height, self.film.width)
        if size != (width, height):
            frame = np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR))
        self.scale = np.array([size[0] / width, size[1] / height])
        self.frames.append(np.ascontiguousarray(frame, dtype=np.uint8))
        self.steps.append(t)
        mapped = None if self.pixels is None or plan_xy is None else self.pixels(plan_xy)
        self.plans.append(None if mapped is None else (mapped * self.scale).astype(np.float32))
        if plan_xy is not None and len(self.frames) >= self.film.max_frames:  # thin out
            self.frames, self.steps, self.plans = (x[::2] for x in (self.frames, self.steps,
                                                                   self.plans))  # fmt: skip
            self.stride *= 2

    def video(self) -> Video | None:
        if not self.frames:
            return None
        planned = [p for p in self.plans if p is not None]
        if self.pixels is None or not planned:
            plans = np.zeros((len(self.frames), 0, 0, 2), np.float32)
            zone = np.zeros((0, 2), np.float32)
        else:
            plans = np.stack([np.full_like(planned[0], np.nan) if p is None else p
                              for p in self.plans])  # fmt: skip
            zone = (self.pixels(self.zone_xy) * self.scale).astype(np.float32)
        return Video(np.stack(self.frames), np.array(self.steps), plans, zone,
                     self.render_fps / self.stride)  # fmt: skip


class Evaluation:
    """Acting to evaluate: the policy's mean, episodes ``seed``, ``seed + 1``... until N started.

    Candidates beyond the mean (M-1 draws of the policy, from ``gen``) are planned only
    while a recorded episode runs, apart from the executed plan and with its noise: the
    pictures show them; the executed action is always the mean's plan, the same as without
    recording (module docstring). ``film`` films the first ``film.episodes`` episodes
    (recorded with them).
    """

    explore = False
    drops_faults = False
    """a failing env step raises: every one of the N seeded episodes is played out"""

    def __init__(self, model: Any, n: int, episodes: int, seed: int, record: int,
                 plan_every: int, film: Filming | None = None,
                 gen: torch.Generator | None = None) -> None:  # fmt: skip
        self.model, self.episodes, self.seed = model, episodes, seed
        self.film = film if film is not None and film.episodes > 0 else None
        self.record = max(record, self.film.episodes if self.film else 0)
        self.plan_every, self.gen = plan_every, gen
        self.episode_of = list(range(n))
        self.started = n
        self.t = np.zeros(n, np.int64)
        self.recs: dict[int, dict[str, Any]] = {}
        self.traces: dict[int, Trace] = {}

    def shown(self, rows: np.ndarray) -> np.ndarray:
        """The indices into ``rows`` (live envs) of those in a recorded episode."""
        return np.array([j for j, r in enumerate(rows) if self.episode_of[r] < self.record],
                        dtype=np.int64)  # fmt: skip

    def before_step(self, r: int, env: Any, x: torch.Tensor, paths: torch.Tensor) -> None:
        """Record env ``r``'s state ``x`` (its frame, if filmed) and (every ``plan_every``
        steps) the candidates' planned paths ``[M, H+1, nx]`` (candidate 0 executed)."""
        ep, model, t = self.episode_of[r], self.model, int(self.t[r])
        if ep >= self.record:
            return
        rec = self.recs.setdefault(ep, {"pos": [], "others": [], "steps": [], "plans": []})
        if not rec["pos"]:
            rec["pos"].append(model.position(x).numpy())
            rec["others"].append(model.others(x).numpy())
            rec["zone"] = torch.stack(model.danger_zone(x)).numpy()
            if self.film is not None and ep < self.film.episodes:
                rec["reel"] = Reel(self.film, env, rec["zone"])
        planned = None
        if t % self.plan_every == 0:
            planned = model.position(paths).numpy()
            rec["steps"].append(t)
            rec["plans"].append(planned)
        reel = rec.get("reel")
        if reel is not None and reel.wants(t):
            reel.shoot(t, env, planned if planned is not None else model.position(paths).numpy())

    def after_step(self, r: int, env: Any) -> None:
        self.t[r] += 1
        ep = self.episode_of[r]
        if ep < self.record:
            x2 = torch.as_tensor(self.model.planner_state(env), dtype=torch.float32)
            self.recs[ep]["pos"].append(self.model.position(x2).numpy())
            self.recs[ep]["others"].append(self.model.others(x2).numpy())

    def next_episode(self, r: int, env: Any, tracker: EpisodeTracker) -> np.ndarray | None:
        ep = self.episode_of[r]
        if ep < self.record:
            rec = self.recs.pop(ep)
            reel = rec.get("reel")
            if reel is not None:  # the episode's last state
                reel.shoot(int(self.t[r]), env, None)
            self.traces[ep] = Trace(
                np.stack(rec["pos"]), np.stack(rec["others"]), np.array(rec["steps"]),
                np.stack(rec["plans"]) if rec["plans"] else np.zeros((0, 1, 1, 2)),
                rec["zone"], float(tracker.ended[-1][0]), bool(tracker.ended[-1][2]),
                None if reel is None else reel.video(),
            )  # fmt: skip
        if self.started >= self.episodes:
            return None
        obs = env.reset(seed=self.seed + self.started)[0]
        self.episode_of[r], self.started, self.t[r] = self.started, self.started + 1, 0
        return obs

    def restart(self, r: int, env: Any) -> np.ndarray:
        """Play env ``r``'s episode again from its start, its seed, recording it afresh: its
        simulator was lost (every one of the N seeded episodes is played out)."""
        ep = self.episode_of[r]
        self.t[r] = 0
        self.recs.pop(ep, None)
        return env.reset(seed=self.seed + ep)[0]

    def recorded(self) -> list[Trace]:
        return [self.traces[k] for k in sorted(self.traces)]
