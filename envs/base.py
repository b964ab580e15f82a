"""The contract between an environment and the planner that rolls out its approximate model.

Shape letters used throughout the project:
``B`` envs (batch), ``M`` candidates, ``K`` MPPI samples, ``H`` horizon, ``D`` ensemble heads,
``nx`` planner-state size, ``nu`` control size, ``na`` high-level (RL) action size,
``nobs`` observation size, ``nt`` cost-target size.

Every env module ``envs/<name>.py`` provides a ``gymnasium.Env`` and a `PlannerModel`
subclass. The env hands out its model with ``env.unwrapped.planner_model()`` (so a model
always matches its env's parameters: track, constants) and its current planner state with
``model.planner_state(env)``.

Conventions (all envs follow them; the planner and learner rely on them):

* **Planner state ``x`` carries the episode's context.** Besides the physical state it holds
  every quantity the cost and ψ need that is constant (or scripted) during an episode: the
  danger zone ``(cx, cy, w, h)``, the opponent's state for racing. ``dynamics`` keeps
  constants constant. So B envs with different zones plan in one batched call and
  ``observe(x)`` can rebuild the full RL observation.
* **High-level actions are normalised**: the policy acts in ``[-1, 1]^na``; ``target(a)``
  maps (and clips) them to the cost's physical target ``x*(a)`` (eq. 39): target angles
  ``[θ1*, θ2*]`` for Acrobot, target velocities ``[ẋ*, ẏ*]`` for Lunar Lander and Racing.
  ``tracked(x)`` returns the part of the state compared against it.
* **Pure batched torch**: every tensor method takes ``[..., nx]`` / ``[..., nu]`` tensors
  and returns tensors on the same device and dtype; no hidden state, no in-place writes to
  inputs. float32 and float64 both work.
* ``reward(x, u)`` is the paper's r̂ for the transition ``x --u--> dynamics(x, u)``: the
  env's dense reward without terminal bonuses (App. B, "reward model"); those are
  ``terminal_reward(x')`` on the states ``terminated(x')`` flags, one rule for every env.
* **An episode is captured as plain data** (`EnvState`, for checkpoints): the unwrapped env's
  ``get_state()`` / ``set_state(state)``. An env that cannot capture its simulator returns
  None (Box2D's world, a CARLA server's), and so does one without the methods: its episode
  restarts when a checkpoint is restored.
* **Frames** (optional): an env whose ``render_mode="rgb_array"`` gives frames may also map
  the plane of ``PlannerModel.position`` onto them: ``env.unwrapped.pixels(p)`` takes
  points ``[..., 2]`` (float) and returns their ``(column, row)`` ``[..., 2]`` in the frame
  ``render()`` returns now (`Pixels`). Evaluation videos draw the planner's candidate paths
  and the danger zone over the frames with it; without it they show the frames alone.
* **An env on an external simulator (a server) that it lost** ends the episode it was in
  with its registry's ``episode_lost(info)`` true (the rollout worker drops that episode and
  counts it as a ``lost`` fault), and gets its server back on the next ``reset``. When the
  server is still not back after the env's own wait, ``reset`` raises `SimulatorUnavailable`:
  the env is intact and tries again on its next ``reset``, so the driver counts the fragment
  as lost and keeps the actor.
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor

from envs.danger import in_zone


class SimulatorUnavailable(ConnectionError):
    """An env's external simulator (a server) did not answer within the env's own wait.

    The env itself is intact: its next ``reset`` tries the simulator again. Subclasses
    (`envs.racing.carla_client.CarlaUnavailable`) carry the details as fields and pickle with
    them, so the error crosses Ray as itself.
    """


class PlannerModel(abc.ABC):
    """Approximate model ``M̂ = <X, U, r̂, P̂, H, μ̂>`` of one environment (paper §3)."""

    #: planner-state, control, high-level-action, observation and target sizes
    nx: ClassVar[int]
    nu: ClassVar[int]
    na: ClassVar[int]
    nobs: ClassVar[int]
    nt: ClassVar[int]
    #: control bounds, length nu each (the env's action space)
    u_low: ClassVar[tuple[float, ...]]
    u_high: ClassVar[tuple[float, ...]]
    #: slice of x holding the danger zone (cx, cy, w, h)
    zone_slice: ClassVar[slice]

    @abc.abstractmethod
    def dynamics(self, x: Tensor, u: Tensor) -> Tensor:
        """P̂: next planner state ``[..., nx]`` from ``x [..., nx]`` and ``u [..., nu]``.

        Controls are clipped to ``[u_low, u_high]`` inside, as the env does.
        """

    def step_rows(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor, torch.Size]:
        """The prologue every batched step shares: ``x [..., nx]`` and ``u [..., nu]``
        checked, broadcast to one batch shape and flattened to rows; ``(x [N, nx],
        u [N, nu], batch shape)``. Views where the shapes allow (no copy)."""
        check_last(x, self.nx, "x")
        check_last(u, self.nu, "u")
        shape = x.shape[:-1]
        if u.shape[:-1] != shape:
            shape = torch.broadcast_tensors(x[..., 0], u[..., 0])[0].shape
            x, u = x.expand(*shape, self.nx), u.expand(*shape, self.nu)
        return x.reshape(-1, self.nx), u.reshape(-1, self.nu), shape

    @abc.abstractmethod
    def reward(self, x: Tensor, u: Tensor) -> Tensor:
        """r̂(x, u) ``[...]`` for the transition from ``x`` under ``u`` (eq. 6), no terminal bonus."""

    @abc.abstractmethod
    def observe(self, x: Tensor) -> Tensor:
        """ψ: the RL observation ``[..., nobs]`` of a planner state (eq. 6)."""

    @abc.abstractmethod
    def planner_state(self, env: Any) -> np.ndarray:
        """The planner state ``[nx]`` (float64) of a live env (unwrapped or wrapped)."""

    @abc.abstractmethod
    def position(self, x: Tensor) -> Tensor:
        """The planar point ``[..., 2]`` that the danger zone is tested against."""

    @abc.abstractmethod
    def target(self, a: Tensor) -> Tensor:
        """x*(a): the cost's target ``[..., nt]`` for normalised high-level actions ``[..., na]``."""

    @abc.abstractmethod
    def tracked(self, x: Tensor) -> Tensor:
        """The state features ``[..., nt]`` compared with x*(a) in eq. (39)."""

    def tracking_error(self, x: Tensor, target: Tensor) -> Tensor:
        """``tracked(x) - target`` ``[..., nt]``; models with angles override it to wrap them."""
        return self.tracked(x) - target

    def tracking_error_parts(self, x: Tensor, target: Tensor) -> tuple[Tensor, ...]:
        """`tracking_error`'s components, ``nt`` tensors ``[...]``: its ``unbind(-1)``.

        A model whose error is the plain difference may give each component as its own
        difference instead (`envs.lunar_lander.model.LunarLanderModel`): the same values,
        without the interleaved ``[..., nt]`` tensor that the planner's component-major
        states would otherwise be written into and read back from with a stride."""
        return self.tracking_error(x, target).unbind(-1)

    def scripted_action(self, obs: Tensor) -> Tensor:
        """A hand-written high-level policy: actions ``[..., na]`` for observations ``[..., nobs]``.

        App. E's "MPPI used alone" check of the low level (`rlmpc.baselines.planner_alone`): the
        planner, driven by these targets, should solve the task. Not every env has one.
        """
        raise NotImplementedError(f"{type(self).__name__} has no scripted high-level policy")

    def terminated(self, x: Tensor) -> Tensor:
        """Where the model deems an episode over (goal reached, crash...) ``[...]`` bool.

        Used to stop virtual targets at terminal planned states; default: never.
        """
        return torch.zeros(x.shape[:-1], dtype=torch.bool, device=x.device)

    def terminal_reward(self, x: Tensor) -> Tensor:
        """The env's terminal reward for reaching ``x [..., nx]``, ``[...]`` (0 where not terminal).

        What the real env pays for the terminal event the model predicts at ``x`` (a crash,
        leaving the track, a collision, the goal). `reward` never includes it (App. B: "we
        exclude the terminal reward"); the rollout worker adds it to a virtual path's last
        transition when the run keeps terminal rewards (``--virtual-terminal reward``).
        Default: no terminal rewards.
        """
        return torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)

    def others(self, x: Tensor) -> Tensor:
        """Positions ``[..., k, 2]`` of the other agents in the plane of `position` (an
        opponent car); default none (k = 0). Evaluation pictures draw their paths."""
        return x.new_zeros((*x.shape[:-1], 0, 2))

    def marks(self, positions: np.ndarray, others: np.ndarray) -> tuple[str, np.ndarray]:
        """Steps ``[n]`` of a recorded episode worth marking on its pictures, and what they
        are (an overtake), from its positions ``[T+1, 2]`` and the other agents' ``[T+1, k,
        2]``; default none."""
        return "", np.zeros(0, np.int64)

    def draw(self, ax: Any) -> None:
        """Draw the env's fixed scene (track boundaries, a landing pad) on a matplotlib axis,
        in the plane of `position`; default nothing."""
        return None

    def danger_zone(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The zone ``(cx, cy, w, h)`` carried in ``x``, each ``[...]``."""
        z = x[..., self.zone_slice]
        return z[..., 0], z[..., 1], z[..., 2], z[..., 3]

    def in_danger(self, x: Tensor) -> Tensor:
        """Eq. (42) on planner states: ``[...]`` bool, the same function the env's reward uses."""
        p = self.position(x)
        return in_zone(p[..., 0], p[..., 1], *self.danger_zone(x))

    def danger_indicator(self, x: Tensor) -> Tensor:
        """`in_danger` as 1.0 / 0.0 in ``x``'s dtype ``[...]``, the planner's eq. (42) term.

        The same comparisons as `envs.danger.in_zone`, each into a float tensor and the two
        multiplied: ~10x faster on CPU than bool masks and a cast (`planners.mppi`)."""
        p = self.position(x)
        cx, cy, w, h = self.danger_zone(x)

        def inside(d: Tensor, half: Tensor) -> Tensor:  # |d| <= half as 1.0 / 0.0, d's shape
            return torch.le(d.abs_(), half, out=x.new_empty(d.shape))

        return inside(p[..., 0] - cx, 0.5 * w).mul_(inside(p[..., 1] - cy, 0.5 * h))

    def bounds(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """Control bounds as tensors on ``like``'s device and dtype."""
        lo = torch.tensor(self.u_low, dtype=like.dtype, device=like.device)
        hi = torch.tensor(self.u_high, dtype=like.dtype, device=like.device)
        return lo, hi


class EnvState(Protocol):
    """An env whose episode can be written down as plain data and put back (checkpoints).

    ``get_state()`` holds everything the rest of the episode depends on: the env's random
    stream (``np_random.bit_generator.state``), its step count, its simulator's state and the
    episode's context (danger zone, opponent), as ints, floats, bools, str, None, tensors and
    lists, tuples and dicts of those: what ``torch.load(weights_only=True)`` reads back, no
    pickled objects. ``set_state(env.get_state())`` on an env built with the same arguments
    makes it go on exactly as ``env`` would, whatever it did before. ``get_state()`` is None
    where the simulator cannot be captured; ``set_state`` is then never called.
    """

    def get_state(self) -> dict[str, Any] | None: ...

    def set_state(self, state: dict[str, Any]) -> None: ...


class Pixels(Protocol):
    """An env that maps the plane of `PlannerModel.position` onto its ``rgb_array`` frames
    (the module docstring's "Frames")."""

    def pixels(self, p: np.ndarray) -> np.ndarray:
        """``(column, row)`` ``[..., 2]`` of the points ``p [..., 2]`` in the frame that
        ``render()`` returns now (either may fall outside it)."""
        ...


def env_pixels(env: Any) -> Any:
    """The (wrapped) env's `Pixels.pixels`, or None where it has none."""
    return getattr(env.unwrapped, "pixels", None)


def check_last(t: Tensor, n: int, name: str) -> None:
    """`ValueError` naming ``name`` unless ``t`` is ``[..., n]``."""
    if t.shape[-1:] != (n,):
        raise ValueError(f"{name} must have shape [..., {n}], got {tuple(t.shape)}")


def env_state(env: Any) -> dict[str, Any] | None:
    """`EnvState.get_state` of a (wrapped) env; None for an env without it."""
    get = getattr(env.unwrapped, "get_state", None)
    return None if get is None else get()


def check_action(
    action: Any, space_shape: tuple[int, ...], low: np.ndarray, high: np.ndarray
) -> np.ndarray:
    """Validate an env action: right shape, finite, inside the bounds; else `ValueError`.

    Returns the action as a float64 array. A tolerance of 1e-6 absorbs float32 round-off.
    Written for the envs' actions of one or two numbers, called once per env step: plain
    Python comparisons on the values (2 µs) where NumPy's reductions took 25 µs a call.
    """
    a = np.array(action, dtype=np.float64)  # a copy: the caller's array is never returned
    if a.shape != space_shape:
        raise ValueError(f"action must have shape {space_shape}, got {a.shape}")
    vals = a.ravel().tolist()
    if not all(map(math.isfinite, vals)):
        raise ValueError(f"action must be finite, got {a}")
    clip = False
    for v, lo, hi in zip(vals, low.ravel().tolist(), high.ravel().tolist(), strict=True):
        if not lo <= v <= hi:
            if v < lo - 1e-6 or v > hi + 1e-6:
                raise ValueError(f"action {a} is outside the action space bounds [{low}, {high}]")
            clip = True
    return np.clip(a, low, high) if clip else a
