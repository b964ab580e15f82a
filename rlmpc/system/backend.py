"""How the coordinator reaches the components: submit a call, wait for calls, get a result.

A component is named (`LEARNER`, `EVALUATOR`, `FINAL_EVALUATOR`, `REAL_SHARD`,
`VIRTUAL_SHARD`, ``actor_name(i)``) and has the methods of its shell
(`rlmpc.system.shells`). A backend runs them:

* `SerialBackend` (this module): every component in this process, built on first use;
  a call runs when it is submitted and `wait` finds it done. For debugging and tests
  (``python launch.py --serial``); the same seed gives the same run as on Ray.
* `rlmpc.system.ray_backend.RayBackend`: the components as Ray actors on a cluster.

A call's failure comes back from `Backend.get` as the component's own error:
`ComponentDied` when its process is gone (killed, its node lost; a backend may restart it),
`ComponentFailed` when it raised. The coordinator never reads error text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

LEARNER = "learner"
EVALUATOR = "evaluator"
FINAL_EVALUATOR = "final_evaluator"
REAL_SHARD = "real_shard"
VIRTUAL_SHARD = "virtual_shard"
#: the components a run cannot go on without: when one dies the run restores itself
CORE = (LEARNER, REAL_SHARD, VIRTUAL_SHARD, EVALUATOR)


def actor_name(i: int) -> str:
    """The component name of rollout actor ``i``."""
    return f"actor {i}"


def brief(err: BaseException | str, limit: int = 160) -> str:
    """An error in one short line for ``events.log``: its type and its message's first line
    (Ray's errors run to dozens of lines)."""
    if isinstance(err, str):
        return err.splitlines()[0][:limit] if err.strip() else err
    lines = str(err).strip().splitlines()
    first = lines[0] if lines else ""
    return f"{type(err).__name__}: {first[:limit]}" if first else type(err).__name__


class ComponentDied(RuntimeError):
    """The component's process is gone (killed, its node lost); ``cause`` says how."""

    def __init__(self, component: str, cause: BaseException | str) -> None:
        self.component, self.cause = component, cause
        super().__init__(f"{component} died: {cause}")

    def __reduce__(self) -> tuple:
        return type(self), (self.component, self.cause)


class ComponentFailed(RuntimeError):
    """The component raised ``cause`` (it may still be alive)."""

    def __init__(self, component: str, cause: BaseException) -> None:
        self.component, self.cause = component, cause
        super().__init__(f"{component} failed: {type(cause).__name__}: {cause}")

    def __reduce__(self) -> tuple:
        return type(self), (self.component, self.cause)


class RestoreNeeded(RuntimeError):
    """A core component (`CORE`) died: the run must reload its newest checkpoint."""

    def __init__(self, components: list[str], cause: BaseException) -> None:
        self.components, self.cause = components, cause
        super().__init__(f"{', '.join(components)} died ({brief(cause)})")


class Backend(Protocol):
    """The submit / wait / get interface the coordinator drives the components through."""

    def call(self, component: str, method: str, *args: Any, num_returns: int = 1) -> Any:
        """Submit ``component.method(*args)``; returns a handle for `wait` and `get` (a tuple
        of ``num_returns`` handles, one per item of the tuple the method returns)."""

    def keep(self, call: Any) -> Any:
        """The call's result left where it is, as a handle that calls take and `fetch` reads
        (Ray: its object reference, which never passes through this process)."""

    def wait(self, calls: Sequence[Any], num_returns: int = 1,
             timeout: float | None = None) -> list[Any]:  # fmt: skip
        """The calls among ``calls`` that are done: ``num_returns`` of them, or fewer when
        ``timeout`` seconds pass."""

    def get(self, call: Any) -> Any:
        """The call's result; `ComponentDied` or `ComponentFailed` naming the component."""

    def put(self, value: Any) -> Any:
        """Store a value for many calls (Ray's object store); returns what calls take."""

    def fetch(self, ref: Any) -> Any:
        """The value behind `put`'s handle."""

    def restarted(self, component: str, timeout: float) -> bool:
        """Whether the dead ``component`` is back (restarted) within ``timeout`` seconds."""

    def dead(self, components: Sequence[str]) -> list[str]:
        """Those of ``components`` whose process is gone (asked with a short timeout)."""

    def kill(self, component: str) -> None:
        """Kill a (stalled) component so that it is restarted; its calls then fail with
        `ComponentDied`."""

    def drop(self, component: str) -> None:
        """End the component for good (its resources go back)."""

    def close(self) -> None:
        """End every component."""


class _Done:
    """A serial call: run when submitted, its result or error kept for `get`."""

    def __init__(self, component: str, value: Any = None, error: Exception | None = None) -> None:
        self.component, self.value, self.error = component, value, error


class SerialBackend:
    """Every component in this process (see the module docstring).

    ``factories[name](restarts)`` builds component ``name``; ``restarts`` counts how often it
    was rebuilt after dying, so a rebuilt rollout worker draws fresh random streams, as a
    Ray actor restarted in a new process does. A component dies by raising `ComponentDied`
    (test doubles do, to exercise the coordinator's restarts).
    """

    def __init__(self, factories: dict[str, Callable[[int], Any]]) -> None:
        self._factories = factories
        self._restarts = dict.fromkeys(factories, 0)
        self._live: dict[str, Any] = {}
        self._dead: set[str] = set()

    def _component(self, name: str) -> Any:
        if name in self._dead:
            raise ComponentDied(name, "it was dropped or died and was not restarted")
        if name not in self._live:
            self._live[name] = self._factories[name](self._restarts[name])
        return self._live[name]

    def call(
        self, component: str, method: str, *args: Any, num_returns: int = 1
    ) -> _Done | tuple[_Done, ...]:
        try:
            value = getattr(self._component(component), method)(*args)
        except ComponentDied as err:
            self._live.pop(component, None)
            self._dead.add(component)
            done = _Done(component, error=ComponentDied(component, err.cause))
        except Exception as err:  # handed to the caller of `get`, as Ray does
            done = _Done(component, error=ComponentFailed(component, err))
        else:
            if num_returns == 1:
                return _Done(component, value)
            return tuple(_Done(component, v) for v in value)
        return done if num_returns == 1 else (done,) * num_returns

    def keep(self, call: _Done) -> Any:
        return self.get(call)

    def wait(self, calls: Sequence[_Done], num_returns: int = 1,
             timeout: float | None = None) -> list[_Done]:  # fmt: skip
        return list(calls[:num_returns])

    def get(self, call: _Done) -> Any:
        if call.error is not None:
            raise call.error
        return call.value

    def put(self, value: Any) -> Any:
        return value

    def fetch(self, ref: Any) -> Any:
        return ref

    def restarted(self, component: str, timeout: float) -> bool:
        self._dead.discard(component)
        self._restarts[component] += 1
        return True

    def dead(self, components: Sequence[str]) -> list[str]:
        return [c for c in components if c in self._dead]

    def kill(self, component: str) -> None:
        """Nothing to kill: a serial call returns before the coordinator could time it out."""

    def drop(self, component: str) -> None:
        obj = self._live.pop(component, None)
        self._dead.add(component)
        close = getattr(obj, "close", None)
        if close is not None:
            close()

    def close(self) -> None:
        for name in list(self._live):
            self.drop(name)
