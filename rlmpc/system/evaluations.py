"""The coordinator's evaluations: one `Evaluations` object that the coordinator holds.

A periodic evaluation of the newest weights starts every ``eval_every`` iterations on the
evaluator and is waited for ``eval_every`` iterations later (its figures go into that
iteration's row, ``eval/*``); every ``film_every``-th one films its first episode
(`rlmpc.system.records.Filming`, the same figures either way). The final evaluation runs
once training is done, records three episodes for the pictures and films the first. A periodic
evaluation whose env's simulator was unavailable (`envs.base.SimulatorUnavailable`) is
skipped, with an event line; the final one is tried up to three times. The object keeps the
one evaluation in flight (`Evaluations.pending`, which checkpoints carry); everything else it
is handed per call (the weights' reference, the iteration, the live actors).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from envs.base import SimulatorUnavailable
from rlmpc.system.backend import (
    EVALUATOR,
    FINAL_EVALUATOR,
    Backend,
    ComponentDied,
    ComponentFailed,
    RestoreNeeded,
    actor_name,
    brief,
)
from rlmpc.system.records import EvalResult, summarize

#: the figures of a periodic evaluation that go into ``metrics.jsonl`` (besides the env's own)
EVAL_FIGURES = ("success_rate", "steps", "reward")


class Pending(NamedTuple):
    """A periodic evaluation in flight: its call, the iteration whose row logs it, the env
    steps and the policy version it evaluates, and whether it films an episode."""

    call: Any
    due: int
    env_steps: int
    version: int
    film: bool = False


class _Log(Protocol):
    def event(self, message: str) -> None: ...


class Evaluations:
    """Periodic and final evaluations over ``backend`` (module docstring); ``schedule`` is the
    coordinator's `rlmpc.system.coordinator.Schedule`, ``log`` its observer."""

    def __init__(self, schedule: Any, backend: Backend, log: _Log) -> None:
        self.s, self.backend, self.log = schedule, backend, log
        self.pending: Pending | None = None

    def start(self, weights: Any, version: int, due: int, env_steps: int,
              film: bool = False) -> None:  # fmt: skip
        """Start a periodic evaluation of ``weights`` (policy ``version``; a backend
        reference) to be logged at iteration ``due``, unless one is in flight; ``film``: it
        films its first episode (`Schedule.film`)."""
        if self.pending is None:
            s = self.s
            film = film and s.film is not None
            call = self.backend.call(EVALUATOR, "evaluate", weights, s.eval_episodes,
                                     s.first_eval_seed, 0, s.film if film else None)  # fmt: skip
            self.pending = Pending(call, due, env_steps, version, film)

    def finished(
        self, iteration: int
    ) -> tuple[dict[str, float], tuple[EvalResult, int, int] | None]:
        """The periodic evaluation due at ``iteration``, waited for: its ``eval/*`` figures,
        and it with its policy's version and env steps; else nothing."""
        if self.pending is None or iteration < self.pending.due:
            return {}, None
        call, _, steps, version, _ = self.pending
        self.pending = None
        if not self.backend.wait([call], timeout=60.0):
            self.log.event(
                f"iteration {iteration}: waiting for the periodic evaluation "
                f"started at {steps} env steps (its evaluator may wait for resources)"
            )
        try:
            result: EvalResult = self.backend.get(call)
        except ComponentDied as err:  # the evaluator is core: the run restores itself
            raise RestoreNeeded([EVALUATOR], err.cause) from err
        except ComponentFailed as err:
            if not isinstance(err.cause, SimulatorUnavailable):
                raise
            self.log.event(
                f"iteration {iteration}: the periodic evaluation started at "
                f"{steps} env steps is skipped: its env's simulator is unavailable "
                f"({brief(err.cause)})"
            )
            return {}, None
        summary = summarize(result.env, result.episodes)
        row: dict[str, float] = {"eval/env_steps": steps}
        for k in (*EVAL_FIGURES, *result.episodes.extra):
            if summary.get(k):
                row[f"eval/{k}"] = summary[k]["mean"]
                row[f"eval/{k}_std"] = summary[k]["std"]
        return row, (result, version, steps)

    def final(self, weights: Any, live: list[int]) -> EvalResult:
        """The final evaluation of ``weights``: on a fresh evaluator, or, for an env whose
        envs need cluster resources, on the evaluator after the ``live`` actors are let go."""
        s, b = self.s, self.backend
        evaluator = FINAL_EVALUATOR
        if s.final_eval_on_evaluator:  # next to the resources the actors now free
            for a in live:
                b.drop(actor_name(a))
            evaluator = EVALUATOR
        for attempt in range(1, 4):
            call = b.call(evaluator, "evaluate", weights, s.final_eval_episodes,
                          s.first_eval_seed, 3, s.film)  # fmt: skip
            try:
                return b.get(call)
            except ComponentFailed as err:
                if not isinstance(err.cause, SimulatorUnavailable) or attempt == 3:
                    raise
                self.log.event(f"the final evaluation failed ({brief(err.cause)}): its "
                               f"env's simulator is unavailable; attempt {attempt + 1} of 3")  # fmt: skip
        raise AssertionError("unreachable")
