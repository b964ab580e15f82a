"""Racing with a danger zone (App. B.3): one task env over any vehicle simulator.

`RacingTaskEnv` is the task (reset distribution, reward, episode end, observation, the
planner model) on a `VehicleSim`, the one interface a simulator implements: place the cars
(`reset`), apply a control and advance one env step (`step`), get a lost server back
(`reconnect`). ``racing`` (``rlmpc/RacingCircuitDZ-v0``, `RacingDZEnv`) is it on the embedded
simulator (`envs.racing.bicycle.BicycleSim`: a **dynamic bicycle with Pacejka lateral tire
forces**) on a circuit; ``racing-stadium`` (``rlmpc/RacingDZ-v0``, `StadiumRacingDZEnv`) is
the task as it was before the circuit, episode for episode (the committed Racing results);
``carla-racing`` (`envs.racing.carla_env.CarlaRacingEnv`) is ``racing``'s task on a CARLA
server's route. The planner's model (`envs.racing.model.RacingModel`) is a **kinematic
bicycle** (Polack et al. 2017), a deliberate mismatch as in the paper. Task logic is
`envs.racing.task`.

``racing``, with every choice the paper leaves open and the measurement that fixed it
(`python -m rlmpc.baselines.planner_alone --env racing --episodes 50`, tuning episodes 20000+ and
30000+; "scripted": `envs.racing.scripted.ScriptedDriver`'s targets; the calibration on
episodes 910000+ and the tuning log: ``results/racing-circuit/README.md``):

| | |
|---|---|
| track | a closed periodic cubic spline through 16 control points (`track.CircuitParams`): a ~250 m start straight into a left-hand complex (R ≈ 32-37 m), a right-left chicane (R ≈ 26 and 28 m), sweepers (R ≈ 41-64 m) and a long left-hand loop back, 919.9 m a lap (292 m of it straight, R > 200 m), **5 m half-width** (the stadium's 6 less 1), the same every episode. It is the first design (569.5 m, a hairpin of R ≈ 12 m) scaled by 1.6 with its fourth point moved 20 m out: on the first design the policy learned to overtake on the straight and then left the track at the hairpin's entry at ~20 m/s in every episode up to 1M env steps (the kinematic model takes any turn at any speed), so nothing finished (`results/racing-circuit/README.md`) |
| car | 1.2 t, lf/lr 1.0/1.5 m, μ = 1, 80 kW; 10 Euler substeps of 10 ms (`CarParams`) |
| ego | starts at the start line, ``ey ~ U(±1 m)``, along the track at ``U(8, 12)`` m/s |
| opponent | top speed ``~ U(7, 11)`` m/s per episode, slower where a corner needs more than 4 m/s² (`task.OpponentSpeed`: 10.2 m/s in the chicane), on a line drawn per episode: offset ``U(±1.5)`` m plus a weave ``U(0, 1)`` m, three periods a lap (`task.sample_opponent`), starting ``U(15, 35)`` m ahead; it does not react to the ego. The speed range: scripted 0.78 of 40 episodes with ``U(8, 12)`` (collisions and time-outs while overtaking), 0.92 with ``U(7, 11)`` |
| time limit | binding (`task.time_limit_steps`): one step before the fastest opponent (11 m/s) from its farthest start (35 m) reaches the goal line, 805 steps (80.5 s); a car that never gets ahead of the opponent cannot finish, so every finish overtakes |
| danger zone | square, side ``U(3, 5)`` m, centre at arc-length ``U(50, 850)`` m, inside the track (the stadium's rule over the longer lap) |
| action | ``[steer, throttle] ∈ [-1, 1]²``: wheel angle ``steer * 0.45`` rad; throttle > 0 drives, < 0 brakes |
| high-level action | App. C's world-frame target velocity ``[ẋ*, ẏ*] = 25 m/s · a``, ``a ∈ [-1, 1]²`` (`model.ModelParams`; the track frame is an option): the box's half-side is above the scripted top speed (22 m/s), so every heading reaches it; the initial policy's mean action (``a ≈ 0``) asks the car to stand still |
| planner model | the kinematic bicycle **without** a lateral-acceleration cap; the opponent **extrapolated at its current world velocity** over the horizon (eq. 44's p_opponent); the ``racing`` preset: eq. (45) with no margin, r̂ **without the terminal reward** (App. B.3) for the virtual data (``virtual_terminal`` 'exclude') and for pure MPPI (``reward_terminal`` False: 0 of 50 finish either way) |
| observation | ``[37]`` float32, see `envs.racing.task.observation` (the opponent's point is where it is, on its line) |
| reward | `envs.racing.task.step_reward`: passing, 10/m progress, -5·|b|, -150 zone, -100 off-track, -1000 collision, +1000 goal |
| terminated | off-track (``|b| > 1``), collision (centres within 2.9 m), goal (one lap) |
| truncated | the time limit, never together with terminated |

Finish rates on the tuning episodes (base 20000): scripted targets 0.88 of 50, the untrained
policy's samples 0.00 of 30. The calibration, run once on episodes 910000+ after this design
was committed (50 each): scripted 0.96, untrained samples 0.00 (0.70 collision or
off-track), untrained mean 0.00 (time-outs), pure MPPI (−r̂) 0.00 (1.00 collision or
off-track); ``results/racing-circuit/README.md``.

``racing-stadium``: the stadium (80 m straights, 30 m turns, 6 m half-width, 348.5 m), the
opponent on the centreline at up to 10 m/s, 600 steps, zones at ``U(50, 300)`` m, track-frame
targets, the 0.5 μ g cap, the opponent advanced along its line (`task.STADIUM_TASK`,
`model.STADIUM_MODEL`, `planners.costs.StadiumRacingPlannerConfig`).

``info`` carries ``is_success`` (goal reached), ``in_danger``, ``off_track``, ``collision``,
``s`` and ``server_lost``. A simulator that raises ``RuntimeError`` from `VehicleSim.step`
has lost its server: the env ends the episode at once as truncated with ``server_lost =
True`` (reward 0, the last observation; the registry's ``episode_lost`` tells the rollout
worker to drop it), and the next `reset` gets the server back (`VehicleSim.reconnect`: it
waits for the server, or finds another) before placing the cars; it raises
`envs.base.SimulatorUnavailable` if none comes back, and tries again on the reset after.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from envs.base import check_action
from envs.danger import DangerZone
from envs.racing import task as rt
from envs.racing.bicycle import BicycleSim, CarParams
from envs.racing.draw import draw_frame, frame_pixels
from envs.racing.model import STADIUM_MODEL, ModelParams, RacingModel
from envs.racing.task import SimStep
from envs.racing.track import CircuitParams, TrackParams

log = logging.getLogger(__name__)

_FLAGS = ("is_success", "in_danger", "off_track", "collision", "server_lost")


class VehicleSim(Protocol):
    """A vehicle simulator on a closed track; ``RuntimeError`` from `reset`/`step` = server lost."""

    track: rt.Track

    def reset(
        self, ego: rt.VehicleState, opp_s: float, opp_v: float, zone: DangerZone,
        line: rt.OpponentLine | None = None,
    ) -> SimStep:  # fmt: skip
        """Place the cars: the ego at ``ego``, the opponent ``opp_s`` along the track with top
        speed ``opp_v`` on ``line`` (None: the centreline)."""
        ...

    def step(self, u: np.ndarray) -> SimStep: ...

    def reconnect(self) -> None: ...

    def close(self) -> None: ...

    def get_state(self) -> dict[str, Any] | None:
        """The cars as plain data (`envs.base.EnvState`); None if they cannot be captured."""
        ...

    def set_state(self, state: dict[str, Any]) -> None: ...


class RacingTaskEnv(gym.Env):
    """The Racing task of App. B.3 on a `VehicleSim` (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        sim: VehicleSim,
        task: rt.TaskParams,
        car: CarParams,
        render_mode: str | None = None,
        model: ModelParams | None = None,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.sim, self.car, self.render_mode = sim, car, render_mode
        self.model_params = model or ModelParams()
        self.track = sim.track
        self.task = task.for_track(self.track)  # validated; max_steps set from the track
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (rt.NOBS,), np.float32)
        self.goal_length = self.task.goal_laps * self.track.length
        self.state: rt.VehicleState | None = None
        self.opp_line: rt.OpponentLine | None = None
        self._lost = False  # the server was lost: step() needs a reset() first
        self._disconnected = False  # ... and reset() gets it back first

    def _reset_sim(self, *args: Any) -> SimStep:
        """``sim.reset(*args)``, after getting a lost server back (`VehicleSim.reconnect`: it
        raises `SimulatorUnavailable` if none comes back); a server lost during the reset is
        got back once more."""
        if self._disconnected:
            self.sim.reconnect()
            self._disconnected = False
        try:
            return self.sim.reset(*args)
        except RuntimeError as err:
            log.warning("simulator lost during reset (%s); reconnecting", err)
            self._disconnected = True
            self.sim.reconnect()
            self._disconnected = False
            return self.sim.reset(*args)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        rng, p, tr = self.np_random, self.task, self.track
        ey0 = float(rng.uniform(-p.start_lateral, p.start_lateral))
        x0, y0 = tr.to_xy(0.0, ey0)
        psi0, v0 = float(tr.heading[0]), float(rng.uniform(*p.start_speed))
        start = rt.VehicleState(float(x0), float(y0), psi0, v0, 0.0, 0.0)
        opp_s = float(rng.uniform(*p.opponent_gap))
        self.zone = rt.sample_zone(rng, tr, p)
        top, self.opp_line = rt.sample_opponent(rng, tr, p)  # after the zone: a task without
        # a varying opponent draws as before
        self._take(self._reset_sim(start, opp_s, top, self.zone, self.opp_line))
        s_mod, ey = tr.project((self.state.x, self.state.y))
        self.s, self.ey = float(rt.wrap_gap(s_mod, tr.length)), float(ey)
        # heading error against the start line's heading (0 for a car set there)
        self.epsi = float(rt.wrap_angle(self.state.psi - psi0))
        self.steps, self._lost = 0, False
        return self._obs(), {**dict.fromkeys(_FLAGS, False), "s": self.s}

    def step(self, action):
        if self.state is None or self._lost:
            raise RuntimeError("call reset() before step()")
        u = check_action(
            action, self.action_space.shape, self.action_space.low, self.action_space.high
        )
        try:
            out = self.sim.step(u)
        except RuntimeError as err:
            return self._server_lost(err)
        self._take(out)
        res = rt.evaluate_step(
            self.track, self.task, self.s, self.state, self.opp_s, self.opp_v, self.zone,
            self.opp[:2],
        )  # fmt: skip
        self.s, self.ey, self.epsi = res.s, res.ey, res.epsi
        self.steps += 1
        terminated, truncated, info = res.episode_flags(self.steps, self.task)
        info["server_lost"] = False
        return self._obs(), res.reward, terminated, truncated, info

    def place(self, ego: rt.VehicleState, s: float, ey: float, epsi: float, opp_s: float,
              opp_v: float, zone: DangerZone | None = None) -> None:  # fmt: skip
        """Put the cars where a scenario wants them, mid-episode (``s`` unwrapped, the ego's
        track coordinates as given); the simulator moves them on from there."""
        self.zone = self.zone if zone is None else zone
        self._take(self._reset_sim(ego, opp_s, opp_v, self.zone, self.opp_line))
        self.s, self.ey, self.epsi = s, ey, epsi

    def _take(self, out: SimStep) -> None:
        """The cars as the simulator reports them (an opponent without a pose: on the
        centreline)."""
        self.state, self.opp_s, self.opp_v = out.ego, out.opp_s, out.opp_v
        opp = out.opp
        self.opp = rt.opponent_pose(self.track, out.opp_s, out.opp_v, None) if opp is None else opp

    def get_state(self) -> dict[str, Any] | None:
        """The episode as plain data (`envs.base.EnvState`): random stream, the simulator's
        cars, the ego's track coordinates, zone, step count; None where the simulator's
        state cannot be captured (a CARLA server)."""
        sim = self.sim.get_state()
        if sim is None:
            return None
        episode = None
        if self.state is not None:
            episode = {
                "state": list(self.state), "s": self.s, "ey": self.ey, "epsi": self.epsi,
                "opp_s": self.opp_s, "opp_v": self.opp_v, "zone": list(self.zone.as_tuple()),
                "steps": self.steps, "opp": list(self.opp),
                "opp_line": None if self.opp_line is None else list(self.opp_line),
            }  # fmt: skip
        return {"rng": self.np_random.bit_generator.state, "sim": sim, "episode": episode,
                "lost": self._lost}  # fmt: skip

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from `get_state` (`envs.base.EnvState`)."""
        self.np_random.bit_generator.state = state["rng"]
        self.sim.set_state(state["sim"])
        self._lost = bool(state["lost"])
        ep = state["episode"]
        if ep is None:
            self.state = None
            return
        self.state = rt.VehicleState(*ep["state"])
        self.s, self.ey, self.epsi = float(ep["s"]), float(ep["ey"]), float(ep["epsi"])
        self.opp_s, self.opp_v = float(ep["opp_s"]), float(ep["opp_v"])
        self.zone, self.steps = DangerZone(*ep["zone"]), int(ep["steps"])
        line = ep.get("opp_line")
        self.opp_line = None if line is None else rt.OpponentLine(*line)
        opp = ep.get("opp")  # a state from before the opponent's pose: on the centreline
        self.opp = (
            rt.VehicleState(*opp) if opp is not None
            else rt.opponent_pose(self.track, self.opp_s, self.opp_v, None)
        )  # fmt: skip

    def _server_lost(self, err: RuntimeError):
        """End the episode (truncated, reward 0); the next `reset` gets the server back."""
        log.warning("simulator lost mid-episode (%s); the next reset reconnects", err)
        self._lost = self._disconnected = True
        info = {**dict.fromkeys(_FLAGS, False), "server_lost": True, "s": self.s}
        return self._obs(), 0.0, False, True, info

    def close(self) -> None:
        self.sim.close()

    def _obs(self) -> np.ndarray:
        ego = (self.state, self.s, self.ey, self.epsi)
        opp = (self.opp_s, self.opp_v, self.zone, self.opp[:2])
        return rt.observation(self.track, self.task, *ego, *opp).astype(np.float32)

    def planner_model(self) -> RacingModel:
        return RacingModel(self.track, self.task, self.car, self.model_params)

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or self.state is None:
            return None
        return draw_frame(self)

    def pixels(self, p: np.ndarray) -> np.ndarray:
        """``(column, row)`` ``[..., 2]`` of the track-plane points ``p [..., 2]`` (m) in
        `render`'s frame (`envs.base.Pixels`)."""
        return frame_pixels(self.track, p)


