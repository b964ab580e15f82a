"""The rollout worker: n_envs envs, one MPPI planner, and a copy of the high-level policy.

Per step (Alg. 1's inner loop, batched over the worker's B envs):

1. draw M candidates ``a^(m) ~ π(·|s_t)`` (eq. 4) with their log-probs;
2. plan once for all of them (`planners.MPPI`: shared K noise sequences, M cost updates);
3. execute a uniformly chosen ``m*`` in the real env → one real transition (eq. 5);
4. keep the other ``M-1`` candidates as virtual samples (eq. 7) with their planned paths,
   re-scored with r̂ and mapped to observations with ψ (eq. 6), for the learner's targets.

The warm start of each env is the executed candidate's plan, shifted (zero after a reset).
Acting needs only the plans' controls (`planners.MPPI.plan_controls`); the kept candidates'
paths are rolled out, re-scored and observed once per fragment, for all T steps together.
Every ``T`` steps the fragment goes to the two replay shards through the object store.
This is a plain class: tests drive it in-process; `rlmpc.system.driver` wraps it with ``ray.remote``.
"""

from __future__ import annotations

import ctypes
import pickle
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium.error import ResetNeeded

import envs
from learners.policy import NetworkConfig, build_networks
from planners.costs import PlannerConfig, build_planner
from planners.mppi import shift_warm_start
from rlmpc.system.records import (
    CollectResult,
    EpisodeStats,
    FragmentId,
    FragmentMeta,
    RealArrays,
    VirtualArrays,
)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a rollout worker is built from (shipped to Ray actors as is)."""

    env: str
    n_envs: int
    num_candidates: int
    planner: PlannerConfig
    networks: NetworkConfig
    seed: int
    device: str = "cpu"
    threads: int = 1
    keep_virtual: bool = True
    virtual_terminal: str = "reward"
    """'reward': a virtual path's transition into a terminal planned state earns the env's
    terminal reward (`envs.base.PlannerModel.terminal_reward`); 'exclude': App. B's r̂ alone."""


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 128 << 20) -> bool:
    """Have glibc's malloc keep freed blocks of up to ``mmap_threshold`` bytes for reuse.

    Every planner call allocates and frees tensors of a few MB. glibc's defaults map such
    blocks afresh (or trim them off the heap) over and over, and touching the new pages
    costs ~2,000 page faults per Lunar Lander step, about as long as the step's arithmetic.
    Process-wide, like ``torch.set_num_threads``; at most ``trim_threshold`` bytes of freed
    heap are kept. Returns False (and changes nothing) where the C library is not glibc.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, mmap_threshold)) and bool(
        mallopt(m_trim_threshold, trim_threshold)
    )


def _episode_extras(info: dict[str, Any]) -> dict[str, float]:
    """The env-specific columns of the paper's tables, from an episode's last info."""
    extra = {}
    if "distance_to_pad" in info:
        extra["distance_to_pad"] = float(info["distance_to_pad"])
    if "collision" in info or "off_track" in info:
        extra["collision_or_offtrack"] = float(
            bool(info.get("collision")) or bool(info.get("off_track"))
        )
    return extra


def _success(info: dict[str, Any]) -> bool:
    return bool(info.get("is_success", info.get("success", False)))


class _Episodes:
    """Running sums of the episodes in flight, and the list of those that ended."""

    def __init__(self, n: int) -> None:
        self.ret = np.zeros(n)
        self.len = np.zeros(n, np.int64)
        self.danger = np.zeros(n, np.int64)
        self.ended: list[tuple[float, int, bool, int, dict[str, float]]] = []

    def step(self, b: int, reward: float, info: dict[str, Any]) -> None:
        self.ret[b] += reward
        self.len[b] += 1
        self.danger[b] += int(bool(info.get("in_danger", False)))

    def end(self, b: int, info: dict[str, Any]) -> None:
        self.ended.append(
            (
                self.ret[b],
                int(self.len[b]),
                _success(info),
                int(self.danger[b]),
                _episode_extras(info),
            )
        )
        self.ret[b], self.len[b], self.danger[b] = 0.0, 0, 0

    def pop(self) -> EpisodeStats:
        ended, self.ended = self.ended, []
        keys = sorted({k for e in ended for k in e[4]})
        return EpisodeStats(
            np.array([e[0] for e in ended], dtype=np.float64),
            np.array([e[1] for e in ended], dtype=np.int64),
            np.array([e[2] for e in ended], dtype=bool),
            np.array([e[3] for e in ended], dtype=np.int64),
            {k: np.array([e[4].get(k, np.nan) for e in ended]) for k in keys},
        )


class _Kept(NamedTuple):
    """One step's M-1 candidates that were not executed, before their paths are rolled out."""

    obs: np.ndarray
    """``[B, nobs]`` s_t, where every kept candidate was drawn."""
    x: torch.Tensor
    """``[B, nx]`` the planner states the plans start from."""
    actions: torch.Tensor
    """``[B, M-1, na]`` the candidates a^(m)."""
    logp: torch.Tensor
    """``[B, M-1]`` their log-probabilities."""
    controls: torch.Tensor
    """``[B, M-1, H, nu]`` their planned control sequences."""


