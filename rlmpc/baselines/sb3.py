"""The Table 1 baselines PPO and SAC, trained with Stable-Baselines3, evaluated our way.

Two libraries produce Table 1's baseline rows, side by side in the same Tune sweep:

* ``sb3-ppo`` / ``sb3-sac`` (this module): **Stable-Baselines3**, the paper's own library
  (App. C), with Tables 3 (PPO) and 4 (SAC) as its constructor arguments. These are the rows
  to compare with the paper's. SB3's SAC costs ~16 ms per env step here (one torch thread,
  Lunar Lander, `python -m rlmpc.bench sb3`) against RLlib's ~0.2 s, so 1M env steps (the
  paper's budget) take hours, not days.
* ``ppo`` / ``sac`` (`rlmpc.baselines.rllib`): **RLlib**, what the project's cluster users
  deploy, with the same tables mapped onto RLlib's options.

`train_sb3` trains one baseline on the env's low-level actions (no planner; the registered
gymnasium env, danger zones included, exactly as `rlmpc.baselines.rllib` builds it) until
``env_steps`` env steps are taken, checkpointing to ``workdir``, and evaluates the final
mean policy (PPO's Gaussian mean, SAC's squashed mean: SB3's ``predict(deterministic=True)``)
with `rlmpc.baselines.evaluate_policy` from `first_eval_seed` (the episodes PPO-MPPI is
judged on). It returns what `train_rllib` returns: ``{"eval", "curve", "config",
"wall_time_s"}``, curve rows with the same keys.

Hyperparameters (`PPOParams`, `SACParams`) are written out here, not read from SB3's
defaults, for every env (no per-env preset: the RLlib baseline has none either; the
``"ppo"`` presets of `envs.registry` belong to PPO-MPPI). Table 3: ``learning_rate 3e-4,
n_steps 2048, batch_size 64, n_epochs 10, gamma 0.99, gae_lambda 0.95, clip_range 0.2,
ent_coef 0, vf_coef 0.5``; Table 4: ``learning_rate 3e-4, buffer_size 1e6, batch_size 256,
tau 0.005, gamma 0.99, train_freq 1, gradient_steps 1, ent_coef "auto",
target_update_interval 1``. What the tables leave out is SB3 2.x's default, written out
too (``learning_starts 100``, ``max_grad_norm 0.5``, the MlpPolicy networks: PPO separate
64-64 tanh actor and critic with orthogonal init, SAC 256-256 relu, two critics).
``overrides`` (field -> value) change any of them, e.g. smaller budgets in tests.

Departures from the paper: none in the hyperparameters. The paper does not say how its
networks were placed; here always on the CPU (``device="cpu"``: a trial holds one CPU and
no GPU, and SB3's MLPs are faster there). One env, as the tables' ``n_steps 2048`` reads.

Differences from the RLlib rows, known and checked in the installed sources:

* SAC critic loss: RLlib's is a Huber loss (``torch.nn.HuberLoss(delta=1.0)``, "instead of
  the mean squared error as it improves training performance",
  ``ray/rllib/algorithms/sac/torch/sac_torch_learner.py``, ray 2.60); SB3's is
  ``0.5 * sum(F.mse_loss(q, target))`` over the two critics (``stable_baselines3/sac/sac.py``).
* PPO advantages: RLlib standardises them over the whole train batch, SB3 per minibatch.
* Initialisation: SB3's PPO policy uses orthogonal init (gain √2 hidden, 0.01 policy head,
  1 value head) and SAC ``log_std_init = -3``; RLlib uses torch's default init.
* RLlib's defaults that differ from SB3's are set to SB3's in `rlmpc.baselines.rllib`
  (value-loss clip, prioritized replay, actor learning rate, warm-up): see its table.

Checkpoint and continue (a 5-hour SAC cell must survive a kill): every ``checkpoint_steps``
env steps (default `CHECKPOINT_STEPS`) and at the end, ``workdir/checkpoint-<steps>/``
receives ``model.zip`` (SB3's save: the networks, their optimisers, SAC's entropy
coefficient, ``num_timesteps`` and ``_n_updates``), for SAC ``replay_buffer.pkl`` (SB3's
``save_replay_buffer``), and ``state.json``: the curve so far, the window of the last 100
episodes behind it, the seconds spent, the hyperparameters, and the RNG streams (torch,
numpy, which SB3's replay sampling draws from, Python, the action space's). Then
``workdir/checkpoint.json`` is pointed at it (written as a temp file, then ``os.replace``)
and older checkpoints are removed: a kill at any moment leaves the last complete
checkpoint pointed at. A call that finds one loads it, checks that it is the same
algorithm, env, seed and hyperparameters, restores the RNG streams and trains on with
``reset_num_timesteps=False``. What cannot be saved is the env mid-episode: a continued run
starts a fresh episode, reset from a seed drawn from (seed, env steps) so that it does not
replay the first run's initial states. Each start appends a line to
``workdir/attempts.jsonl`` (the env steps, SB3's update count and a digest of the replay
buffer it starts from); ``workdir/curve.jsonl`` is the curve (cut back to the checkpoint's
rows on continue).

By hand::

    python -m rlmpc.baselines.sb3 --algo sac --env lunarlander --env-steps 1000000 --seed 1 \\
        --out runs/sb3-sac-lunarlander-s1

writes ``OUT/eval.json`` (the evaluation, the resolved config, the wall time) beside the
checkpoint; run it again to continue. The command sets ``torch.set_num_threads(1)``, as a
Tune trial does (`rlmpc.reproduce.cells.run_cell`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import envs
from common.checks import ConfigError, check_finite_fields, int_in
from rlmpc.baselines.evaluate import (
    baseline_parser,
    evaluate_policy,
    first_eval_seed,
    parse_baseline_args,
    write_baseline_record,
)

ALGOS = ("ppo", "sac")
#: env steps between checkpoints (and one at the end); SAC's holds its replay buffer
#: (~85 MB on Lunar Lander, ~320 MB on Racing at 1M transitions), a few seconds to write
CHECKPOINT_STEPS = 10_000
#: env steps per SAC curve row (a PPO row is one rollout of ``n_steps``)
SAC_ROW_STEPS = 1_000
#: episodes behind a curve row's return and success (RLlib's metrics window)
WINDOW = 100
POINTER = "checkpoint.json"


@dataclass(frozen=True)
class PPOParams:
    """SB3 ``PPO`` arguments: Table 3 as written, the rest SB3 2.x's defaults written out."""

    learning_rate: float = 3e-4
    """Table 3"""
    n_steps: int = 2048
    """Table 3: env steps per rollout (one env)"""
    batch_size: int = 64
    """Table 3: minibatch size"""
    n_epochs: int = 10
    """Table 3"""
    gamma: float = 0.99
    """Table 3"""
    gae_lambda: float = 0.95
    """Table 3"""
    clip_range: float = 0.2
    """Table 3"""
    ent_coef: float = 0.0
    """Table 3"""
    vf_coef: float = 0.5
    """Table 3"""
    clip_range_vf: float | None = None
    """not in Table 3 (SB3 default): no value clipping"""
    normalize_advantage: bool = True
    """not in Table 3 (SB3 default): per minibatch"""
    max_grad_norm: float = 0.5
    """not in Table 3 (SB3 default)"""
    target_kl: float | None = None
    """not in Table 3 (SB3 default): no early stop"""
    use_sde: bool = False
    """not in Table 3 (SB3 default)"""
    hidden: tuple[int, ...] = (64, 64)
    """not in Table 3 (SB3's MlpPolicy): separate actor and critic MLPs of these widths"""
    activation: str = "tanh"
    """not in Table 3 (SB3's MlpPolicy)"""
    ortho_init: bool = True
    """not in Table 3 (SB3's MlpPolicy)"""
    log_std_init: float = 0.0
    """not in Table 3 (SB3's MlpPolicy): state-independent log std"""

    def __post_init__(self) -> None:
        _check(self, ("n_steps", "batch_size", "n_epochs"), ("gamma", "gae_lambda"))


