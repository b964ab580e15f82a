"""The learner wrapper: fragments in, one PPO iteration, metrics and weights out.

`Learner` is the plain class around `learners.PPOLearner` (the math); its shell
(`rlmpc.system.shells.LearnerShell`) fetches the fragments from the replay shards. Fragments
are joined in the order given (the coordinator's fixed actor order), so a run is reproducible.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from learners.batches import RealBatch, VirtualBatch
from learners.policy import NetworkConfig
from learners.pompc import KLPriorConfig
from learners.ppo import PPOLearner
from learners.ppo_loss import PPOConfig
from learners.rho import InfluenceRatioConfig
from rlmpc.system.records import RealArrays, VirtualArrays, Weights
from rlmpc.system.worker import keep_freed_memory


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without one is refused."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but no CUDA device is available")
    return device


class TrainingDiverged(RuntimeError):
    """An iteration left the learner non-finite: ``names`` are its tensors or metrics that
    hold NaN or inf (`Learner.train`); ``checkpoint``, once the run knows it, the newest
    checkpoint, written before that iteration (a diverged iteration is never checkpointed)."""

    def __init__(self, iteration: int, names: list[str], checkpoint: str | None = None) -> None:
        self.iteration, self.names, self.checkpoint = iteration, list(names), checkpoint
        shown = ", ".join(self.names[:6]) + (", ..." if len(self.names) > 6 else "")
        where = (
            f"; the last good checkpoint is {checkpoint} (resume it with a smaller "
            "--learning-rate, or start again)"
            if checkpoint
            else "; no checkpoint was written before it"
            if checkpoint is not None
            else ""
        )
        super().__init__(f"training went non-finite in iteration {iteration} ({shown}){where}")

    def __reduce__(self) -> tuple:
        return type(self), (self.iteration, self.names, self.checkpoint)


#: the metrics that are NaN or inf only when the update itself went non-finite
_FINITE_METRICS = ("ensemble_var", "grad_norm")


class Learner:
    """One `PPOLearner` plus the bookkeeping of a training run."""

    def __init__(
        self,
        nobs: int,
        na: int,
        ppo: PPOConfig,
        networks: NetworkConfig,
        influence_ratio: InfluenceRatioConfig,
        device: str = "cpu",
        seed: int = 0,
        threads: int = 1,
        kl: KLPriorConfig | None = None,
        diagnostics: bool = False,
        horizon: int | None = None,
    ) -> None:
        torch.set_num_threads(threads)
        keep_freed_memory()  # minibatch tensors come and go thousands of times an iteration
        self.ppo = PPOLearner(
            nobs, na, ppo, networks, influence_ratio, device=resolve_device(device), seed=seed,
            kl=kl, diagnostics=diagnostics, horizon=horizon,
        )  # fmt: skip
        self.version = 0

    def train(self, reals: list[RealArrays], virtuals: list[VirtualArrays]) -> dict[str, float]:
        """One learner iteration on these fragments; bumps the policy version.

        `TrainingDiverged` when the iteration left a parameter or statistic non-finite, a
        loss non-finite, or skipped every minibatch step (non-finite losses or gradients):
        the run stops there, its last checkpoint still good.

        At ρ = 0 the virtual fragments (sent by workers still on weights from before ρ
        reached 0) are left out: they would add exactly zero (`learners.ppo`)."""
        real = RealBatch.concat([r.to_batch() for r in reals])
        virtual = None
        if virtuals and self.ppo.rho > 0.0:
            virtual = VirtualBatch.concat([v.to_batch() for v in virtuals])
        metrics = self.ppo.update(real, virtual)
        self.version += 1
        bad = self.ppo.non_finite()
        bad += [k for k, v in metrics.items()
                if (k.startswith("loss/") or k in _FINITE_METRICS) and not math.isfinite(v)]  # fmt: skip
        if metrics.get("skipped_updates", 0.0) > 0 and metrics.get("minibatch_updates") == 0.0:
            bad.append("every minibatch step skipped: its loss or gradient was not finite")
        if bad:
            raise TrainingDiverged(self.version, bad)
        metrics["version"] = float(self.version)
        return metrics

    def get_weights(self) -> Weights:
        weights = self.ppo.get_weights()
        return Weights(weights["policy"], weights["values"], self.ppo.rho)

    def state_dict(self) -> dict[str, Any]:
        return {"ppo": self.ppo.state_dict(), "version": self.version}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ppo.load_state_dict(state["ppo"])
        self.version = state["version"]
