"""This machine's processes, read from ``/proc`` (Linux): who is whose child, and the CPU
each has used. Shared by the system benchmark's peak memory (`rlmpc.bench.system`) and a
cell's load record (`rlmpc.reproduce.load`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


class ProcStat(NamedTuple):
    """One process's line of ``/proc/PID/stat``, the fields used here."""

    parent: int
    ticks: int
    """CPU ticks (user + system) of the process and of its children it reaped"""
    name: str
    """its ``comm`` (15 characters at most)"""


def proc_stat(pid: int) -> ProcStat | None:
    """``pid``'s `ProcStat`; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat[stat.rindex(")") + 2 :].split()
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    return ProcStat(int(rest[1]), sum(int(t) for t in rest[11:15]), name)


def process_table() -> dict[int, ProcStat]:
    """Every live process's `ProcStat`, by PID."""
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (st := proc_stat(int(entry.name))) is not None:
            table[int(entry.name)] = st
    return table


def descendants(root: int, table: dict[int, ProcStat] | None = None) -> list[int]:
    """``root`` and every live process below it, sorted (``table``: a `process_table` already
    read, else one is)."""
    table = process_table() if table is None else table
    kids: dict[int, list[int]] = {}
    for pid, st in table.items():
        kids.setdefault(st.parent, []).append(pid)
    tree, frontier = {root}, [root]
    while frontier:
        for kid in kids.get(frontier.pop(), []):
            if kid not in tree:
                tree.add(kid)
                frontier.append(kid)
    return sorted(tree)
