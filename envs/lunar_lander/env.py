"""Lunar Lander with a danger zone (paper App. B.2) and its approximate planner model.

The true system is gymnasium's continuous ``LunarLander`` (Box2D), untouched: same physics,
terrain, dense reward, ±100 terminal rewards and termination. This module adds a rectangular
danger zone to the observation, ``-5`` per step that ends with the lander inside it, and the
1000-step truncation.

Frame (gymnasium's observation frame, used for the zone and by the model): ``x`` is the
lander's horizontal offset from the pad centre in half-viewport widths (10 m), ``y`` its
height above the resting height on the pad in half-viewport heights (6.67 m); the flags
stand at ``x = ±0.2``, the viewport spans ``x ∈ [-1, 1]``, the lander starts near
``(0, 1.41)``. Velocities are gymnasium's scaled ones (``ẋ = 0.2·v_x``, ``ẏ = 0.133·v_y``
with ``v`` in m/s), ``φ̇ = 0.4·ω``.

`envs.lunar_lander.model.LunarLanderModel` is App. B.2's "simplified
rigid-body model with fixed constants".
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.box2d import lunar_lander as ll
from gymnasium.error import ResetNeeded

from envs.base import check_action
from envs.danger import DangerZone
from envs.lunar_lander.airframe import HALF_H, HALF_W, LEG_DOWN, PAD_HALF_WIDTH, body_state
from envs.lunar_lander.model import ZONE_PENALTY, LunarLanderModel

MAX_EPISODE_STEPS = 1000
START_Y = (ll.VIEWPORT_H / ll.SCALE * 0.75 - ll.LEG_DOWN / ll.SCALE) / (
    ll.VIEWPORT_H / ll.SCALE / 2
)
PAD_CLEARANCE = 0.2  #: zones stay out of the box |x| <= PAD_HALF_WIDTH, y <= this (~1.3 m)
MAX_ZONE_WIDTH = 1.0  #: half the viewport width: a zone always leaves a way around it
#: The default zone ranges: a zone between the start and the pad, always above the pad
#: clearance and below the start, at most 0.5 wide.
ZONE_RANGES = {
    "zone_cx_range": (-0.3, 0.3),
    "zone_cy_range": (0.55, 0.95),
    "zone_w_range": (0.2, 0.5),
    "zone_h_range": (0.1, 0.3),
}


class LunarLanderDZEnv(gym.Env):
    """Land on the pad with gymnasium's continuous Lunar Lander, avoiding a danger zone.

    | Space | Shape | Entries (module docstring's frame) |
    |---|---|---|
    | action | ``(2,)`` float32 in ``[-1, 1]`` | ``u_main`` (``<= 0`` off, ``(0, 1]`` → 50–100 % power), ``u_lat`` (``|u| <= 0.5`` off, ``< -0.5`` pushes to -x, ``> 0.5`` to +x) |
    | observation | ``(12,)`` float32 | gymnasium's ``x, y, ẋ, ẏ, φ, φ̇, leg_0, leg_1`` (``leg_0`` is the +x leg), then the zone ``x_D, y_D, w_D, h_D`` |

    | Reward (per step) | |
    |---|---|
    | gymnasium's: shaping difference, ``-0.3``·main and ``-0.03``·side engine power | dense |
    | gymnasium's on termination: crash or out of view ``-100``, at rest ``+100`` | replaces the dense reward |
    | the lander's position inside the zone (eq. 42) after the step | ``-5`` more |

    | Episode end | |
    |---|---|
    | terminated | gymnasium's: the hull touches the ground, ``|x| >= 1``, or the lander comes to rest |
    | truncated | ``max_episode_steps`` (1000) steps without terminating |

    ``info`` (every step): ``success`` (= ``is_success``: gymnasium's safe landing, i.e. the
    episode terminated because the lander came to rest (Box2D "not awake", +100, no crash),
    with its centre between the flags, ``|x| <= 0.2``), ``distance_to_pad`` (``|(x, y)|``,
    obs units) and ``in_danger``. The legs' contact flags are not required: a lander may come
    to rest on the pad standing on one leg's flat foot with the other tip a few mm up
    (gymnasium pays +100 for it; 4 of 6 rests between the flags measured so had a flag off). The zone is drawn at each reset, after gymnasium's terrain and
    push, from ``env.np_random``, uniformly in the four ranges, unless ``danger_zone`` fixes
    it. The zones are validated: they never reach the pad's approach box (``|x| <= 0.2``,
    ``y <= 0.2``) nor the start ``(0, 1.41)``, and are at most 1.0 wide.

    Pickling keeps the constructor arguments and the RNG state, not the Box2D world (which
    does not pickle): an unpickled env must be ``reset()`` before ``step()``; ``reset()``
    without a seed continues the pickled RNG stream.

    Args:
        render_mode: ``None`` or ``"rgb_array"`` (the zone is drawn in red).
        danger_zone: ``(cx, cy, w, h)`` for every episode instead of a random one.
        zone_cx_range, zone_cy_range, zone_w_range, zone_h_range: ``(low, high)`` ranges.
        max_episode_steps: truncation horizon (>= 1).
        gravity, enable_wind, wind_power, turbulence_power: gymnasium's (wind off).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": ll.FPS}

    def __init__(
        self,
        render_mode: str | None = None,
        danger_zone: tuple[float, float, float, float] | None = None,
        zone_cx_range: tuple[float, float] = ZONE_RANGES["zone_cx_range"],
        zone_cy_range: tuple[float, float] = ZONE_RANGES["zone_cy_range"],
        zone_w_range: tuple[float, float] = ZONE_RANGES["zone_w_range"],
        zone_h_range: tuple[float, float] = ZONE_RANGES["zone_h_range"],
        max_episode_steps: int = MAX_EPISODE_STEPS,
        gravity: float = -10.0,
        enable_wind: bool = False,
        wind_power: float = 15.0,
        turbulence_power: float = 1.5,
    ):
        self._kwargs = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if (
            isinstance(max_episode_steps, bool)
            or not isinstance(max_episode_steps, int | np.integer)
            or max_episode_steps < 1
        ):
            raise ValueError(f"max_episode_steps must be an int >= 1, got {max_episode_steps!r}")
        if not -12.0 < gravity < 0.0:
            raise ValueError(f"gravity must be in (-12, 0), got {gravity!r}")
        ranges = {
            "zone_cx_range": _check_range(zone_cx_range, "zone_cx_range"),
            "zone_cy_range": _check_range(zone_cy_range, "zone_cy_range"),
            "zone_w_range": _check_range(zone_w_range, "zone_w_range", positive=True),
            "zone_h_range": _check_range(zone_h_range, "zone_h_range", positive=True),
        }
        if danger_zone is None:
            _check_zone_placement(*ranges.values(), "zone_cx/cy/w/h_range")
        else:
            try:
                zone = DangerZone(*(float(v) for v in danger_zone))
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"danger_zone must be (cx, cy, w, h) with w, h > 0: {err}"
                ) from None
            one = lambda v: (v, v)
            _check_zone_placement(*map(one, zone.as_tuple()), "danger_zone")
            ranges = dict(zip(ranges, map(one, zone.as_tuple()), strict=True))
        self.fixed_zone = None if danger_zone is None else zone
        self.zone_ranges = ranges
        self.max_episode_steps = int(max_episode_steps)
        self.render_mode = render_mode
        self.gravity = float(gravity)
        self.lander_env = ll.LunarLander(
            render_mode=render_mode,
            continuous=True,
            gravity=gravity,
            enable_wind=enable_wind,
            wind_power=wind_power,
            turbulence_power=turbulence_power,
        )
        base = self.lander_env.observation_space
        lo, hi = zip(*ranges.values(), strict=True)
        self.observation_space = spaces.Box(
            np.concatenate([base.low, lo]).astype(np.float32),
            np.concatenate([base.high, hi]).astype(np.float32),
            dtype=np.float32,
        )
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.zone = self.fixed_zone or DangerZone(*(np.mean(r) for r in ranges.values()))
        self.elapsed_steps = 0
        #: the planner state of the world as `reset` or `step` left it (body_state, then the
        #: zone: `LunarLanderModel.planner_state`), kept from the body state they read anyway
        self.planner_x: np.ndarray | None = None
        self._zone_obs = np.array(self.zone.as_tuple(), np.float32)  #: as reset draws it

    def planner_model(self) -> LunarLanderModel:
        return LunarLanderModel(self.gravity)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options:
            raise ValueError(f"reset takes no options, got {sorted(options)}")
        self.lander_env.np_random = self.np_random  # one RNG stream: terrain, push, zone
        obs8, _ = self.lander_env.reset()
        if self.fixed_zone is None:
            self.zone = DangerZone(
                *(float(self.np_random.uniform(*r)) for r in self.zone_ranges.values())
            )
        self.elapsed_steps = 0
        self._zone_obs = np.array(self.zone.as_tuple(), np.float32)
        self.planner_x = state = body_state(self.lander_env, self.zone.as_tuple())
        return self._obs(obs8), self._info(state, bool(self.zone.contains(*state[:2])), False)

    def step(self, action):
        if self.lander_env.lander is None:
            raise ResetNeeded("call env.reset() before env.step()")
        u = check_action(action, (2,), self.action_space.low, self.action_space.high)
        obs8, reward, terminated, _, _ = self.lander_env.step(u)
        self.elapsed_steps += 1
        self.planner_x = state = body_state(self.lander_env, self.zone.as_tuple())
        danger = bool(self.zone.contains(state[0], state[1]))
        reward = float(reward) - ZONE_PENALTY * danger
        truncated = not terminated and self.elapsed_steps >= self.max_episode_steps
        info = self._info(state, danger, terminated)
        return self._obs(obs8), reward, bool(terminated), truncated, info

    def _obs(self, obs8: np.ndarray) -> np.ndarray:
        return np.concatenate((obs8, self._zone_obs))  # float32, both

    def _info(self, state: np.ndarray, danger: bool, terminated: bool) -> dict:
        lander = self.lander_env
        success = bool(
            terminated
            and not lander.game_over
            and not lander.lander.awake
            and abs(state[0]) <= PAD_HALF_WIDTH
        )
        return {
            "success": success,
            "is_success": success,
            "distance_to_pad": float(math.hypot(state[0], state[1])),
            "in_danger": danger,
        }

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; build the env with 'rgb_array'")
            return None
        if self.lander_env.lander is None:
            return None
        frame = self.lander_env.render()
        z = self.zone
        corners = self.pixels(np.array([[z.cx - z.w / 2, z.cy + z.h / 2],
                                        [z.cx + z.w / 2, z.cy - z.h / 2]]))  # fmt: skip
        (c0, r0), (c1, r1) = corners.round().astype(int)
        (c0, c1), (r0, r1) = (
            np.clip([c0, c1], 0, frame.shape[1]),
            np.clip([r0, r1], 0, frame.shape[0]),
        )
        frame = frame.copy()
        patch = frame[r0:r1, c0:c1].astype(np.float32)
        frame[r0:r1, c0:c1] = (0.4 * patch + 0.6 * np.array([230, 40, 40])).astype(np.uint8)
        return frame

    def pixels(self, p: np.ndarray) -> np.ndarray:
        """``(column, row)`` ``[..., 2]`` of the points ``p [..., 2]`` of the observation frame
        (the module docstring's) in `render`'s frame (`envs.base.Pixels`)."""
        p = np.asarray(p, dtype=np.float64)
        pad_y = self.lander_env.helipad_y + LEG_DOWN
        return np.stack([(p[..., 0] + 1) * HALF_W * ll.SCALE,
                         ll.VIEWPORT_H - (p[..., 1] * HALF_H + pad_y) * ll.SCALE], -1)  # fmt: skip

    def close(self):
        self.lander_env.close()

    def get_state(self) -> None:
        """None: Box2D's world cannot be captured as plain data (`envs.base.EnvState`); a
        restored Lunar Lander restarts its episode."""
        return None

    def __getstate__(self) -> dict:
        rng = None if self._np_random is None else self._np_random.bit_generator.state
        return {"kwargs": self._kwargs, "rng": rng}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state["kwargs"])
        if state["rng"] is not None:
            bit_generator = getattr(np.random, state["rng"]["bit_generator"])()
            bit_generator.state = state["rng"]
            self._np_random = np.random.Generator(bit_generator)


