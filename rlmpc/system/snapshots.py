"""A rollout worker's acting state as plain data, for checkpoints (exact resumption).

`take` reads a `rlmpc.system.worker.RolloutWorker` into tensors, ints, floats, lists and
dicts (each env's episode through `envs.base.EnvState`, an injected-fault wrapper's draws
through its own ``get_state``); `put` writes one back. Nothing in a snapshot is unpickled
when a checkpoint is read (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from envs.base import env_state
from rlmpc.system.faults import FaultInjector

if TYPE_CHECKING:
    from rlmpc.system.worker import RolloutWorker


def take(self: RolloutWorker) -> dict[str, Any]:
    """The worker's whole acting state as plain data (module docstring): ``envs`` (each
    env's `envs.base.EnvState`, None where it cannot be captured), ``obs`` ``[B, nobs]``,
    ``warm`` ``[B, H, nu]``, the numpy (``rng``) and torch (``gen``) random states, the
    ``episodes`` in flight and the policy ``version``. Copies: acting goes on unchanged."""
    st, ep = self.acting, self.acting.episodes
    ended = [(float(r), int(n), bool(ok), int(d), {k: float(v) for k, v in m.items()})
             for r, n, ok, d, m in ep.ended]  # fmt: skip
    return {
        "envs": [env_state(e) for e in self.envs],
        "faults": [e.get_state() if isinstance(e, FaultInjector) else None for e in self.envs],
        "obs": torch.from_numpy(st.obs.copy()),
        "warm": st.warm.detach().to("cpu", copy=True),
        "rng": self.rng.bit_generator.state,
        "gen": self.gen.get_state(),
        "episodes": {
            "ret": torch.from_numpy(ep.ret.copy()),
            "len": torch.from_numpy(ep.len.copy()),
            "danger": torch.from_numpy(ep.danger.copy()),
            "ended": ended,
        },
        "version": self.version,
    }


def put(self: RolloutWorker, snapshot: dict[str, Any]) -> None:
    """Undo to a `snapshot` (taken by a worker of the same spec). Envs whose state it lacks
    (None: Box2D, a CARLA server) restart their episode here."""
    if not isinstance(snapshot, dict):
        raise TypeError(f"a worker snapshot is a dict of plain data, got {type(snapshot).__name__}")
    if len(snapshot["envs"]) != len(self.envs):
        raise ValueError(
            f"the snapshot holds {len(snapshot['envs'])} envs, this worker {len(self.envs)}"
        )
    st, ep, episodes = self.acting, self.acting.episodes, snapshot["episodes"]
    st.pending.clear()  # a snapshot is taken between episodes' starts, never with one pending
    st.obs = snapshot["obs"].numpy().copy()
    st.warm = snapshot["warm"].to(self.device, copy=True)
    self.rng.bit_generator.state = snapshot["rng"]
    self.gen.set_state(snapshot["gen"])
    ep.ret, ep.len = episodes["ret"].numpy().copy(), episodes["len"].numpy().copy()
    ep.danger, ep.ended = episodes["danger"].numpy().copy(), list(map(tuple, episodes["ended"]))
    self.version = int(snapshot["version"])
    for env, state in zip(self.envs, snapshot.get("faults", [None] * len(self.envs)),
                          strict=True):  # fmt: skip
        if state is not None and isinstance(env, FaultInjector):
            env.set_state(state)
    for b, (env, state) in enumerate(zip(self.envs, snapshot["envs"], strict=True)):
        if state is not None:
            env.unwrapped.set_state(state)
            continue
        st.obs[b] = env.reset(seed=int(self.rng.integers(2**31)))[0]
        st.warm[b] = 0.0
        ep.clear(b)
