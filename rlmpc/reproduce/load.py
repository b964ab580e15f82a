"""The machine's load while a cell runs: what Table 7's wall times were measured beside.

A cell's wall time says what 1M env steps cost only if nothing else ran on the machine
meanwhile: on the 2-core VM the same config's cell took 20 to 38 minutes as neighbouring
cells came and went. `MachineLoad` samples, every ``every_s`` seconds while a cell runs, the
CPU time of the whole machine (``/proc/stat``: user, nice, system, irq, softirq; the
hypervisor's steal apart) and of the cell's own processes: the sweep's process tree (the
``rlmpc.reproduce`` process and everything below it: under Ray its cluster, the trial and
the run's actors; without Ray this process), with what its exited children used (``cutime``,
``cstime``, kept by the parent that reaped them). The difference is the **other load**, in
cores: 0 when the cell ran alone. It also counts the sweep's trials running at each sample
(``max_trials``): a sweep with ``--max-concurrent`` above 1 runs several cells in one tree,
and a cell with another trial beside it was not alone either.

Under a Ray cluster started apart (``ray start``, ``--ray-address``) the raylet is no
child of the sweep, and a cell's processes cannot be told from others' (nor seen on other
nodes): the cell records that its load was not measured.

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

from rlmpc.run.procfs import descendants, proc_stat, process_table

#: the most other load, in cores (mean over the cell), for a wall time to count as timed
#: alone: the VM's own kernel threads take ≈ 0.02
QUIET_CORES = 0.15

FILE = "machine_load.json"


def _ticks_per_s() -> float:
    return float(os.sysconf("SC_CLK_TCK"))


def machine_ticks() -> tuple[int, int]:
    """(busy, steal): CPU ticks since boot, all cores (``/proc/stat``'s first line: user,
    nice, system, irq and softirq are busy; idle, iowait and the hypervisor's steal are not)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return user + nice + system + irq + softirq, steal


#: the name (``/proc/PID/stat``'s, 15 characters) of a Ray Tune trial's process
TRIAL = "ray::ImplicitFu"


def sweep_root(pid: int | None = None) -> int | None:
    """The process whose tree is the sweep's: the parent of the ``raylet`` this process runs
    under (the driver that started Ray's local cluster), else this process; None when the
    raylet is no child of a driver (a cluster started apart: `ray start`)."""
    pid = os.getpid() if pid is None else pid
    p = pid
    while p > 1:
        st = proc_stat(p)
        if st is None:
            break
        if st.name == "raylet":
            return st.parent if st.parent > 1 and proc_stat(st.parent) is not None else None
        p = st.parent
    return pid


def tree_ticks(root: int) -> tuple[int, int]:
    """(CPU ticks of ``root`` and its live descendants, with those of their reaped children;
    how many of them are Ray Tune trials)."""
    table = process_table()
    tree = [table[p] for p in descendants(root, table) if p in table]
    return sum(st.ticks for st in tree), sum(st.name == TRIAL for st in tree)


class MachineLoad:
    """Samples the machine's and the sweep's CPU time while the ``with`` block runs, adding
    to the sums in ``workdir/machine_load.json`` (module doc). ``summary()`` reads them."""

    def __init__(self, workdir: Path, every_s: float = 10.0) -> None:
        self.path = Path(workdir) / FILE
        self.every_s = every_s
        self._stop = threading.Event()
        self.error: str | None = None

    def _read(self) -> dict[str, Any]:
        sums = {"wall_s": 0.0, "machine_cores_s": 0.0, "own_cores_s": 0.0, "steal_cores_s": 0.0,
                "parts": 0, "max_trials": 0}  # fmt: skip
        if self.path.is_file():
            sums |= json.loads(self.path.read_text())
        return sums

    def _write(self, sums: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(sums))
        os.replace(tmp, self.path)

    def _sample(self) -> tuple[float, int, int, int, int]:
        """(time, machine busy ticks, steal ticks, the tree's ticks, its trials)."""
        return time.monotonic(), *machine_ticks(), *tree_ticks(self.root)

    def _run(self) -> None:
        try:
            if self.root is None:
                raise RuntimeError("under a Ray cluster started apart (ray start): the cell's "
                                   "processes cannot be told from the others'")  # fmt: skip
            sums = self._read()
            sums["parts"] += 1
            hz = _ticks_per_s()
            last = self._sample()
            stopping = False
            while not stopping:
                stopping = self._stop.wait(self.every_s)  # then one last sample
                now = self._sample()
                busy = now[1] - last[1]
                sums["wall_s"] += now[0] - last[0]
                sums["machine_cores_s"] += busy / hz
                sums["steal_cores_s"] += (now[2] - last[2]) / hz
                sums["own_cores_s"] += min(max(now[3] - last[3], 0), busy) / hz
                sums["max_trials"] = max(sums["max_trials"], now[4])
                self._write(sums)
                last = now
        except Exception as err:  # no /proc (not Linux), ...: recorded, never a silent zero
            self.error = f"{type(err).__name__}: {err}"

    def __enter__(self) -> MachineLoad:
        self.root = sweep_root()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the sampling, with a last sample up to now (`summary` calls it)."""
        self._stop.set()
        self._thread.join()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def summary(self) -> dict[str, Any]:
        """The cell's record of its load, up to now (the sampling ends here): mean cores of
        the whole machine, of the sweep's own processes and of the rest (``other_cores``),
        the hypervisor's steal, over ``wall_s`` seconds in ``parts`` parts (runs of the
        cell), the most trials the sweep ran at once, and whether the cell counts as timed
        alone (other load at most `QUIET_CORES`, no other trial beside it)."""
        self.stop()
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
                "other_cores": round(other, 3),
                "steal_cores": round(sums["steal_cores_s"] / wall, 3),
                "max_trials": sums["max_trials"],
                "alone": other <= QUIET_CORES and sums["max_trials"] <= 1}  # fmt: skip
