"""`rlmpc.reproduce.load`: the machine's load beside a cell, measured for real (Linux)."""

import os
import subprocess
import sys
import time

import pytest

from rlmpc.reproduce.load import MachineLoad, sweep_root

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

BUSY = "import time\nend = time.time() + {s}\nwhile time.time() < end: pass\n"


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_the_cells_own_work_is_not_other_load_and_parts_add_up(tmp_path):
    """Busy in this process (the sweep's tree, no Ray here: `sweep_root` is this process) for
    1.2 CPU seconds a part: counted as its own (all but the last unsampled 0.2 s of wall time,
    however much else the machine runs); a second part adds to the first's sums."""
    assert sweep_root() == os.getpid()
    for part in (1, 2):
        with MachineLoad(tmp_path, every_s=0.2) as load:
            _burn(1.2)
        got = load.summary()
        assert got["measured"] and got["parts"] == part, got
        own_s = got["own_cores"] * got["wall_s"]
        assert 0.6 * 1.2 * part < own_s < 1.5 * 1.2 * part, got


def test_a_process_outside_the_sweep_is_other_load(tmp_path):
    """A busy process that is not below this one (orphaned by its shell, so adopted by
    init): counted as other load; this process, asleep, as almost none of its own."""
    orphan = subprocess.Popen(
        ["sh", "-c", f"{sys.executable} -c '{BUSY.format(s=3)}' >/dev/null 2>&1 &"]
    )
    orphan.wait()
    with MachineLoad(tmp_path, every_s=0.25) as load:
        time.sleep(2.0)
    got = load.summary()
    assert got["measured"] and got["other_cores"] > 0.4 and got["own_cores"] < 0.3, got
    assert not got["alone"]