class RolloutWorker:
    """Acts in ``spec.n_envs`` envs with the policy + MPPI and returns fragments of T steps.

    ``seed_offset`` separates restarted instances (Ray reconstructs an actor with the same
    arguments; the system passes a fresh number here) from the original. ``env_kwargs`` gives
    each env its constructor arguments (a CARLA env its server's host and ports).
    """

    def __init__(
        self, actor_id: int, spec: WorkerSpec, seed_offset: int = 0,
        env_kwargs: list[dict[str, Any]] | None = None,
    ) -> None:  # fmt: skip
        if spec.n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {spec.n_envs}")
        if spec.num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {spec.num_candidates}")
        torch.set_num_threads(spec.threads)
        keep_freed_memory()
        self.actor_id, self.spec = actor_id, spec
        self.device = torch.device(spec.device)
        kwargs = env_kwargs or [{}] * spec.n_envs
        if len(kwargs) != spec.n_envs:
            raise ValueError(
                f"env_kwargs must hold one dict per env ({spec.n_envs}), got {len(kwargs)}"
            )
        self.envs = [envs.make(spec.env, **kw) for kw in kwargs]
        self.model = self.envs[0].unwrapped.planner_model()
        self.horizon = spec.planner.planning_horizon
        self.values = None
        value_fn = None
        if spec.planner.w_value > 0:  # eq. (41): -w_value V(ψ(x_H)), V from the learner's weights
            self.values = build_networks(self.model.nobs, self.model.na, spec.networks)[1]
            self.values.to(self.device).eval()
            value_fn = self._terminal_value
        self.planner = build_planner(self.model, spec.planner, value_fn=value_fn)
        self.policy = build_networks(self.model.nobs, self.model.na, spec.networks)[0].to(
            self.device
        )
        self.policy.eval()
        seq = np.random.SeedSequence([spec.seed, actor_id, seed_offset])
        env_seed, torch_seed, np_seed = seq.generate_state(3)
        self.rng = np.random.default_rng(int(np_seed))
        self.gen = torch.Generator(device=self.device).manual_seed(int(torch_seed))
        self.version = -1
        self.obs = np.stack(
            [e.reset(seed=int(env_seed) + i)[0] for i, e in enumerate(self.envs)]
        ).astype(np.float32)
        self.warm = torch.zeros(spec.n_envs, self.horizon, self.model.nu, device=self.device)
        self.episodes = _Episodes(spec.n_envs)

    # ---- weights ----------------------------------------------------------------------
    def set_weights(self, weights: dict[str, Any], version: int) -> None:
        """Load the policy part of `PPOLearner.get_weights()` (at fragment boundaries)."""
        self.policy.load_state_dict(weights["policy"])
        if self.values is not None:
            self.values.load_state_dict(weights["values"])
        self.version = version

    def _terminal_value(self, x: torch.Tensor) -> torch.Tensor:
        """w_value · V̄(ψ(x)) for eq. (41)'s terminal cost −V(x_H), in x's dtype."""
        v = self.values.mean(self.model.observe(x).to(torch.float32))
        return self.spec.planner.w_value * v.to(x.dtype)

    # ---- acting -------------------------------------------------------------------------
    def _planner_states(self) -> torch.Tensor:
        x = np.stack([self.model.planner_state(e) for e in self.envs])
        return torch.as_tensor(x, dtype=torch.float32, device=self.device)

    @torch.inference_mode()
    def step(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        """One step of every env (module doc, 1-4); returns the real and virtual arrays."""
        real, kept = self._act()
        if kept is None:
            return real, None
        return real, {k: v[0] for k, v in self._virtual([kept]).items()}

    def _act(self) -> tuple[dict[str, np.ndarray], _Kept | None]:
        """Steps 1-3 of the module doc, and the M-1 candidates kept for step 4 (None: none)."""
        B, M = self.spec.n_envs, self.spec.num_candidates
        obs = torch.as_tensor(self.obs, device=self.device)
        actions, logp = self.policy.sample(obs, M, generator=self.gen)  # [B, M, na], [B, M]
        x = self._planner_states()
        # the paths are rolled out later, for many steps at once (`_virtual`)
        plan = self.planner.plan_controls(x, actions, self.warm, generator=self.gen)
        chosen = self.rng.integers(M, size=B)
        rows = np.arange(B)
        controls = plan.first[rows, chosen].cpu().numpy()
        next_obs = np.empty_like(self.obs)
        rewards = np.zeros(B, np.float32)
        terminated = np.zeros(B, bool)
        truncated = np.zeros(B, bool)
        reset_obs = self.obs.copy()
        self.warm = shift_warm_start(plan.controls[rows, chosen])
        for b, env in enumerate(self.envs):
            o, r, term, trunc, info = env.step(controls[b].astype(env.action_space.dtype))
            next_obs[b], rewards[b], terminated[b], truncated[b] = o, r, term, trunc
            self.episodes.step(b, float(r), info)
            if term or trunc:
                self.episodes.end(b, info)
                reset_obs[b] = env.reset()[0]
                self.warm[b] = 0.0
            else:
                reset_obs[b] = o
        real = {
            "obs": self.obs,
            "actions": actions[rows, chosen].cpu().numpy(),
            "logp": logp[rows, chosen].cpu().numpy(),
            "rewards": rewards,
            "terminated": terminated,
            "truncated": truncated,
            "next_obs": next_obs,
        }
        self.obs = reset_obs
        if M == 1 or not self.spec.keep_virtual:
            return real, None
        # the M-1 candidates that were not executed, per env, in candidate order
        keep = np.ones((B, M), bool)
        keep[rows, chosen] = False
        idx = torch.as_tensor(np.nonzero(keep)[1].reshape(B, M - 1), device=self.device)
        take = lambda t: torch.take_along_dim(t, idx.view(B, M - 1, *([1] * (t.ndim - 2))), dim=1)
        return real, _Kept(real["obs"], x, take(actions), take(logp), take(plan.controls))

    @torch.inference_mode()
    def _virtual(self, steps: list[_Kept]) -> dict[str, np.ndarray]:
        """Step 4 for T steps' kept candidates at once: arrays ``[T, B, M-1, ...]``.

        The planned paths (`PlanResult.paths` of the kept candidates) and r̂ along them are
        one batched rollout of ``T·B·(M-1)`` rows instead of T rollouts of ``B·M``.
        """
        model = self.model
        seqs = torch.stack([s.controls for s in steps])  # [T, B, M-1, H, nu]
        x = torch.stack([s.x for s in steps]).unsqueeze(2)  # [T, B, 1, nx]
        paths = self.planner.paths(x.expand(*seqs.shape[:3], x.shape[-1]), seqs)
        reward_after = getattr(model, "reward_after", None)  # r̂ read off x_{t+1}, no re-stepping
        if reward_after is not None:
            path_rewards = reward_after(paths[..., 1:, :])
        else:
            path_rewards = model.reward(paths[..., :-1, :], seqs)
        terminated = model.terminated(paths[..., 1:, :])
        if self.spec.virtual_terminal == "reward":
            path_rewards = path_rewards + model.terminal_reward(paths[..., 1:, :])
        M1 = seqs.shape[2]
        return {
            "obs": np.repeat(np.stack([s.obs for s in steps])[:, :, None], M1, axis=2),
            "actions": torch.stack([s.actions for s in steps]).cpu().numpy(),
            "logp": torch.stack([s.logp for s in steps]).cpu().numpy(),
            "path_obs": model.observe(paths).cpu().numpy(),
            "path_rewards": path_rewards.cpu().numpy(),
            "path_terminated": terminated.cpu().numpy(),
        }

    def collect(
        self, fid: FragmentId, steps: int, weights: dict[str, Any] | None, version: int,
        snapshot: bool = False,
    ) -> tuple[RealArrays, VirtualArrays | None, CollectResult]:  # fmt: skip
        """``steps`` steps of every env under ``weights`` (version ``version``)."""
        start = time.perf_counter()
        if weights is not None:
            self.set_weights(weights, version)
        reals, kept = [], []
        with torch.inference_mode():
            for _ in range(steps):
                real, k = self._act()
                reals.append(real)
                if k is not None:
                    kept.append(k)
        real_arrays = RealArrays(**{k: np.stack([r[k] for r in reals]) for k in reals[0]})
        virtual_arrays = None
        if kept:
            # [T, B, M-1, ...] -> [T·B·(M-1), ...]
            virtual_arrays = VirtualArrays(
                **{k: v.reshape(-1, *v.shape[3:]) for k, v in self._virtual(kept).items()}
            )
        n_virtual = 0 if virtual_arrays is None else len(virtual_arrays.obs)
        meta = FragmentMeta(fid, self.version, steps * self.spec.n_envs, n_virtual)
        result = CollectResult(
            meta, self.episodes.pop(), self.snapshot() if snapshot else None,
            time.perf_counter() - start,
        )  # fmt: skip
        return real_arrays, virtual_arrays, result

    # ---- snapshots (exact resume) -----------------------------------------------------
    def snapshot(self) -> bytes:
        """The worker's whole acting state: envs, observations, warm starts, RNGs, episodes."""
        return pickle.dumps(
            {
                "envs": self.envs,
                "obs": self.obs,
                "warm": self.warm.cpu(),
                "rng": self.rng.bit_generator.state,
                "gen": self.gen.get_state(),
                "episodes": self.episodes,
                "version": self.version,
            }
        )

    def restore(self, blob: bytes) -> None:
        """Undo to a `snapshot`. Envs whose simulator cannot be pickled (Box2D: they raise
        gymnasium's `ResetNeeded` until reset) restart their episode here."""
        state = pickle.loads(blob)
        self.envs, self.obs = state["envs"], state["obs"]
        self.warm = state["warm"].to(self.device)
        self.rng.bit_generator.state = state["rng"]
        self.gen.set_state(state["gen"])
        self.episodes, self.version = state["episodes"], state["version"]
        for b, env in enumerate(self.envs):
            try:
                self.model.planner_state(env)
            except ResetNeeded:
                self.obs[b] = env.reset(seed=int(self.rng.integers(2**31)))[0]
                self.warm[b] = 0.0
                self.episodes.ret[b], self.episodes.len[b], self.episodes.danger[b] = 0.0, 0, 0
