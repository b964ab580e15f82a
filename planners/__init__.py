"""MPPI planners conditioned on the RL action (paper §3 eqs. 2–3, §4.1, App. C).

Shape letters (as everywhere in the project):

| letter | meaning |
|---|---|
| ``B`` | states planned for at once (one per env) |
| ``M`` | candidate high-level actions per state; each conditions the cost (eq. 38) |
| ``K`` | MPPI noise sequences per state, **shared by its M candidates** (§4.1) |
| ``H`` | planning horizon (steps) |
| ``nx``, ``nu`` | planner-state and control sizes |
| ``na``, ``nt`` | high-level action size and cost-target size (``target(a)``: ``na -> nt``) |

One call, ``planner.plan(x [B, nx], a [B, M, na], warm [B, H, nu])``, returns a `PlanResult`:
``first [B, M, nu]``, ``controls [B, M, H, nu]``, ``paths [B, M, H+1, nx]``, ``costs [B, M]``,
``weights [B, M, K]``. The warm start goes in and out (`shift_warm_start` makes the next
one); the planner holds no state between calls; dtype and device follow ``x``.
``planner.plan_controls(...)`` returns the same plans without rolling them out and scoring
them (`PlannedControls`); ``planner.paths(x, controls)`` rolls out plans later, many at once.

Modules:

* `planners.mppi`: the batched `MPPI` (pytorch-mppi's arithmetic, batched over B × M),
  `make_planner` (``backend="batched" | "pytorch_mppi"``) and the eq. (2)/(3) functions;
* `planners.costs`: the cost terms every env shares, eqs. (38)–(42), `PlannerConfig` (the
  base of each env's Table-5 preset, which lives with its env: ``envs/<task>/planner.py``)
  and `build_planner(model, config)`;
* `planners.checks`: validation of the planner's options and of `plan`'s inputs;
* `planners.pytorch_mppi_backend`: one ``pytorch_mppi.MPPI`` per state and candidate, the
  paper-faithful (slow) backend and the tests' oracle.
"""

from planners.costs import (
    CompositeCost,
    PlannerConfig,
    ValueTerminalCost,
    build_planner,
    running_cost,
)
from planners.mppi import (
    BACKENDS,
    MPPI,
    PlannedControls,
    PlanResult,
    make_planner,
    rollout,
    shift_warm_start,
)

__all__ = [
    "BACKENDS",
    "MPPI",
    "CompositeCost",
    "PlanResult",
    "PlannedControls",
    "PlannerConfig",
    "ValueTerminalCost",
    "build_planner",
    "make_planner",
    "rollout",
    "running_cost",
    "shift_warm_start",
]