@dataclass(frozen=True)
class SACParams:
    """SB3 ``SAC`` arguments: Table 4 as written, the rest SB3 2.x's defaults written out."""

    learning_rate: float = 3e-4
    """Table 4: actor, critics and entropy coefficient"""
    buffer_size: int = 1_000_000
    """Table 4: uniform replay"""
    batch_size: int = 256
    """Table 4"""
    tau: float = 0.005
    """Table 4: Polyak coefficient of the target critics"""
    gamma: float = 0.99
    """Table 4"""
    train_freq: int = 1
    """Table 4: env steps between updates"""
    gradient_steps: int = 1
    """Table 4: updates each time"""
    ent_coef: str | float = "auto"
    """Table 4: learnt, from 1.0"""
    target_update_interval: int = 1
    """Table 4: updates between target updates"""
    learning_starts: int = 100
    """not in Table 4 (SB3 default): uniform random actions before the first update"""
    target_entropy: str | float = "auto"
    """not in Table 4 (SB3 default): −dim(action)"""
    n_steps: int = 1
    """not in Table 4 (SB3 default): one-step TD targets"""
    use_sde: bool = False
    """not in Table 4 (SB3 default)"""
    hidden: tuple[int, ...] = (256, 256)
    """not in Table 4 (SB3's MlpPolicy): actor and each critic"""
    activation: str = "relu"
    """not in Table 4 (SB3's MlpPolicy)"""
    n_critics: int = 2
    """not in Table 4 (SB3's MlpPolicy)"""
    log_std_init: float = -3.0
    """not in Table 4 (SB3's MlpPolicy)"""

    def __post_init__(self) -> None:
        _check(self, ("buffer_size", "batch_size", "train_freq", "gradient_steps",
                      "target_update_interval", "n_steps", "n_critics"), ("gamma", "tau"))  # fmt: skip
        if self.learning_starts < 0:
            raise ConfigError("learning_starts", f"learning_starts must be >= 0, got "
                              f"{self.learning_starts}")  # fmt: skip


