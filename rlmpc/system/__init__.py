"""The system: rollout workers, two replay shards, a learner, and the loop that drives them.

| module | what |
|---|---|
| `coordinator` | the training loop as plain code: slots, policy lag, fragment order, restarts and drops, checkpoints and resume, evaluation schedule |
| `backend` | the interface it drives components through (call / wait / get) and `SerialBackend` (one process) |
| `ray_backend` | `RayBackend`: the components as Ray actors (the only place ``ray.remote`` is applied) |
| `shells` | the components' methods around the plain classes, shared by both backends |
| `worker` | `RolloutWorker`: n envs, one planner, a policy copy; acting to train and to evaluate |
| `episodes` | episode figures, and what follows an episode's end when training or evaluating |
| `learner`, `replay` | the learner wrapper around `learners.PPOLearner`; the replay shard |
| `records` | typed records at the boundaries: steps, fragments, episodes, weights, evaluations |
| `checkpoint` | the checkpoint schema (`Checkpoint`) and atomic files |

Shape letters: ``T`` steps of a fragment, ``B`` envs of a worker, ``M`` candidates per step,
``H`` planning horizon, ``N`` virtual samples of a fragment (``T·B·(M-1)``), ``nobs``/``na``/
``nx``/``nu`` the observation, high-level action, planner-state and control sizes.
"""
