"""The coordinator's evaluations (`rlmpc.system.coordinator.Coordinator` inherits them).

A periodic evaluation of the newest weights starts every ``eval_every`` iterations on the
evaluator and is waited for ``eval_every`` iterations later (its figures go into that
iteration's row, ``eval/*``); the final evaluation runs once training is done. A periodic
evaluation whose env's simulator was unavailable (`envs.base.SimulatorUnavailable`) is
skipped, with an event line; the final one is tried up to three times.
"""

from __future__ import annotations

from typing import Any

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


class Evaluations:
    """Periodic and final evaluations. Uses the coordinator's state (annotated here)."""

    s: Any  #: the `Schedule`
    backend: Backend
    observer: Any
    counters: Any
    live: list[int]
    version: int
    weights: dict[int, Any]
    pending_eval: tuple[Any, int, int, int] | None

    def _start_eval(self, version: int | None = None, due: int | None = None,
                    steps: int | None = None) -> None:  # fmt: skip
        """Start a periodic evaluation of ``version`` (default: the newest), logged at
        iteration ``due``."""
        if self.pending_eval is None:
            s, c = self.s, self.counters
            version = self.version if version is None else version
            call = self.backend.call(
                EVALUATOR, "evaluate", self.weights[version], s.eval_episodes,
                s.first_eval_seed, 0,
            )  # fmt: skip
            due = min(c.iteration + s.eval_every, s.iterations) if due is None else due
            steps = c.env_steps if steps is None else steps
            self.pending_eval = (call, due, steps, version)

    def _finished_eval(self) -> tuple[dict[str, float], tuple[EvalResult, int, int] | None]:
        """The periodic evaluation due at this iteration, waited for: its ``eval/*`` figures,
        and it with its policy's iteration and env steps; else nothing."""
        if self.pending_eval is None or self.counters.iteration < self.pending_eval[1]:
            return {}, None
        call, _, steps, version = self.pending_eval
        self.pending_eval = None
        if not self.backend.wait([call], timeout=60.0):
            self.observer.event(
                f"iteration {self.counters.iteration}: waiting for the periodic evaluation "
                f"started at {steps} env steps (its evaluator may wait for resources)"
            )
        try:
            result: EvalResult = self.backend.get(call)
        except ComponentDied as err:  # the evaluator is core: the run restores itself
            raise RestoreNeeded([EVALUATOR], err.cause) from err
        except ComponentFailed as err:
            if not isinstance(err.cause, SimulatorUnavailable):
                raise
            self.observer.event(
                f"iteration {self.counters.iteration}: the periodic evaluation started at "
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

    def _final_eval(self) -> EvalResult:
        s, b = self.s, self.backend
        weights = self.weights[self.version]
        evaluator = FINAL_EVALUATOR
        if s.final_eval_on_evaluator:  # next to the resources the actors now free
            for a in self.live:
                b.drop(actor_name(a))
            evaluator = EVALUATOR
        for attempt in range(1, 4):
            call = b.call(evaluator, "evaluate", weights, s.final_eval_episodes,
                          s.first_eval_seed, 3)  # fmt: skip
            try:
                return b.get(call)
            except ComponentFailed as err:
                if not isinstance(err.cause, SimulatorUnavailable) or attempt == 3:
                    raise
                self.observer.event(f"the final evaluation failed ({brief(err.cause)}): its "
                                    f"env's simulator is unavailable; attempt {attempt + 1} of 3")  # fmt: skip
        raise AssertionError("unreachable")
