"""The CARLA client layer: connection parameters, connecting, and the errors a server causes.

`connect` returns a ``carla.Client`` whose server answered; `require_map` checks that the
server has the town before anything is loaded; `CarlaUnavailable` (no answer in time) and
`CarlaMapMissing` (the town is not installed on the server) carry their details as fields
and pickle with them, so they cross Ray as themselves. `envs.racing.carla_sim` builds the
simulator on top of this.

The ``carla`` module is imported only when `connect` is called without a factory, so
``import envs`` works without it.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from envs.base import SimulatorUnavailable

#: the CARLA server version the client (``carla==0.9.16``) is built for
SERVER_VERSION = "0.9.16"
#: the towns CARLA's main 0.9.16 package (and the carlasim/carla:0.9.16 image) ships; the
#: others (Town06, Town07, Town11-15) come in its AdditionalMaps package
MAIN_PACKAGE_TOWNS = ("Town01", "Town02", "Town03", "Town04", "Town05", "Town10HD")
log = logging.getLogger(__name__)


class CarlaUnavailable(SimulatorUnavailable):
    """No CARLA server answered at ``host:port`` after ``attempts`` tries (``cause``: the
    last error, or which call timed out)."""

    def __init__(self, host: str, port: int, attempts: int, cause: str = "") -> None:
        self.host, self.port, self.attempts, self.cause = host, port, attempts, cause
        super().__init__(
            f"no CARLA server answered at {host}:{port} after {attempts} attempt(s)"
            f" (last error: {cause or 'none'}). rlmpc expects a CARLA {SERVER_VERSION} server:"
            f" start one with `./CarlaUE4.sh -nullrhi -carla-rpc-port={port}`"
            f" (CARLA_{SERVER_VERSION} release), or use the embedded env rlmpc/RacingDZ-v0."
        )

    def __reduce__(self) -> tuple:  # pickles across Ray with its fields
        return type(self), (self.host, self.port, self.attempts, self.cause)


class CarlaMapMissing(ValueError):
    """The server at ``host:port`` has no ``town`` (``available``: the towns it has)."""

    def __init__(self, host: str, port: int, town: str, available: tuple[str, ...]) -> None:
        self.host, self.port, self.town, self.available = host, port, town, tuple(available)
        extra = "" if town in MAIN_PACKAGE_TOWNS else (
            f" {town} is not in CARLA's main {SERVER_VERSION} package nor in the"
            f" carlasim/carla:{SERVER_VERSION} image: it ships in AdditionalMaps_{SERVER_VERSION}"
            ".tar.gz. Put that file in <CARLA root>/Import/ and run ./ImportAssets.sh there"
            " (cluster/cluster.yaml's initialization_commands do this on every CARLA node;"
            " see cluster/README.md),"
        )  # fmt: skip
        super().__init__(
            f"the CARLA server at {host}:{port} has no map {town} (it has"
            f" {', '.join(self.available) or 'none'}).{extra} or choose a town the server has"
            f" (CarlaRacingEnv(town=..., route=RouteSpec(...)))."
        )

    def __reduce__(self) -> tuple:
        return type(self), (self.host, self.port, self.town, self.available)


@dataclass(frozen=True)
class ClientParams:
    """Connection to a CARLA server: per-call timeout, attempts, backoff, and how long a lost
    server is waited for."""

    timeout: float = 10.0  # seconds each RPC may take (client.set_timeout), > 0
    attempts: int = 5  # connection attempts before CarlaUnavailable, int >= 1
    backoff: float = 1.0  # wait after the first failed attempt (s), doubling each time, >= 0
    max_backoff: float = 30.0  # cap on one wait (s), >= backoff
    reconnect_wait: float = 300.0
    """seconds a lost server is waited for (its node's watchdog restarts it on the same ports)
    before the env claims another free server of its node, or gives up; >= 0"""

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, allowed: str) -> None:
            if not ok:
                raise ValueError(
                    f"ClientParams.{name} must be {allowed}, got {getattr(self, name)!r}"
                )

        finite = lambda v: isinstance(v, (int, float)) and math.isfinite(v)
        need(finite(self.timeout) and self.timeout > 0, "timeout", "a finite number > 0")
        need(isinstance(self.attempts, int) and self.attempts >= 1, "attempts", "an int >= 1")
        need(finite(self.backoff) and self.backoff >= 0, "backoff", "a finite number >= 0")
        ok = finite(self.max_backoff) and self.max_backoff >= self.backoff
        need(ok, "max_backoff", f"a finite number >= backoff={self.backoff}")
        ok = finite(self.reconnect_wait) and self.reconnect_wait >= 0
        need(ok, "reconnect_wait", "a finite number >= 0")

    def delay(self, failed: int) -> float:
        """Seconds to wait after the ``failed``-th failed attempt: ``backoff · 2^(failed-1)``, capped."""
        return min(self.backoff * 2.0 ** min(failed - 1, 60), self.max_backoff)


def connect(
    host: str,
    port: int,
    params: ClientParams,
    client_factory: Callable[[str, int], Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """A ``carla.Client`` whose server answered ``get_server_version``; `CarlaUnavailable` otherwise.

    Up to ``params.attempts`` attempts, each bounded by ``params.timeout``, with ``params.delay``
    between them. A server of another version is used with a warning.
    """
    if client_factory is None:
        import carla  # noqa: PLC0415  (optional dependency)

        client_factory = carla.Client
    cause = ""
    for attempt in range(1, params.attempts + 1):
        try:
            client = client_factory(host, port)
            client.set_timeout(params.timeout)
            version = client.get_server_version()
        except RuntimeError as err:
            cause = str(err)
            log.warning("CARLA %s:%d, attempt %d/%d: %s", host, port, attempt, params.attempts, err)
            if attempt < params.attempts:
                sleep(params.delay(attempt))
            continue
        if not str(version).startswith(SERVER_VERSION):
            warnings.warn(
                f"CARLA server {host}:{port} runs {version}, the client expects {SERVER_VERSION}",
                stacklevel=2,
            )
        return client
    raise CarlaUnavailable(host, port, params.attempts, cause)


def town_names(maps: Iterable[str]) -> tuple[str, ...]:
    """Town names of ``client.get_available_maps()`` paths (``/Game/Carla/Maps/Town07``), sorted."""
    return tuple(sorted({str(m).rstrip("/").rsplit("/", 1)[-1] for m in maps}))


def require_map(client: Any, town: str, host: str, port: int) -> None:
    """`CarlaMapMissing` unless the server has ``town`` (``client.get_available_maps()``)."""
    available = town_names(client.get_available_maps())
    if town not in available:
        raise CarlaMapMissing(host, port, town, available)
