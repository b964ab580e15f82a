"""rlmpc: the distributed actor–learner system around `learners`, `planners` and `envs`.

| package | what it does |
|---|---|
| `rlmpc.system` | the system: the plain coordinator, its serial and Ray backends, the thin actor shells, the rollout worker, replay shards, learner wrapper, typed records, checkpoints |
| `rlmpc.run` | running and logging a run: config, command line, training entry, run log, evaluation |
| `rlmpc.tools` | tools: benchmarks, the planner-alone check, results tables, demo, CARLA server control |

Commands: ``python launch.py`` (train), ``python -m rlmpc.evaluate`` (evaluate a checkpoint),
``python -m rlmpc.bench {planner,system}`` (throughput); the tools' own commands are
``python -m rlmpc.tools.<tool>``.
"""
