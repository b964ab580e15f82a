"""The paper's experiments by name: which methods, on which envs, with which options.

A *method* is a way of training (or not) one env: PPO-MPPI with some options of
``launch.py``, a baseline trained with RLlib (`rlmpc.baselines.rllib`) or with
Stable-Baselines3 (`rlmpc.baselines.sb3`, the paper's library), or MPPI alone
(`rlmpc.baselines.mppi`). An *experiment* is a table or figure of the paper: a list of
methods, run on each chosen env and seed. A *cell* is one (experiment, env, method, seed); it
is a Ray Tune trial (`rlmpc.reproduce.sweep`) and ends as
``results/<experiment>/<env>/<method>/seed<k>.json``.

| experiment | paper | methods |
|---|---|---|
| ``table1`` | Table 1 | PPO, SAC (RLlib and SB3), PPO-MPPI ρ = 0 and ρ = 0.3, MPPI alone (App. E) |
| ``table2`` | Table 2 | PPO-MPPI ρ ∈ {0.3, 0.5, 0.8}, adaptive (0.3, λ 0.99 / 0.98 on Racing), adaptive (0.5, λ 0.98 / 0.95 on Racing) |
| ``fig4`` | Fig. 4 | quadratic cost (eq. 40), ρ = 0 vs ρ = 0.3 |
| ``fig5`` | Fig. 5 | value terminal cost (eq. 41, weight 1), ρ = 0 vs ρ = 0.3 |
| ``fig6-8`` | Figs. 6–8, Table 6 | Table 2's settings with ρ on the loss (eq. 10) and on the samples (eq. 8) |
| ``fig9`` | Fig. 9 | horizon and samples ×½ and ×2 around Table 5 (ρ = 0.3) |
| ``rho`` | §4.4, Alg. 2 | Alg. 2 on a relative confidence and its ω ≡ 1 twin, beside fixed ρ = 0.3 (docs/rho.md) |
| ``table7`` | Table 7 | wall time per 1M env steps of PPO (SB3), SAC (SB3, Table 1's cell) and PPO-MPPI, each timed alone |
| ``pompc`` | PO-MPC | KL prior (planner / intermediate) × λ ∈ {0.1, 1, 9} × ρ ∈ {0, 0.3, adaptive} |

Names of PPO-MPPI methods follow the results already recorded (``ppo-mppi-rho0.3``,
``ppo-mppi-adaptive0.3``), so the paper's figures (`rlmpc.reproduce.paper`) sit beside them. The
RLlib baselines are ``ppo`` and ``sac`` (the committed cells), the SB3 ones ``sb3-ppo`` and
``sb3-sac``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from envs import planner_config

Kind = Literal["ppo-mppi", "rllib-ppo", "rllib-sac", "sb3-ppo", "sb3-sac", "mppi"]
KINDS: tuple[str, ...] = ("ppo-mppi", "rllib-ppo", "rllib-sac", "sb3-ppo", "sb3-sac", "mppi")


@dataclass(frozen=True)
class Method:
    """One way of training an env. ``args`` are ``launch.py`` options (PPO-MPPI only);
    ``per_env`` adds options for one env (Racing's λ); ``scaled`` builds options from the
    env's planner preset (Fig. 9's ×½ and ×2)."""

    name: str
    kind: Kind = "ppo-mppi"
    args: tuple[str, ...] = ()
    per_env: dict[str, tuple[str, ...]] = field(default_factory=dict)
    scaled: Callable[[str], tuple[str, ...]] | None = None
    summary: str = ""

    def argv(self, env: str) -> list[str]:
        """The ``launch.py`` options of this method on ``env``."""
        extra = self.scaled(env) if self.scaled is not None else ()
        return [*self.args, *self.per_env.get(env, ()), *extra]


@dataclass(frozen=True)
class Experiment:
    """A table or figure of the paper. ``cells_of`` names another experiment whose cells
    this one reads instead of running its own (Table 7 times Table 1's runs); ``shared``
    does so for single methods."""

    name: str
    paper: str
    methods: tuple[Method, ...]
    envs: tuple[str, ...] = ("acrobot", "lunarlander", "racing")
    cells_of: str | None = None
    reported: tuple[str, ...] = ()
    """envs whose cells the reports show besides ``envs`` (not run by default): the stadium
    Racing task's, which the circuit replaced"""
    shared: dict[str, str] = field(default_factory=dict)
    """method → the experiment whose cell it is (run once, read by both): Table 2's ρ = 0.3 is
    Table 1's"""

    def owner(self, method: str) -> str:
        """The experiment under which ``method``'s cells are stored."""
        return self.cells_of or self.shared.get(method, self.name)

    def method(self, name: str) -> Method:
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(name)


def rho(value: float, mixing: str = "loss") -> Method:
    suffix = "" if mixing == "loss" else "-sample"
    args = ("--influence-ratio-rho0", str(value))
    if mixing != "loss":
        args += ("--mixing", mixing)
    eq = "eq. 10" if mixing == "loss" else "eq. 8"
    return Method(
        f"ppo-mppi{suffix}-rho{value:g}", args=args, summary=f"PPO-MPPI, ρ = {value:g} ({eq})"
    )


def adaptive(rho0: float, lam: float, racing_lam: float, mixing: str = "loss") -> Method:
    suffix = "" if mixing == "loss" else "-sample"
    args = ("--influence-ratio-mode", "adaptive", "--influence-ratio-rho0", str(rho0))
    if mixing != "loss":
        args += ("--mixing", mixing)
    return Method(
        f"ppo-mppi{suffix}-adaptive{rho0:g}", args=args,
        per_env={e: ("--influence-ratio-lam", str(racing_lam if "racing" in e else lam))
                 for e in ("acrobot", "lunarlander", "racing", "carla-racing")},
        summary=f"PPO-MPPI, adaptive ρ (Alg. 2): ρ0 = {rho0:g}, λ = {lam:g} ({racing_lam:g} on Racing)",
    )  # fmt: skip


def annealed(mode: str, rho0: float, lam: float, racing_lam: float) -> Method:
    """Alg. 2 on another confidence (``relative``) or its ω ≡ 1 twin (``decay``): the same
    ρ0 and λ as Table 2's ``adaptive`` of that ρ0 (`learners.rho.AdaptiveRho`)."""
    what = {"relative": "σ̄² relative to its early median", "decay": "ω ≡ 1 (the twin)"}[mode]
    return Method(
        f"ppo-mppi-{mode}{rho0:g}",
        args=("--influence-ratio-mode", mode, "--influence-ratio-rho0", str(rho0)),
        per_env={e: ("--influence-ratio-lam", str(racing_lam if "racing" in e else lam))
                 for e in ("acrobot", "lunarlander", "racing", "carla-racing")},
        summary=f"PPO-MPPI, Alg. 2 with {what}: ρ0 = {rho0:g}, λ = {lam:g} ({racing_lam:g} on Racing)",
    )  # fmt: skip


def _scaled(option: str, attr: str, factor: float) -> Callable[[str], tuple[str, ...]]:
    def args(env: str) -> tuple[str, ...]:
        base = getattr(planner_config(env), attr)
        return (option, str(max(1, round(base * factor))))

    return args


PPO = Method("ppo", "rllib-ppo", summary="PPO (RLlib, Table 3), low-level actions, no planner")
SAC = Method("sac", "rllib-sac", summary="SAC (RLlib, Table 4), low-level actions, no planner")
SB3_PPO = Method(
    "sb3-ppo", "sb3-ppo", summary="PPO (Stable-Baselines3, Table 3), low-level actions, no planner"
)
SB3_SAC = Method(
    "sb3-sac", "sb3-sac", summary="SAC (Stable-Baselines3, Table 4), low-level actions, no planner"
)
MPPI = Method("mppi", "mppi", summary="MPPI alone, cost = −(model reward), no learning (App. E)")


def _table2(mixing: str = "loss") -> tuple[Method, ...]:
    return (rho(0.3, mixing), rho(0.5, mixing), rho(0.8, mixing),
            adaptive(0.3, 0.99, 0.98, mixing), adaptive(0.5, 0.98, 0.95, mixing))  # fmt: skip


def _cost(name: str, args: tuple[str, ...], what: str) -> tuple[Method, ...]:
    return tuple(
        Method(f"ppo-mppi-{name}-rho{r:g}", args=(*args, "--influence-ratio-rho0", str(r)),
               summary=f"PPO-MPPI, {what}, ρ = {r:g}")
        for r in (0.0, 0.3)
    )  # fmt: skip


def _pompc() -> tuple[Method, ...]:
    """PO-MPC's KL prior (`learners.pompc`): λ ∈ {0.1, 1, 9} × prior ∈ {planner,
    intermediate}, without ρ-mixing (ρ = 0) and with it (ρ = 0.3, adaptive ρ0 = 0.3).

    η comes from MPO's E-step bound with ε = 0.1 (``--kl-epsilon 0.1``, MPO's published
    value), not a fixed temperature: at the default η = 1 the candidates' weights were within
    0.02 (Acrobot) and 0.10 (Lunar Lander) of uniform in KL over the first 20k steps, so π_P
    was π_old and the KL term a trust region, not the planner's pull (docs/pompc.md)."""
    mixes = {"rho0": ("--influence-ratio-rho0", "0"), "rho0.3": ("--influence-ratio-rho0", "0.3"),
             "adaptive0.3": adaptive(0.3, 0.99, 0.98).args}  # fmt: skip
    lam = adaptive(0.3, 0.99, 0.98).per_env
    out = []
    for prior in ("planner", "intermediate"):
        for kl in (0.1, 1.0, 9.0):
            for mix, args in mixes.items():
                out.append(Method(
                    f"pompc-{prior}-lam{kl:g}-{mix}",
                    args=("--kl-prior", prior, "--kl-lambda", str(kl), "--kl-epsilon", "0.1", *args),
                    per_env=lam if mix.startswith("adaptive") else {},
                    summary=f"PPO-MPPI + KL({prior} prior), λ = {kl:g}, ε = 0.1, {mix}",
                ))  # fmt: skip
    return (rho(0.0), rho(0.3), adaptive(0.3, 0.99, 0.98), *out)


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment("table1", "Table 1", (PPO, SAC, SB3_PPO, SB3_SAC, rho(0.0), rho(0.3), MPPI),
                   reported=("racing-stadium",)),
        Experiment("table2", "Table 2", _table2(), shared={"ppo-mppi-rho0.3": "table1"},
                   reported=("racing-stadium",)),
        Experiment("fig4", "Fig. 4", _cost("quad", ("--rl-term", "quad"), "quadratic cost (eq. 40)")),
        Experiment("fig5", "Fig. 5", _cost("value", ("--w-value", "1"), "value terminal cost (eq. 41)")),
        Experiment("fig6-8", "Figs. 6–8, Table 6", _table2("loss") + _table2("sample"),
                   shared={"ppo-mppi-rho0.3": "table1"} | {m.name: "table2" for m in _table2()[1:]}),
        Experiment("fig9", "Fig. 9", shared={"ppo-mppi-rho0.3": "table1"}, methods=(
            rho(0.3),
            Method("ppo-mppi-H0.5x", args=("--influence-ratio-rho0", "0.3"),
                   scaled=_scaled("--horizon", "horizon", 0.5), summary="horizon ×½"),
            Method("ppo-mppi-H2x", args=("--influence-ratio-rho0", "0.3"),
                   scaled=_scaled("--horizon", "horizon", 2.0), summary="horizon ×2"),
            Method("ppo-mppi-K0.5x", args=("--influence-ratio-rho0", "0.3"),
                   scaled=_scaled("--num-samples", "num_samples", 0.5), summary="samples ×½"),
            Method("ppo-mppi-K2x", args=("--influence-ratio-rho0", "0.3"),
                   scaled=_scaled("--num-samples", "num_samples", 2.0), summary="samples ×2"),
        )),
        # the paper's Table 7 times SB3's PPO; SB3's SAC beside it (RLlib's takes days). Its
        # own cells, each to be run with nothing else training (`rlmpc.reproduce.load` records
        # what else ran); SAC's 5-hour cells are Table 1's, run the same way
        Experiment("table7", "Table 7", (SB3_PPO, SB3_SAC, rho(0.3)),
                   shared={"sb3-sac": "table1"}),
        # docs/rho.md: an adaptive ρ whose confidence carries information, against fixed
        # ρ = 0.3 (Table 1's cells) and its ω ≡ 1 twin, with the bound's terms on every run
        Experiment("rho", "§4.4, Alg. 2 (docs/rho.md)",
                   (rho(0.3), annealed("relative", 0.3, 0.99, 0.98),
                    annealed("decay", 0.3, 0.99, 0.98)),
                   envs=("lunarlander", "racing"), shared={"ppo-mppi-rho0.3": "table1"}),
        Experiment("pompc", "PO-MPC (arXiv 2510.04280) on this system", _pompc(),
                   shared={"ppo-mppi-rho0": "table1", "ppo-mppi-rho0.3": "table1",
                           "ppo-mppi-adaptive0.3": "table2"}),
    )
}  # fmt: skip


