"""The rollout worker: n_envs envs, one MPPI planner, and a copy of the high-level policy.

Per step (Alg. 1's inner loop, batched over the worker's B envs), `RolloutWorker._act`:

1. draw M candidates ``a^(m) ~ π(·|s_t)`` (eq. 4) with their log-probs;
2. plan once for all of them (`planners.MPPI`: shared K noise sequences, M cost updates);
3. execute a uniformly chosen ``m*`` in the real env → one real transition (eq. 5);
4. keep the other ``M-1`` candidates as virtual samples (eq. 7) with their planned paths,
   re-scored with r̂ and mapped to observations with ψ (eq. 6), for the learner's targets;
5. with PO-MPC's KL prior (``WorkerSpec.candidate_gamma``), score all M candidates on one
   scale, G^(m) = Σ_k γ^k r̂_k + γ^H V̄(ψ(x̂_H)) along each planned path with this worker's
   copy of the critic (`learners.pompc.candidate_returns`), and ship the candidates and their
   G with the real fragment (`RealArrays.candidates`, ``.candidate_returns``); no env steps.

The warm start of each env is the executed candidate's plan, shifted (zero after a reset).
While training, an env step that raises, returns a non-finite observation or reward, or takes
longer than ``env_step_timeout`` costs its episode, not the worker (`RolloutWorker._act`);
``inject_faults`` wraps the envs to cause such steps on purpose (`rlmpc.system.faults`). An episode
the env ends because it lost its simulator (the registry's ``episode_lost``) is dropped the
same way (a ``lost`` fault; an evaluation plays it again from its seed). An env whose next
episode cannot start (its simulator did not come back: `envs.base.SimulatorUnavailable`)
fails the call, and starts it first thing in the next one.
Acting needs only the plans' controls (`planners.MPPI.plan_controls`); the kept candidates'
paths are rolled out, re-scored and observed once per fragment, for all T steps together.

Evaluation is the same loop in its other mode (`rlmpc.system.episodes.Evaluation`): the
policy's mean is the one candidate executed (M-1 draws beside it, planned apart, only while
an episode is recorded for the pictures or filmed: the figures are the same either way),
planned in full, on seeded evaluation episodes. A worker that evaluates is built for that
(`EVAL_ACTOR_ID`); it never trains. With ``WorkerSpec.render`` its envs render
``rgb_array`` frames, so its evaluations can film episodes (`rlmpc.system.records.Filming`).

A `RolloutWorker.snapshot` (what checkpoints store for exact resumption) is plain data:
tensors, ints, floats, lists and dicts, each env's episode through `envs.base.EnvState`;
nothing in it is unpickled when a checkpoint is read (``torch.load(weights_only=True)``).
This is a plain class: tests drive it in-process; `rlmpc.system.shells` wraps it.
"""

from __future__ import annotations

import ctypes
import math
import os
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

import envs
from envs.base import env_state
from learners.policy import NetworkConfig, build_networks
from planners.costs import PlannerConfig, build_planner
from planners.mppi import shift_warm_start
from rlmpc.system.episodes import EpisodeTracker, Evaluation, Training, guarded_step
from rlmpc.system.faults import STALL_PAST_TIMEOUT, FaultInjector
from rlmpc.system.planned import Kept, Scored, scored_candidates, virtual_arrays
from rlmpc.system.records import (
    CollectResult,
    EvalResult,
    Filming,
    FragmentId,
    FragmentMeta,
    RealArrays,
    RealStep,
    VirtualArrays,
    Weights,
)

