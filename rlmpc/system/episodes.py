"""Episodes as a rollout worker runs them: the figures of those that end, and what comes next.

`EpisodeTracker` keeps the running sums of the episodes in flight and the figures of those
that ended (return, length, success, steps in the danger zone, and the env's own figures
from the registry); an episode cut short by a failing env step is dropped and only counted. What happens when an episode ends is the acting mode's:

* `Training`: the env starts its next episode from its own random stream, forever;
* `Evaluation`: the env starts evaluation episode ``seed + i`` until ``N`` have started,
  then rests; the first ``record`` episodes are recorded for the pictures (`Trace`: the
  executed path, the candidates' planned paths every ``plan_every`` steps, the zone).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import torch

import envs
from rlmpc.system.records import EpisodeStats, Trace

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


class Evaluation:
    """Acting to evaluate: the policy's mean, episodes ``seed``, ``seed + 1``... until N started.

    Candidates beyond the mean (M-1 draws of the policy) are planned only while a recorded
    episode runs: the pictures show them; the executed action is always the mean's plan.
    """

    explore = False
    drops_faults = False
    """a failing env step raises: every one of the N seeded episodes is played out"""

    def __init__(self, model: Any, n: int, episodes: int, seed: int, record: int,
                 plan_every: int) -> None:  # fmt: skip
        self.model, self.episodes, self.seed = model, episodes, seed
        self.record, self.plan_every = record, plan_every
        self.episode_of = list(range(n))
        self.started = n
        self.t = np.zeros(n, np.int64)
        self.recs: dict[int, dict[str, list]] = {}
        self.traces: dict[int, Trace] = {}

    def wants_candidates(self, rows: np.ndarray) -> bool:
        return bool(self.record) and any(self.episode_of[r] < self.record for r in rows)

    def before_step(self, j: int, r: int, x: torch.Tensor, paths: torch.Tensor) -> None:
        """Record env ``r``'s state ``x`` and (every ``plan_every`` steps) its planned paths."""
        ep, model = self.episode_of[r], self.model
        if ep >= self.record:
            return
        rec = self.recs.setdefault(ep, {"pos": [], "others": [], "steps": [], "plans": []})
        if not rec["pos"]:
            rec["pos"].append(model.position(x).numpy())
            rec["others"].append(model.others(x).numpy())
            rec["zone"] = torch.stack(model.danger_zone(x)).numpy()
        if self.t[r] % self.plan_every == 0:
            rec["steps"].append(int(self.t[r]))
            rec["plans"].append(model.position(paths).numpy())

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
            self.traces[ep] = Trace(
                np.stack(rec["pos"]), np.stack(rec["others"]), np.array(rec["steps"]),
                np.stack(rec["plans"]) if rec["plans"] else np.zeros((0, 1, 1, 2)),
                rec["zone"], float(tracker.ended[-1][0]), bool(tracker.ended[-1][2]),
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