Params = PPOParams | SACParams
PARAMS: dict[str, type[PPOParams] | type[SACParams]] = {"ppo": PPOParams, "sac": SACParams}
_ACTIVATIONS = ("tanh", "relu")


def _check(p: Params, positive: tuple[str, ...], unit: tuple[str, ...]) -> None:
    """`ConfigError` naming the first field of ``p`` out of its range."""
    check_finite_fields(p)
    for name in positive:
        if getattr(p, name) < 1:
            raise ConfigError(name, f"{name} must be >= 1, got {getattr(p, name)!r}")
    for name in unit:
        if not 0 < getattr(p, name) <= 1:
            raise ConfigError(name, f"{name} must be in (0, 1], got {getattr(p, name)!r}")
    if p.learning_rate <= 0:
        raise ConfigError("learning_rate", f"learning_rate must be > 0, got {p.learning_rate}")
    if not p.hidden or min(p.hidden) < 1:
        raise ConfigError("hidden", f"hidden must be positive widths, got {p.hidden!r}")
    if p.activation not in _ACTIVATIONS:
        raise ConfigError("activation", f"activation must be one of {list(_ACTIVATIONS)}, "
                          f"got {p.activation!r}")  # fmt: skip


def params(algo: str, overrides: dict[str, Any] | None = None) -> Params:
    """Table 3's (``"ppo"``) or Table 4's (``"sac"``) arguments with ``overrides`` applied."""
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {list(ALGOS)}, got {algo!r}")
    cls = PARAMS[algo]
    unknown = set(overrides or {}) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"overrides: unknown {algo} hyperparameters {sorted(unknown)}")
    fields = dict(overrides or {})
    if "hidden" in fields:
        fields["hidden"] = tuple(fields["hidden"])
    return cls(**fields)


def _sb3_kwargs(p: Params) -> dict[str, Any]:
    """``p`` as SB3's constructor arguments (the network fields as ``policy_kwargs``)."""
    from torch import nn

    kw = dataclasses.asdict(p)
    hidden = list(kw.pop("hidden"))
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[kw.pop("activation")]
    log_std_init = kw.pop("log_std_init")
    if isinstance(p, PPOParams):
        policy = {"net_arch": {"pi": hidden, "vf": list(hidden)}, "activation_fn": act,
                  "ortho_init": kw.pop("ortho_init"), "log_std_init": log_std_init}  # fmt: skip
    else:
        policy = {"net_arch": hidden, "activation_fn": act, "n_critics": kw.pop("n_critics"),
                  "log_std_init": log_std_init}  # fmt: skip
    return {**kw, "policy_kwargs": policy}


