"""The paper-faithful planner: one ``pytorch_mppi.MPPI`` per state and candidate, looped.

The paper ran pytorch-mppi (App. C). This backend runs it as is, B × M controllers per call,
each given the state's shared noise (its ``_sample_noise`` is patched to return it), the warm
start as its nominal ``U``, and ``command(x, shift_nominal_trajectory=False)``. It has the same
constructor and `plan` as the batched `planners.mppi.MPPI`, so it is both a selectable backend
(``backend="pytorch_mppi"``) and the oracle the batched planner is tested against. It is slow:
Python loops over B and M, and pytorch-mppi steps its K samples through H one step at a time.
"""

from __future__ import annotations

import pytorch_mppi
import torch
from torch import Tensor

from planners.mppi import MPPI


class PytorchMPPIPlanner(MPPI):
    """`MPPI`'s interface, computed by pytorch-mppi's own ``MPPI.command`` (B × M controllers).

    Where every sample of some (state, candidate) has a non-finite cost, pytorch-mppi's weights
    are NaN; this backend then raises `ValueError` (the batched one gives zero weight to samples
    whose cost or rollout is non-finite and raises only when all K of a row are).
    """

    def _update(
        self,
        x: Tensor,
        a: Tensor,
        warm: Tensor,
        generator: torch.Generator | None,
        noise: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        B, K, H = x.shape[0], self.num_samples, self.horizon
        target = self.target_fn(a)
        if target.ndim != 3 or target.shape[:2] != a.shape[:2]:
            raise ValueError(f"target_fn(a) must be [B, M, nt], got {tuple(target.shape)}")
        M = target.shape[1]
        if noise is None:
            noise = self.sample_noise(B, x, generator)
        controls = x.new_empty(B, M, H, self.nu)
        weights = x.new_empty(B, M, K)
        for b in range(B):
            for m in range(M):
                ctrl = self.controller(x, target[b, m], warm[b], noise[b])
                ctrl.command(x[b], shift_nominal_trajectory=False)
                controls[b, m] = ctrl.U
                weights[b, m] = ctrl.omega
        bad = ~torch.isfinite(weights).all(-1)
        if bool(bad.any()):
            raise ValueError(
                f"pytorch_mppi returned non-finite weights for (state, candidate) rows "
                f"{bad.nonzero().tolist()}: some sample costs are NaN or all are infinite"
            )
        _, _, u_min, u_max = self.constants(x)
        return target, torch.clamp(controls, u_min, u_max), weights

    def controller(
        self, like: Tensor, target: Tensor, warm: Tensor, noise: Tensor
    ) -> pytorch_mppi.MPPI:
        """A ``pytorch_mppi.MPPI`` for one state and one candidate's ``target [nt]``.

        Its nominal is ``warm [H, nu]`` and its noise sampler returns ``noise [K, H, nu]``.
        """
        _, _, u_min, u_max = self.constants(like)
        running, terminal = self.running_cost, self.terminal_cost
        ctrl = pytorch_mppi.MPPI(
            self.dynamics,
            lambda s, u: running(s, u, target),
            like.shape[-1],
            self.sigma.to(dtype=like.dtype, device=like.device),
            num_samples=self.num_samples,
            horizon=self.horizon,
            device=like.device,
            terminal_state_cost=(
                None if terminal is None else (lambda s, u: terminal(s[..., -1, :], target))
            ),
            lambda_=self.lambda_temp,
            u_min=u_min,
            u_max=u_max,
            U_init=warm.clone(),
        )
        ctrl._sample_noise = lambda shape: noise
        return ctrl
