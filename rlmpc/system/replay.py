"""Replay shards: object refs of fragments, tagged with the policy version that collected them.

Two shards run per system, one for real data (D_RL) and one for virtual data (D_MPPI). A
shard holds *references*: it puts each fragment it receives into the Ray object store
itself (``put=ray.put``), so the shard owns it and it outlives the actor that produced it,
and the learner fetches the arrays from the object store directly.
The learner takes exactly the fragments the coordinator saw completed, in a fixed order, which
keeps a run reproducible; the ρ-mixing of the two buffers (eq. 8 or eq. 10) is the
learner's. Entries for fragments that will never be taken (an actor died after adding,
a stale attempt) are pruned by fragment index.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlmpc.system.records import FragmentId, FragmentMeta


class ReplayShard:
    """A keyed store of fragment refs (plain class; `rlmpc.system.ray_backend` makes it a Ray actor)."""

    def __init__(self, name: str, put: Callable[[Any], Any] | None = None) -> None:
        self.name = name
        self._put = put or (lambda value: value)
        self._entries: dict[FragmentId, tuple[FragmentMeta, Any]] = {}
        self.added = 0
        self.taken = 0
        self.pruned = 0

    def add(self, meta: FragmentMeta, fragment: Any) -> None:
        """Put a fragment in the object store and keep its ref under ``meta.fid``."""
        self._entries[meta.fid] = (meta, self._put(fragment))
        self.added += 1

    def take(self, fids: list[FragmentId], min_version: int = -1) -> list[list[Any]]:
        """Remove and return the refs of ``fids`` (in that order), each wrapped in a list.

        Raises `KeyError` for a missing fragment and `ValueError` for one collected by a
        policy older than ``min_version`` (the policy-lag bound).
        """
        out = []
        for fid in fids:
            meta, ref = self._entries[fid]
            if meta.version < min_version:
                raise ValueError(
                    f"fragment {fid} was collected by policy version {meta.version}, older "
                    f"than the lag bound allows ({min_version})"
                )
            out.append([ref])
        for fid in fids:
            del self._entries[fid]
        self.taken += len(fids)
        return out

    def prune(self, max_index: int) -> int:
        """Drop every entry meant for iterations ``<= max_index`` (never to be taken)."""
        stale = [fid for fid in self._entries if fid.index <= max_index]
        for fid in stale:
            del self._entries[fid]
        self.pruned += len(stale)
        return len(stale)

    def stats(self) -> dict[str, int]:
        return {
            "held": len(self._entries),
            "added": self.added,
            "taken": self.taken,
            "pruned": self.pruned,
        }