#: the actor id that seeds evaluation workers (apart from every rollout actor)
EVAL_ACTOR_ID = 1_000_000


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a rollout worker is built from (plain data; `rlmpc.system.checkpoint`
    stores it)."""

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
    inject_faults: tuple[tuple[str, float], ...] = ()
    """(kind, probability per step) of the faults injected into every env
    (`rlmpc.system.faults.FaultInjector`); none: the envs are not wrapped"""
    env_step_timeout: float = math.inf
    """seconds an env step may take while training before it costs its episode"""
    candidate_gamma: float | None = None
    """PO-MPC's planner prior (`learners.pompc`): the discount γ of each candidate's planned
    return G^(m), shipped with the real fragment; None: the candidates are not scored"""
    diagnostics: bool = False
    """ship the bound's per-step inputs with each real fragment (`StepDiagnostics`): the
    model's one-step prediction at the executed control and eq. (35)'s sampling term"""
    render: bool = False
    """build the envs with ``render_mode="rgb_array"`` where the env's class offers it (an
    evaluator that films episodes); rendering happens only while filming"""


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


class StepDiagnostics(NamedTuple):
    """What the bound's estimates (`learners.bound`) need of one real step, ``[B, ...]``; NaN
    where the step was faulted (its episode dropped)."""

    model_obs: np.ndarray
    """``[B, nobs]`` ψ(P̂(x_t, u_t)): the planner model's next observation at the executed control"""
    model_rewards: np.ndarray
    """``[B]`` r̂(x_t, u_t), plus the terminal reward where the model ends the episode and the
    run keeps terminal rewards (the reward the virtual data use)"""
    plan_kl: np.ndarray
    """``[B]`` eq. (35)'s ½ Σ_τ Δu_τᵀ Σ⁻¹ Δu_τ: the executed plan against its nominal (warm start)"""


class Diagnosed(NamedTuple):
    """One real step's inputs to its `StepDiagnostics`, kept until the fragment ends."""

    x: torch.Tensor
    """``[B, nx]`` the planner states x_t"""
    executed: torch.Tensor
    """``[B, nu]`` the executed controls u_t"""
    plan: torch.Tensor
    """``[B, H, nu]`` the executed plans"""
    nominal: torch.Tensor
    """``[B, H, nu]`` their nominal (the warm start before the shift)"""
    faulted: np.ndarray
    """``[B]`` the steps that were faulted (NaN diagnostics)"""


class _Acting:
    """What the acting loop carries from step to step, for the envs it drives."""

    def __init__(self, obs: np.ndarray, warm: torch.Tensor, episodes: EpisodeTracker) -> None:
        self.obs = obs  # [B, nobs] float32: s_t of every env
        self.warm = warm  # [B, H, nu]: each env's warm start
        self.episodes = episodes
        self.live = np.ones(len(obs), bool)  # the envs that act (an evaluation rests some)
        self.pending: dict[int, bool] = {}  # envs whose next episode did not start: again?


