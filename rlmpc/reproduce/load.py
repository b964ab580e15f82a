"""The machine's load while a cell runs: what Table 7's wall times were measured beside.

A cell's wall time says what 1M env steps cost only if nothing else ran on the machine
meanwhile: on the 2-core VM the same config's cell took 20 to 38 minutes as neighbouring
cells came and went. `MachineLoad` samples, every ``every_s`` seconds while a cell runs, the
CPU time of the whole machine (``/proc/stat``) and of the cell's own processes: the sweep's
process tree (the ``rlmpc.reproduce`` process and everything below it: under Ray its
cluster, the trial and the run's actors; without Ray this process). The difference is the
**other load**, in cores: 0 when the cell ran alone. One sweep runs one cell at a time for
timing (``--max-concurrent 1``), so the tree is the cell's.

The sums live in the cell's work directory (``machine_load.json``, rewritten atomically at
every sample), so that a cell killed and continued reports its load over all its parts, as
its wall time does. Linux only: elsewhere the cell records that the load was not measured.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

#: the most other load, in cores (mean over the cell), for a wall time to count as timed
#: alone: the VM's own kernel threads take ≈ 0.02
QUIET_CORES = 0.15

FILE = "machine_load.json"


def _ticks_per_s() -> float:
    return float(os.sysconf("SC_CLK_TCK"))


def machine_busy_ticks() -> int:
    """CPU ticks the machine spent busy since boot, all cores (``/proc/stat``: all but idle
    and iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(f) for f in fields[:8]]
    return sum(ticks) - ticks[3] - ticks[4]


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent, user + system ticks) of a live process; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat[stat.rindex(")") + 2 :].split()
    return int(rest[1]), int(rest[11]) + int(rest[12])


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def sweep_root(pid: int | None = None) -> int:
    """The process whose tree is the sweep's: the parent of the ``raylet`` this process runs
    under (the driver that started Ray's cluster), else this process."""
    pid = os.getpid() if pid is None else pid
    p = pid
    while p > 1:
        st = _stat(p)
        if st is None:
            break
        if _comm(p) == "raylet":
            return st[0]
        p = st[0]
    return pid


def tree_ticks(root: int) -> int:
    """CPU ticks (user + system) of ``root`` and its live descendants."""
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                stats[int(entry.name)] = st
    kids: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        kids.setdefault(parent, []).append(pid)
    total, frontier = 0, [root]
    while frontier:
        p = frontier.pop()
        if p in stats:
            total += stats[p][1]
        frontier += kids.get(p, [])
    return total


class MachineLoad:
    """Samples the machine's and the sweep's CPU time while the ``with`` block runs, adding
    to the sums in ``workdir/machine_load.json`` (module doc). ``summary()`` reads them."""

    def __init__(self, workdir: Path, every_s: float = 10.0) -> None:
        self.path = Path(workdir) / FILE
        self.every_s = every_s
        self._stop = threading.Event()
        self.error: str | None = None

    def _read(self) -> dict[str, Any]:
        if self.path.is_file():
            return json.loads(self.path.read_text())
        return {"wall_s": 0.0, "machine_cores_s": 0.0, "own_cores_s": 0.0, "parts": 0}

    def _write(self, sums: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(sums))
        os.replace(tmp, self.path)

    def _sample(self) -> tuple[float, int, int]:
        return time.monotonic(), machine_busy_ticks(), tree_ticks(self.root)

    def _run(self) -> None:
        try:
            sums = self._read()
            sums["parts"] += 1
            hz = _ticks_per_s()
            last = self._sample()
            while not self._stop.wait(self.every_s):
                now = self._sample()
                own = max(now[2] - last[2], 0)  # a process that ended takes its ticks along
                sums["wall_s"] += now[0] - last[0]
                sums["machine_cores_s"] += (now[1] - last[1]) / hz
                sums["own_cores_s"] += min(own, now[1] - last[1]) / hz
                self._write(sums)
                last = now
        except Exception as err:  # no /proc (not Linux), ...: recorded, never a silent zero
            self.error = f"{type(err).__name__}: {err}"

    def __enter__(self) -> MachineLoad:
        self.root = sweep_root()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        """The cell's record of its load: mean cores of the whole machine, of the sweep's
        own processes and of the rest (``other_cores``), over ``wall_s`` seconds sampled
        in ``parts`` parts (runs of the cell), and whether it counts as timed alone."""
        if self.error is not None:
            return {"measured": False, "error": self.error}
        sums = self._read()
        if sums["wall_s"] <= 0:
            return {"measured": False, "error": "shorter than one sample"}
        wall = sums["wall_s"]
        other = max(sums["machine_cores_s"] - sums["own_cores_s"], 0.0) / wall
        return {"measured": True, "wall_s": round(wall, 1), "parts": sums["parts"],
                "machine_cores": round(sums["machine_cores_s"] / wall, 3),
                "own_cores": round(sums["own_cores_s"] / wall, 3),
                "other_cores": round(other, 3), "alone": other <= QUIET_CORES}  # fmt: skip