def register_experiment(experiment: Experiment) -> Experiment:
    """Add an experiment of the user's own (a grid file, `rlmpc.reproduce.grid`) to
    `EXPERIMENTS` in this process, beside the paper's: planned, run and tabulated as they are."""
    EXPERIMENTS[experiment.name] = experiment
    return experiment


@dataclass(frozen=True)
class Preset:
    """Budgets of a sweep: env steps per cell (by method kind), evaluation episodes, and the
    options every PPO-MPPI cell gets."""

    name: str
    env_steps: dict[str, int]
    eval_episodes: int
    seeds: tuple[int, ...]
    envs: tuple[str, ...] | None = None
    experiments: tuple[str, ...] = ()
    ppo_mppi_args: tuple[str, ...] = ()
    rllib_overrides: dict[str, dict[str, object]] = field(default_factory=dict)
    """RLlib baseline kind -> config overrides (`rlmpc.baselines.rllib.build_config`)"""
    sb3_overrides: dict[str, dict[str, object]] = field(default_factory=dict)
    """SB3 baseline kind -> hyperparameter overrides (`rlmpc.baselines.sb3.params`)"""
    sb3_checkpoint_steps: int | None = None
    """env steps between an SB3 cell's checkpoints (None: `rlmpc.baselines.sb3.CHECKPOINT_STEPS`)"""
    mppi_options: dict[str, object] = field(default_factory=dict)
    """planner options of the MPPI-alone cells (Table 5's unless given)"""
    serial: bool = False
    """PPO-MPPI cells run their components inside the trial's process (no Ray actors)"""

    def overrides(self, kind: str) -> dict[str, object]:
        """The baseline overrides of method ``kind`` (RLlib's or SB3's; none for the others)."""
        return dict({**self.rllib_overrides, **self.sb3_overrides}.get(kind, {}))


