"""`rlmpc.reproduce.load`: the machine's load beside a cell, measured for real (Linux)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from rlmpc.reproduce import load as load_module
from rlmpc.reproduce.load import MachineLoad, sweep_root, tree_ticks

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

BUSY = "import time\nend = time.time() + {s}\nwhile time.time() < end: pass\n"
BURN = "import time\nend = time.process_time() + {s}\nwhile time.process_time() < end: pass\n"


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def _in_tree(pid: int, root: int) -> bool:
    p = pid
    while p > 1:
        if p == root:
            return True
        p = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
    return False


def test_the_cells_own_work_is_not_other_load_and_parts_add_up(tmp_path):
    """Busy in this process (the sweep's tree, no Ray here: `sweep_root` is this process) for
    1.2 CPU seconds a part: counted as its own, up to the last sample at the block's end,
    however much else the machine runs; a second part adds to the first's sums."""
    assert sweep_root() == os.getpid()
    for part in (1, 2):
        with MachineLoad(tmp_path, every_s=0.2) as load:
            _burn(1.2)
        got = load.summary()
        assert got["measured"] and got["parts"] == part and got["max_trials"] == 0, got
        own_s = got["own_cores"] * got["wall_s"]
        assert 0.8 * 1.2 * part < own_s < 1.5 * 1.2 * part, got


def test_a_child_that_ended_keeps_its_work_in_the_tree(tmp_path):
    """A child that burns 1 CPU second and exits (and is reaped) between two samples (the
    first and the last: the block is shorter than ``every_s``): its ticks stay the tree's
    (the parent's cutime), not other load."""
    with MachineLoad(tmp_path, every_s=60) as load:
        subprocess.run([sys.executable, "-c", BURN.format(s=1.0)], check=True)
    got = load.summary()
    assert got["own_cores"] * got["wall_s"] > 0.8, got


def test_a_process_outside_the_sweep_is_other_load(tmp_path):
    """A busy process that is not below this one (orphaned by its shell, so adopted by init):
    counted as other load; this process, asleep, as almost none of its own."""
    out = subprocess.run(
        ["sh", "-c", f"{sys.executable} -c '{BUSY.format(s=4)}' >/dev/null 2>&1 & echo $!"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    orphan = int(out.stdout.strip())
    try:
        if _in_tree(orphan, os.getpid()):
            pytest.skip("this process adopts orphans (PID 1 or a subreaper)")
        with MachineLoad(tmp_path, every_s=0.25) as load:
            time.sleep(2.0)
        got = load.summary()
    finally:
        try:
            os.kill(orphan, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert got["measured"] and got["other_cores"] > 0.4 and got["own_cores"] < 0.3, got
    assert not got["alone"]


def test_what_cannot_be_measured_is_said(tmp_path, monkeypatch):
    """No /proc (another OS), or a Ray cluster started apart (the raylet is no child of the
    sweep): the cell records that its load was not measured, never a zero."""
    monkeypatch.setattr(load_module, "sweep_root", lambda: None)
    with MachineLoad(tmp_path, every_s=0.1) as load:
        time.sleep(0.2)
    got = load.summary()
    assert got == {"measured": False, "error": got["error"]} and "ray start" in got["error"]
    monkeypatch.undo()

    def no_proc():
        raise FileNotFoundError("/proc/stat")

    monkeypatch.setattr(load_module, "machine_ticks", no_proc)
    with MachineLoad(tmp_path / "b", every_s=0.1) as load:
        time.sleep(0.2)
    assert load.summary()["measured"] is False
    assert tree_ticks(os.getpid())[0] > 0  # the tree's own ticks: this process's, at least