def _check_env(env: str) -> None:
    if env not in envs.names():
        raise ValueError(f"env must be one of {sorted(envs.names())}, got {env!r}")


def make_env(env: str) -> Any:
    """The registered env (danger zones and all) as SB3 trains on it: one env, `Monitor`ed
    (episode returns), in a ``DummyVecEnv`` (which keeps the ended episode's last info)."""
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    _check_env(env)
    return DummyVecEnv([lambda: Monitor(envs.spec(env).make())])


def build_model(algo: str, env: str, seed: int, overrides: dict[str, Any] | None = None) -> Any:
    """A fresh SB3 ``PPO`` / ``SAC`` on ``env`` with Table 3 / 4 (see `PPOParams`,
    `SACParams`), seeded with ``seed`` (Python, numpy, torch, the action space, the env)."""
    from stable_baselines3 import PPO, SAC

    p = params(algo, overrides)
    cls = PPO if algo == "ppo" else SAC
    return cls("MlpPolicy", make_env(env), seed=seed, device="cpu", verbose=0, **_sb3_kwargs(p))


class EpisodeWindow:
    """The returns and successes of the last `WINDOW` ended episodes (a curve row's figures)."""

    def __init__(self, returns: Iterable[float] = (), successes: Iterable[float] = ()) -> None:
        self.returns: deque[float] = deque(returns, maxlen=WINDOW)
        self.successes: deque[float] = deque(successes, maxlen=WINDOW)

    def add(self, episode_return: float, success: bool) -> None:
        self.returns.append(float(episode_return))
        self.successes.append(float(success))

    def means(self) -> tuple[float | None, float | None]:
        """Mean return and success rate (None before an episode ended)."""
        if not self.returns:
            return None, None
        return float(np.mean(self.returns)), float(np.mean(self.successes))

    def state(self) -> dict[str, list[float]]:
        return {"returns": list(self.returns), "successes": list(self.successes)}


def _episode_callback(task: str, window: EpisodeWindow) -> Any:
    """An SB3 callback adding each ended episode (Monitor's return, the env's success rule
    `envs.registry.EnvSpec.success` on its last info) to ``window``."""
    from stable_baselines3.common.callbacks import BaseCallback

    success = envs.spec(task).success

    class Episodes(BaseCallback):
        def _on_step(self) -> bool:
            for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
                if done:
                    window.add(info["episode"]["r"], success(info))
            return True

    return Episodes()


def _rng_state(model: Any) -> dict[str, Any]:
    """The random streams a continued run must pick up (JSON): torch's (actions, SAC's
    policy samples), numpy's (SB3's replay sampling), Python's, the action space's
    (SAC's warm-up actions)."""
    import torch

    # SB3's replay sampling draws from numpy's legacy global stream
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    version, internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state().tolist(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "python": [version, list(internal), py_gauss],
        "action_space": model.action_space.np_random.bit_generator.state,
    }


def _set_rng_state(model: Any, rng: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))
    kind, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))  # noqa: NPY002
    version, internal, py_gauss = rng["python"]
    random.setstate((version, tuple(internal), py_gauss))
    model.action_space.np_random.bit_generator.state = rng["action_space"]


def replay_digest(buffer: Any) -> dict[str, Any]:
    """The filled part of an SB3 replay buffer: its size, write position, and a SHA-256 over
    its arrays (observations, next observations, actions, rewards, dones, timeouts)."""
    n = buffer.buffer_size if buffer.full else buffer.pos
    h = hashlib.sha256()
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        a = getattr(buffer, name, None)
        if a is not None:
            h.update(np.ascontiguousarray(a[:n]).tobytes())
    return {"size": int(n), "pos": int(buffer.pos), "full": bool(buffer.full),
            "sha256": h.hexdigest()}  # fmt: skip


def checkpoint_dir(workdir: Path) -> Path | None:
    """The checkpoint ``workdir/checkpoint.json`` points at (None before the first)."""
    pointer = Path(workdir) / POINTER
    if not pointer.is_file():
        return None
    return Path(workdir) / json.loads(pointer.read_text())["checkpoint"]