class RolloutWorker:
    """Acts in ``spec.n_envs`` envs with the policy + MPPI and returns fragments of T steps.

    ``seed_offset`` separates restarted instances (a backend rebuilds an actor with the same
    arguments and passes a fresh number here) from the original. ``env_kwargs`` gives each
    env its constructor arguments (a CARLA env its server's host and ports).
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
        self.renders = spec.render and "rgb_array" in envs.spec(spec.env).render_modes()
        """whether the envs render frames (evaluations film only then)"""
        if self.renders:
            os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame without a display
            kwargs = [{"render_mode": "rgb_array", **kw} for kw in kwargs]
        self.envs = [envs.make(spec.env, **kw) for kw in kwargs]
        self.episode_lost = envs.spec(spec.env).episode_lost
        self.model = self.envs[0].unwrapped.planner_model()
        self.horizon = spec.planner.planning_horizon
        self.values = None
        value_fn = None
        if spec.planner.w_value > 0 or spec.candidate_gamma is not None:
            # eq. (41): -w_value V(ψ(x_H)), and PO-MPC's G^(m): V from the learner's weights
            self.values = build_networks(self.model.nobs, self.model.na, spec.networks)[1]
            self.values.to(self.device).eval()
        if spec.planner.w_value > 0:
            value_fn = self._terminal_value
        self.planner = build_planner(self.model, spec.planner, value_fn=value_fn)
        #: Σ⁻¹ of the planner's noise, for eq. (35)'s term (`StepDiagnostics.plan_kl`)
        self._sigma_inv = torch.linalg.inv(self.planner.sigma).to(self.device)
        self.policy = build_networks(self.model.nobs, self.model.na, spec.networks)[0].to(
            self.device
        )
        self.policy.eval()
        seq = np.random.SeedSequence([spec.seed, actor_id, seed_offset])
        env_seed, torch_seed, np_seed, fault_seed = seq.generate_state(4)
        if spec.inject_faults:
            stall = STALL_PAST_TIMEOUT * spec.env_step_timeout
            if math.isinf(stall) and "stall" in dict(spec.inject_faults):
                raise ValueError("injected stalls need a finite env_step_timeout")
            self.envs = [
                FaultInjector(e, dict(spec.inject_faults), int(fault_seed) + i, stall)
                for i, e in enumerate(self.envs)
            ]
        self.rng = np.random.default_rng(int(np_seed))
        self.gen = torch.Generator(device=self.device).manual_seed(int(torch_seed))
        self.version = -1
        self.build_virtual = spec.keep_virtual
        """whether `_act` keeps the unexecuted candidates: `WorkerSpec.keep_virtual`, and off
        while the weights acted under carry ρ = 0 (`Weights.rho`)"""
        obs = np.stack([e.reset(seed=int(env_seed) + i)[0] for i, e in enumerate(self.envs)])
        warm = torch.zeros(spec.n_envs, self.horizon, self.model.nu, device=self.device)
        self.acting = _Acting(obs.astype(np.float32), warm, EpisodeTracker(spec.n_envs, spec.env))

    # ---- weights ----------------------------------------------------------------------
    def set_weights(self, weights: Weights, version: int) -> None:
        """Load the learner's `Weights` (at fragment boundaries). Weights made at ρ = 0 stop
        the virtual samples (a learner at ρ = 0 drops them; their paths and r̂ cost ~3 % of a
        Lunar Lander actor's time and ~15 % of an Acrobot one's, `rlmpc.bench.worker
        --rho-zero`). Nothing random is drawn for them, so the real data does not change."""
        self.policy.load_state_dict(weights.policy)
        if self.values is not None:
            self.values.load_state_dict(weights.values)
        self.build_virtual = self.spec.keep_virtual and weights.rho != 0.0
        self.version = version

    def _terminal_value(self, x: torch.Tensor) -> torch.Tensor:
        """w_value · V̄(ψ(x)) for eq. (41)'s terminal cost −V(x_H), in x's dtype."""
        v = self.values.mean(self.model.observe(x).to(torch.float32))
        return self.spec.planner.w_value * v.to(x.dtype)

    # ---- acting -------------------------------------------------------------------------
    def _planner_states(self, rows: np.ndarray | None = None) -> torch.Tensor:
        rows = range(len(self.envs)) if rows is None else rows
        x = np.stack([self.model.planner_state(self.envs[r]) for r in rows])
        return torch.as_tensor(x, dtype=torch.float32, device=self.device)

    def _begin(self, st: _Acting, mode: Training | Evaluation, r: int, again: bool) -> None:
        """Start env ``r``'s next episode (``again``: the one its simulator lost, from its
        start); if that raises, the env is left pending, started first in the next `_act`."""
        r = int(r)
        st.pending[r] = again
        env = self.envs[r]
        first = mode.restart(r, env) if again else mode.next_episode(r, env, st.episodes)
        del st.pending[r]
        st.warm[r] = 0.0
        if first is None:
            st.live[r] = False
        else:
            st.obs[r] = first

    def _act(
        self, st: _Acting, mode: Training | Evaluation
    ) -> tuple[RealStep | None, Kept | None, Scored | None, Diagnosed | None]:
        """One step of the live envs (module doc, 1-3); the real step, the M-1 candidates
        kept for step 4, the M candidates to score for step 5 and the bound's diagnostics'
        inputs (`WorkerSpec.diagnostics`, computed per fragment by `_diagnose`), when
        training (None: none).

        While training, an env step that fails (`rlmpc.system.episodes.guarded_step`), or an
        episode the env lost its simulator in (any mode), costs its episode: the transition is
        a truncation with reward 0 and next_obs s_t, nothing non-finite, and the episode is
        counted as faulted instead of ended (`EpisodeTracker.drop`)."""
        for r, again in sorted(st.pending.items()):
            self._begin(st, mode, r, again)
        M, rows = self.spec.num_candidates, np.nonzero(st.live)[0]
        n, ar = len(rows), np.arange(len(rows))
        s_t = st.obs[rows]
        obs = torch.as_tensor(s_t, device=self.device)
        logp = None
        if mode.explore:
            actions, logp = self.policy.sample(obs, M, generator=self.gen)  # [n, M, na], [n, M]
        else:
            actions = self.policy.mean(obs)[:, None]  # [n, 1, na]: the one that is executed
        x = self._planner_states(rows)
        if mode.explore:  # paths are rolled out later, many steps at once (`rlmpc.system.planned`)
            plan = self.planner.plan_controls(x, actions, st.warm[rows], generator=self.gen)
            chosen = self.rng.integers(M, size=n)
        else:  # planned in full: the pictures draw the candidates' paths
            noise = self.planner.sample_noise(n, x, self.gen)
            plan = self.planner.plan(x, actions, st.warm[rows], noise=noise)
            chosen = np.zeros(n, np.int64)
            self._show(mode, rows, obs, x, st.warm[rows], noise, plan.paths)
        executed = plan.first[ar, chosen]
        controls = executed.cpu().numpy()
        diagnose = logp is not None and self.spec.diagnostics
        nominal = st.warm[rows] if diagnose else None  # a copy: ū before the shift
        st.warm[rows] = shift_warm_start(plan.controls[ar, chosen])
        faulted = np.zeros(n, bool)
        next_obs = np.empty_like(s_t)
        rewards = np.zeros(n, np.float32)
        terminated = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        for j, r in enumerate(rows):
            env = self.envs[r]
            u = controls[j].astype(env.action_space.dtype)
            if mode.drops_faults:
                stepped = guarded_step(env, u, self.spec.env_step_timeout, (self.actor_id, r))
            else:
                stepped = env.step(u)
            fault = stepped if isinstance(stepped, str) else None
            if fault is None and self.episode_lost(stepped[4]):
                fault = "lost"
            if fault is not None:  # the episode is dropped, s_t stands in
                next_obs[j], truncated[j], faulted[j] = s_t[j], True, True
                st.episodes.drop(r, fault)
                self._begin(st, mode, r, again=fault == "lost")
                continue
            o, rew, term, trunc, info = stepped
            next_obs[j], rewards[j], terminated[j], truncated[j] = o, rew, term, trunc
            st.episodes.step(r, float(rew), info)
            mode.after_step(r, env)
            if term or trunc:
                st.episodes.end(r, info)
                self._begin(st, mode, r, again=False)
            else:
                st.obs[r] = o
        if logp is None:
            return None, None, None, None
        diag = None
        if diagnose:  # computed for the whole fragment at once (`_diagnose`)
            diag = Diagnosed(x, executed, plan.controls[ar, chosen], nominal, faulted)
        scored = None
        if self.spec.candidate_gamma is not None:
            scored = Scored(x, actions, plan.controls)
        real = RealStep(
            s_t, actions[ar, chosen].cpu().numpy(), logp[ar, chosen].cpu().numpy(), rewards,
            terminated, truncated, next_obs,
        )  # fmt: skip
        if M == 1 or not self.build_virtual:
            return real, None, scored, diag
        # the M-1 candidates that were not executed, per env, in candidate order
        keep = np.ones((n, M), bool)
        keep[ar, chosen] = False
        idx = torch.as_tensor(np.nonzero(keep)[1].reshape(n, M - 1), device=self.device)
        take = lambda t: torch.take_along_dim(t, idx.view(n, M - 1, *([1] * (t.ndim - 2))), dim=1)
        kept = Kept(s_t, x, take(actions), take(logp), take(plan.controls))
        return real, kept, scored, diag

    def _show(self, mode: Evaluation, rows: np.ndarray, obs: torch.Tensor, x: torch.Tensor,
              warm: torch.Tensor, noise: torch.Tensor, paths: torch.Tensor) -> None:  # fmt: skip
        """Hand the recorded episodes' candidates to ``mode`` (`Evaluation.before_step`): the
        executed plan's path (``paths [n, 1, H+1, nx]``) and M-1 draws of the policy (from the
        mode's own generator) planned apart with the same ``noise``, so that the executed
        plans, and every figure, are those of an evaluation that records nothing."""
        shown = mode.shown(rows)
        if not len(shown):
            return
        idx = torch.as_tensor(shown, device=self.device)
        paths = paths[idx]
        M = self.spec.num_candidates
        if M > 1:
            extra, _ = self.policy.sample(obs[idx], M - 1, generator=mode.gen)
            more = self.planner.plan(x[idx], extra, warm[idx], noise=noise[idx])
            paths = torch.cat([paths, more.paths], dim=1)
        for j, p in zip(shown.tolist(), paths, strict=True):
            r = int(rows[j])
            mode.before_step(r, self.envs[r], x[j], p)

    @torch.inference_mode()
    def _diagnose(self, steps: list[Diagnosed]) -> StepDiagnostics:
        """The bound's inputs (`StepDiagnostics`, ``[T, B, ...]``) for a fragment's T steps
        at once: one model step of ``T·B`` rows at the executed controls instead of T steps
        of B rows (a model step's cost is mostly per call: one per env step was 6–10 % of Lunar
        Lander's acting, beside the planner's H calls; `python -m rlmpc.bench system
        --diagnostics-cost`). Deterministic (no random draw), so the run's data are the same
        with or without."""
        model = self.model
        T, n = len(steps), len(steps[0].x)
        assert all(len(s.x) == n for s in steps), "training acts in every env at every step"
        x = torch.cat([s.x for s in steps])
        u = torch.cat([s.executed for s in steps])
        x1 = model.dynamics(x, u)
        rewards = model.reward(x, u)
        if self.spec.virtual_terminal == "reward":
            rewards = rewards + model.terminated(x1).to(rewards.dtype) * model.terminal_reward(x1)
        du = torch.cat([s.plan - s.nominal for s in steps]).to(self._sigma_inv.dtype)
        kl = 0.5 * torch.einsum("nhi,ij,nhj->n", du, self._sigma_inv, du)
        out = StepDiagnostics(
            model.observe(x1).cpu().numpy().astype(np.float32).reshape(T, n, -1),
            rewards.cpu().numpy().astype(np.float32).reshape(T, n),
            kl.cpu().numpy().astype(np.float32).reshape(T, n),
        )  # fmt: skip
        faulted = np.stack([s.faulted for s in steps])
        for a in out:
            a[faulted] = np.nan
        return out

    def collect(
        self, fid: FragmentId, steps: int, weights: Weights | None, version: int,
        snapshot: bool = False,
    ) -> tuple[RealArrays, VirtualArrays | None, CollectResult]:  # fmt: skip
        """``steps`` steps of every env under ``weights`` (version ``version``)."""
        start = time.perf_counter()
        if weights is not None:
            self.set_weights(weights, version)
        reals, kept, scored, diags, training = [], [], [], [], Training()
        with torch.inference_mode():
            for _ in range(steps):
                real, k, sc, diag = self._act(self.acting, training)
                reals.append(real)
                if k is not None:
                    kept.append(k)
                if sc is not None:
                    scored.append(sc)
                if diag is not None:
                    diags.append(diag)
        terminal = self.spec.virtual_terminal == "reward"
        virtual = None
        if kept:
            virtual = virtual_arrays(self.planner, self.model, kept, terminal).flatten()
        real_arrays = RealArrays.stack(reals)
        if scored:
            cands, returns = scored_candidates(
                self.planner, self.model, self.values, scored, self.spec.candidate_gamma, terminal
            )
            real_arrays = real_arrays._replace(candidates=cands, candidate_returns=returns)
        if diags:
            real_arrays = real_arrays._replace(**self._diagnose(diags)._asdict())
        n_virtual = 0 if virtual is None else len(virtual.obs)
        meta = FragmentMeta(fid, self.version, steps * self.spec.n_envs, n_virtual)
        result = CollectResult(
            meta, self.acting.episodes.pop(), self.snapshot() if snapshot else None,
            time.perf_counter() - start,
        )  # fmt: skip
        return real_arrays, virtual, result

    @torch.inference_mode()
    def evaluate(self, weights: Weights | None, episodes: int, seed: int = 10_000,
                 record: int = 0, plan_every: int = 10,
                 film: Filming | None = None) -> EvalResult:  # fmt: skip
        """N episodes (``seed``, ``seed + 1``...) with the policy's mean, up to ``n_envs`` at once;
        the first ``record`` are recorded, the first ``film.episodes`` filmed (recorded too;
        frames only where the envs render: `WorkerSpec.render`). ``weights`` None keeps the
        policy as it is.

        The result depends on the weights and ``seed`` only (the planner's noise is drawn
        from a generator seeded with ``seed``), so a restarted evaluator repeats it exactly;
        its figures do not depend on ``record`` or ``film`` (`rlmpc.system.episodes`)."""
        if episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        if weights is not None:
            self.set_weights(weights, version=-1)
        kept, self.gen = self.gen, torch.Generator(device=self.device).manual_seed(seed)
        try:
            return self._evaluate(episodes, seed, record, plan_every, film)
        finally:
            self.gen = kept

    def _evaluate(self, episodes: int, seed: int, record: int, plan_every: int,
                  film: Filming | None) -> EvalResult:  # fmt: skip
        n = min(self.spec.n_envs, episodes)
        obs = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(self.envs[:n])])
        warm = torch.zeros(n, self.horizon, self.model.nu, device=self.device)
        st = _Acting(obs.astype(np.float32), warm, EpisodeTracker(n, self.spec.env))
        # the pictures' candidates: a stream apart from the planner's (their draws never
        # shift the evaluation's noise)
        picture_seed = int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])
        pictures = torch.Generator(device=self.device).manual_seed(picture_seed)
        film = film if self.renders else None
        mode = Evaluation(self.model, n, episodes, seed, record, plan_every, film, pictures)
        while st.live.any():
            self._act(st, mode)
        traces = mode.recorded()
        return EvalResult(self.spec.env, st.episodes.pop(), traces, self.model if traces else None)

    # ---- snapshots (exact resume: the acting state as plain data, for checkpoints) -----
    # Tensors, ints, floats, lists and dicts only (each env's episode through
    # `envs.base.EnvState`, an injected-fault wrapper's draws through its own ``get_state``):
    # nothing in a snapshot is unpickled when a checkpoint is read (weights_only=True).
    def snapshot(self) -> dict[str, Any]:
        """The worker's whole acting state as plain data (above): ``envs`` (each
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

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Undo to a `snapshot` (taken by a worker of the same spec). Envs whose state it lacks
        (None: Box2D, a CARLA server) restart their episode here."""
        if not isinstance(snapshot, dict):
            raise TypeError(
                f"a worker snapshot is a dict of plain data, got {type(snapshot).__name__}"
            )
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
