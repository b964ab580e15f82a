"""`rlmpc.bench.system.PeakMemory`: the system benchmark's peak memory of a run's
processes, read from /proc."""

import subprocess
import sys
import time

import pytest

from rlmpc.bench.system import PeakMemory
from rlmpc.run.procfs import descendants

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_peak_memory_counts_the_processes_a_run_starts():
    """A child that holds 300 MiB until the poller has looked twice raises the peak by about
    that much, and is counted as a process of the run. (A child holding it for a fixed second
    was missed when a poll of many processes — a test session's Ray, still up — took longer.)"""
    with PeakMemory(every_s=0.05) as idle:
        subprocess.run([sys.executable, "-c", "import time; time.sleep(0.5)"], check=True)
    hold = ("import sys; x = bytearray(300 << 20); x[::4096] = b'1' * len(x[::4096]); "
            "print('held', flush=True); sys.stdin.read()")  # fmt: skip
    with PeakMemory(every_s=0.05) as busy:
        child = subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert child.stdout.readline().strip() == "held"
        polls, deadline = busy.polls, time.monotonic() + 60
        while busy.polls < polls + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        child.stdin.close()
        child.wait(timeout=60)
    assert busy.processes >= 2 and idle.processes >= 2
    assert busy.pss_gib - idle.pss_gib > 0.25
    assert busy.rss_gib >= busy.pss_gib > 0.0
    assert busy.error is None and busy.polls >= 2


def test_descendants_include_grandchildren():
    inner = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3)']); time.sleep(3)"
    child = subprocess.Popen([sys.executable, "-c", inner])
    try:
        for _ in range(100):
            tree = descendants(child.pid)
            if len(tree) >= 2:
                break
            time.sleep(0.05)
        assert child.pid in tree
        assert len(tree) >= 2  # the child and its own child
    finally:
        for pid in descendants(child.pid)[::-1]:
            subprocess.run(["kill", str(pid)], check=False)
        child.wait(timeout=10)