def _save(model: Any, workdir: Path, state: dict[str, Any]) -> None:
    """Write ``checkpoint-<steps>/``, point ``checkpoint.json`` at it (temp file, then
    ``os.replace``), remove the checkpoints before it."""
    name = f"checkpoint-{model.num_timesteps:09d}"
    tmp, final = workdir / f"{name}.tmp", workdir / name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save(tmp / "model.zip")
    if hasattr(model, "replay_buffer"):
        model.save_replay_buffer(tmp / "replay_buffer.pkl")
    (tmp / "state.json").write_text(json.dumps(state))
    shutil.rmtree(final, ignore_errors=True)  # a dead attempt's, never the one pointed at
    tmp.rename(final)
    pointer_tmp = workdir / f"{POINTER}.tmp"
    pointer_tmp.write_text(json.dumps({"checkpoint": name, "env_steps": model.num_timesteps}))
    os.replace(pointer_tmp, workdir / POINTER)
    _remove_others(workdir, keep=name)


def _remove_others(workdir: Path, keep: str | None) -> None:
    """Checkpoints and temp files other than ``keep`` (a dead attempt's, older ones)."""
    for p in workdir.glob("checkpoint-*"):
        if p.name != keep:
            shutil.rmtree(p, ignore_errors=True)


def _restore(algo: str, env: str, seed: int, p: Params, workdir: Path) -> tuple[Any, dict] | None:
    """The model (with its replay buffer) and state of ``workdir``'s checkpoint, its RNG
    streams restored and its env to be reset from a seed of (seed, env steps); None if
    there is none. ValueError if it is another run's."""
    from stable_baselines3 import PPO, SAC

    ckpt = checkpoint_dir(workdir)
    _remove_others(workdir, keep=None if ckpt is None else ckpt.name)
    if ckpt is None:
        return None
    state = json.loads((ckpt / "state.json").read_text())
    want = {"algo": algo, "env": env, "seed": seed, "params": _jsonable(p)}
    had = {k: state[k] for k in want}
    if had != want:
        raise ValueError(f"{workdir} holds a checkpoint of another run: {had}, not {want}; "
                         "give another work directory or remove it")  # fmt: skip
    vec_env = make_env(env)
    model = (PPO if algo == "ppo" else SAC).load(ckpt / "model.zip", env=vec_env, device="cpu")
    if algo == "sac":
        model.load_replay_buffer(ckpt / "replay_buffer.pkl")
    # load() reseeds everything with the run's seed: the continued run takes up the streams
    # where the checkpoint left them instead, and a new episode from a seed of its own
    reset_seed = np.random.SeedSequence([seed, model.num_timesteps]).generate_state(1)[0]
    vec_env.seed(int(reset_seed))
    _set_rng_state(model, state["rng"])
    return model, state


def _jsonable(p: Params) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(p)))