PRESETS: dict[str, Preset] = {
    # the paper's budget: 1M env steps per run, 50 evaluation episodes (Tables 1-2)
    "paper": Preset(
        "paper",
        {
            "ppo-mppi": 1_000_000,
            "rllib-ppo": 1_000_000,
            "rllib-sac": 1_000_000,
            "sb3-ppo": 1_000_000,
            "sb3-sac": 1_000_000,
            "mppi": 0,
        },
        50,
        (1,),
    ),  # fmt: skip
    # the whole pipeline, Tune included, in a few minutes: every method on Acrobot, with
    # budgets (and a planner: K = 16, H = 5) that only show that each part runs
    "smoke": Preset(
        "smoke",
        {
            "ppo-mppi": 1024,
            "rllib-ppo": 1024,
            "rllib-sac": 64,
            "sb3-ppo": 1024,
            "sb3-sac": 256,
            "mppi": 0,
        },
        1,
        (0,),
        envs=("acrobot",),
        experiments=("table1", "table2"),
        ppo_mppi_args=(
            "--n-steps",
            "512",
            "--n-epochs",
            "1",
            "--num-samples",
            "16",
            "--horizon",
            "5",
            "--eval-video-frames",
            "0",
        ),
        rllib_overrides={
            "rllib-ppo": {"training": {"train_batch_size_per_learner": 512, "num_epochs": 1}},
            "rllib-sac": {"training": {"num_steps_sampled_before_learning_starts": 32}},
        },
        sb3_overrides={
            "sb3-ppo": {"n_steps": 512, "n_epochs": 1},
            "sb3-sac": {"learning_starts": 32, "buffer_size": 10_000, "batch_size": 64},
        },
        sb3_checkpoint_steps=64,
        mppi_options={"num_samples": 16, "horizon": 5},
        serial=True,
    ),  # fmt: skip
}
