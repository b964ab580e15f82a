"""Racing with a danger zone (App. B.3): one task over two vehicle simulators.

| module | what |
|---|---|
| `envs.racing.track` | the closed track and the frame along it |
| `envs.racing.task` | the task without a simulator: reset draws, reward, episode end, observation |
| `envs.racing.env` | `VehicleSim` (the simulator interface), `RacingTaskEnv` (the task on one), `RacingDZEnv` |
| `envs.racing.bicycle` | the embedded simulator: a dynamic bicycle with tire forces (`BicycleSim`) |
| `envs.racing.model` | the planner's model: a kinematic bicycle in track coordinates (`RacingModel`) |
| `envs.racing.carla_sim`, `carla_route`, `carla_env` | CARLA: client and vehicles, the route from a map, `CarlaRacingEnv` |
| `envs.racing.draw` | rgb frames of an env's state |

``import envs.racing`` does not import the ``carla`` package (CARLA modules import it when a
server is used).
"""