def _write_curve(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def train_sb3(algo: str, env: str, seed: int, env_steps: int, workdir: Path,
              eval_episodes: int = 50, eval_seed: int | None = None,
              overrides: dict[str, Any] | None = None, checkpoint_steps: int = CHECKPOINT_STEPS,
              log: Callable[[dict], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Train SB3's ``algo`` (``"ppo"`` / ``"sac"``) on ``env`` for ``env_steps`` env steps
    (continuing ``workdir``'s checkpoint when there), then evaluate its mean policy on
    ``eval_episodes`` episodes from ``eval_seed`` (default `first_eval_seed` of ``seed``).

    ``log(row)`` is called after each row of the curve (a PPO rollout of ``n_steps``, or
    `SAC_ROW_STEPS` SAC steps; rows are also cut at checkpoints) with ``{"iteration", "env_steps", "episode_return",
    "success_rate", "wall_time_s"}``: the mean return and success of the last 100 ended
    episodes (None before one ended) and the seconds spent over all attempts (a continued
    run adds its own to those of the checkpoint it restored). Returns ``{"eval": summary +
    {"env_steps", "seed", "eval_seed"}, "curve": rows, "config": the library, algorithm,
    env, seed and hyperparameters, "wall_time_s"}``, as `train_rllib` does.
    """
    import stable_baselines3

    p = params(algo, overrides)
    _check_env(env)
    if env_steps < 1:
        raise ValueError(f"env_steps must be >= 1, got {env_steps}")
    if eval_episodes < 1:
        raise ValueError(f"eval_episodes must be >= 1, got {eval_episodes}")
    if checkpoint_steps < 1:
        raise ValueError(f"checkpoint_steps must be >= 1, got {checkpoint_steps}")
    eval_seed = first_eval_seed(seed) if eval_seed is None else eval_seed
    start = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    restored = _restore(algo, env, seed, p, workdir)
    if restored is None:
        model = build_model(algo, env, seed, overrides)
        curve, window, before = [], EpisodeWindow(), 0.0
    else:
        model, state = restored
        curve, before = state["curve"], state["wall_time_s"]
        window = EpisodeWindow(state["window"]["returns"], state["window"]["successes"])
    attempt = {"attempt": sum(1 for _ in _lines(workdir / "attempts.jsonl")) + 1,
               "env_steps": model.num_timesteps, "n_updates": model._n_updates,
               "replay_buffer": replay_digest(model.replay_buffer) if algo == "sac" else None}  # fmt: skip
    with (workdir / "attempts.jsonl").open("a") as f:
        f.write(json.dumps(attempt) + "\n")
    _write_curve(workdir / "curve.jsonl", curve)

    config = {"library": "stable-baselines3", "version": stable_baselines3.__version__,
              "algo": algo, "env": env, "seed": seed, "policy": "MlpPolicy", "device": "cpu",
              "n_envs": 1, **_jsonable(p)}  # fmt: skip
    callback = _episode_callback(env, window)
    row_steps = p.n_steps if isinstance(p, PPOParams) else SAC_ROW_STEPS
    steps = saved = model.num_timesteps

    def state_now() -> dict[str, Any]:
        return {"algo": algo, "env": env, "seed": seed, "params": _jsonable(p),
                "env_steps": model.num_timesteps, "n_updates": model._n_updates,
                "curve": curve, "window": window.state(),
                "wall_time_s": before + time.perf_counter() - start, "rng": _rng_state(model)}  # fmt: skip

    while steps < env_steps:
        # learn() adds its steps to num_timesteps (reset_num_timesteps=False) and goes on
        # with the episode under way: calls in chunks take the same steps and updates as one
        # call (PPO collects whole rollouts; Tables 3-4's rates are constants, so SB3's
        # schedules, which see each call's progress, change nothing)
        chunk = min(row_steps, checkpoint_steps + saved - steps, env_steps - steps)
        model.learn(chunk, callback=callback, reset_num_timesteps=False)
        steps = model.num_timesteps
        ret, success = window.means()
        row = {"iteration": len(curve) + 1, "env_steps": steps, "episode_return": ret,
               "success_rate": success, "wall_time_s": before + time.perf_counter() - start}  # fmt: skip
        curve.append(row)
        with (workdir / "curve.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
        if log is not None:
            log(row)
        if steps - saved >= checkpoint_steps or steps >= env_steps:
            _save(model, workdir, state_now())
            saved = steps

    summary = evaluate_policy(env, lambda obs: model.predict(obs, deterministic=True)[0],
                              eval_episodes, eval_seed)  # fmt: skip
    return {
        "eval": {**summary, "env_steps": int(steps), "seed": seed, "eval_seed": eval_seed},
        "curve": curve,
        "config": config,
        "wall_time_s": before + time.perf_counter() - start,
    }


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


def main(argv: list[str] | None = None) -> None:
    p = baseline_parser("Stable-Baselines3", ALGOS)
    p.add_argument("--checkpoint-steps", type=int_in(1), default=CHECKPOINT_STEPS,
                   help=f"env steps between checkpoints, >= 1 (default {CHECKPOINT_STEPS:,})")  # fmt: skip
    a = parse_baseline_args(p, argv)
    import torch

    torch.set_num_threads(1)  # as a Tune trial: one CPU
    out = train_sb3(a.algo, a.env, a.seed, a.env_steps, a.out, a.eval_episodes, a.eval_seed,
                    checkpoint_steps=a.checkpoint_steps,
                    log=lambda row: print(json.dumps(row), flush=True))  # fmt: skip
    write_baseline_record(a.out, out)


if __name__ == "__main__":
    main()