class RacingDZEnv(RacingTaskEnv):
    """``racing`` (``rlmpc/RacingCircuitDZ-v0``): the task on the embedded bicycle simulator, on the
    circuit by default (module docstring); ``track`` may be a `CircuitParams` or a
    stadium's `TrackParams`."""

    def __init__(
        self,
        render_mode: str | None = None,
        track: TrackParams | CircuitParams | None = None,
        task: rt.TaskParams | None = None,
        car: CarParams | None = None,
        model: ModelParams | None = None,
    ) -> None:
        self.track_params = track or CircuitParams()
        task, car = task or rt.TaskParams(), car or CarParams()
        track = self.track_params.build()
        sim = BicycleSim(track, car, task.dt, rt.OpponentSpeed.of(track, task))
        super().__init__(sim, task, car, render_mode, model)


class StadiumRacingDZEnv(RacingDZEnv):
    """``racing-stadium`` (``rlmpc/RacingDZ-v0``): the Racing task as it was before the
    circuit, episode for episode (`TrackParams`, `rt.STADIUM_TASK`, `STADIUM_MODEL`)."""

    def __init__(
        self,
        render_mode: str | None = None,
        track: TrackParams | None = None,
        task: rt.TaskParams | None = None,
        car: CarParams | None = None,
        model: ModelParams | None = None,
    ) -> None:
        super().__init__(render_mode, track or TrackParams(), task or rt.STADIUM_TASK, car,
                         model or STADIUM_MODEL)  # fmt: skip
