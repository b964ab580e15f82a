"""rlmpc: the distributed actor–learner system around `learners`, `planners` and `envs`.

| package | what it does |
|---|---|
| `rlmpc.system` | the system: the plain coordinator, its serial and Ray backends, the thin actor shells, the rollout worker, replay shards, learner wrapper, typed records, checkpoints |
| `rlmpc.run` | running and logging a run: config, command line, training entry, run log, evaluation, watching an agent (`rlmpc.enjoy`) |
| `rlmpc.reproduce` | the paper's experiments as Ray Tune sweeps, result cells, tables and figures, the paper's own figures |
| `rlmpc.baselines` | the paper's baselines: PPO and SAC on RLlib and on Stable-Baselines3, MPPI alone (App. E, `planner_alone`), the evaluation protocol |
| `rlmpc.bench` | benchmarks and measurements (throughput, memory, model error, an SB3 baseline's cost, the run log's TensorBoard cost, GPU check) |
| `rlmpc.ops` | operations: the CARLA servers of a node and the watchdog that restarts them |

From Python (a notebook): ``rlmpc.config``, ``rlmpc.train``, ``rlmpc.evaluate``,
``rlmpc.load_agent`` (`rlmpc.api`, imported on first use).

Commands: ``python launch.py`` (train), ``python -m rlmpc.evaluate`` (evaluate a checkpoint),
``python -m rlmpc.enjoy`` (watch one), ``python -m rlmpc.reproduce`` (the paper's tables),
``python -m rlmpc.bench {planner,system,sb3,tracking}`` (throughput and costs); each module
with a command says so in its docstring.
"""

_API = ("Agent", "config", "evaluate", "load_agent", "train")


def __getattr__(name: str):  # the Python API, imported on first use (Ray workers never need it)
    if name in _API:
        import rlmpc.api

        return getattr(rlmpc.api, name)
    raise AttributeError(f"module 'rlmpc' has no attribute {name!r}")