def _check_range(value: Any, name: str, positive: bool = False) -> tuple[float, float]:
    """A ``(low, high)`` pair of finite floats with ``low <= high`` (and ``low > 0``)."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair of numbers, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi) or (positive and lo <= 0):
        bound = "0 < low <= high" if positive else "low <= high"
        raise ValueError(f"{name} must be finite with {bound}, got {value!r}")
    return lo, hi


def _check_zone_placement(cx: tuple, cy: tuple, w: tuple, h: tuple, name: str) -> None:
    """Every zone the ranges allow stays inside the view, off the pad and off the start."""
    nearest_cx = 0.0 if cx[0] <= 0.0 <= cx[1] else min(abs(cx[0]), abs(cx[1]))
    nearest_start = (
        0.0 if cy[0] <= START_Y <= cy[1] else min(abs(cy[0] - START_Y), abs(cy[1] - START_Y))
    )
    reaches_pad_column = nearest_cx - w[1] / 2 <= PAD_HALF_WIDTH
    problems = []
    if max(abs(cx[0]), abs(cx[1])) > 1.0 or w[1] > MAX_ZONE_WIDTH:
        problems.append(f"|cx| <= 1 and w <= {MAX_ZONE_WIDTH} (a way around it)")
    if reaches_pad_column and cy[0] - h[1] / 2 <= PAD_CLEARANCE:
        problems.append(
            f"no overlap with the pad box |x| <= {PAD_HALF_WIDTH}, y <= {PAD_CLEARANCE}"
        )
    if nearest_cx <= w[1] / 2 and nearest_start <= h[1] / 2:
        problems.append(f"the start (0, {START_Y:.2f}) outside the zone")
    if problems:
        raise ValueError(f"{name}: a zone must keep " + "; ".join(problems))
