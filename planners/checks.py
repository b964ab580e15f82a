"""Validation of `planners.mppi.MPPI`'s options and of `MPPI.plan`'s inputs.

Each check raises `ValueError` naming the option or argument and the allowed range.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from planners.mppi import MPPI


def covariance(noise_sigma: float | Sequence[float] | Tensor, nu: int) -> Tensor:
    """Σ ``[nu, nu]`` (float64) from a scalar ``s`` (``s·I``), a diagonal ``[nu]`` or a matrix."""
    sigma = torch.as_tensor(noise_sigma, dtype=torch.float64)
    if sigma.ndim == 0:
        sigma = sigma * torch.eye(nu, dtype=torch.float64)
    elif sigma.ndim == 1:
        sigma = torch.diag(sigma)
    if sigma.shape != (nu, nu):
        raise ValueError(
            f"noise_sigma must be a scalar, [nu] or [nu, nu] with nu={nu}, got {tuple(sigma.shape)}"
        )
    if not torch.isfinite(sigma).all() or not torch.allclose(sigma, sigma.T):
        raise ValueError("noise_sigma must be a finite symmetric covariance")
    if torch.linalg.eigvalsh(sigma).min() <= 0:
        raise ValueError("noise_sigma must be positive definite")
    return sigma


def check_planner_options(num_samples: int, horizon: int, lambda_temp: float, nu: int) -> None:
    """`ValueError` naming the option when K, H, λ or nu is out of range."""
    for name, value in (("num_samples", num_samples), ("horizon", horizon), ("nu", nu)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not lambda_temp > 0 or not torch.isfinite(torch.tensor(float(lambda_temp))):
        raise ValueError(f"lambda_temp must be a finite number > 0, got {lambda_temp!r}")


def check_plan_inputs(
    planner: MPPI, x: Tensor, a: Tensor, warm: Tensor, noise: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Shapes, finiteness and devices of `MPPI.plan`'s arguments; `ValueError` naming the argument."""
    for name, value in (("x", x), ("a", a), ("warm", warm), ("noise", noise)):
        if value is not None and not isinstance(value, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if x.ndim != 2 or x.shape[0] < 1 or not x.is_floating_point():
        raise ValueError(
            f"x must be a floating [B, nx] tensor with B >= 1, got {x.dtype} {tuple(x.shape)}"
        )
    B, H, nu, K = x.shape[0], planner.horizon, planner.nu, planner.num_samples
    if a.ndim != 3 or a.shape[0] != B or a.shape[1] < 1:
        raise ValueError(f"a must be [B={B}, M, na] with M >= 1, got {tuple(a.shape)}")
    if warm.shape != (B, H, nu):
        raise ValueError(f"warm must be [B={B}, H={H}, nu={nu}], got {tuple(warm.shape)}")
    if noise is not None and noise.shape != (B, K, H, nu):
        raise ValueError(f"noise must be [B={B}, K={K}, H={H}, nu={nu}], got {tuple(noise.shape)}")
    out = []
    for name, value in (("x", x), ("a", a), ("warm", warm), ("noise", noise)):
        if value is None:
            out.append(None)
            continue
        if value.device != x.device:
            raise ValueError(
                f"{name} is on {value.device} but x is on {x.device}; put both on one device"
            )
        if not bool(torch.isfinite(value).all()):
            raise ValueError(
                f"{name} must be finite, got non-finite values in rows {_bad_rows(value)}"
            )
        out.append(value.to(x.dtype))
    return out[0], out[1], out[2], out[3]


def _bad_rows(value: Tensor) -> list[int]:
    return (~torch.isfinite(value)).flatten(1).any(1).nonzero().flatten().tolist()


def control_bound(
    value: float | Sequence[float] | Tensor | None, nu: int, default: float, name: str
) -> Tensor:
    """A control bound ``[nu]`` (float64) from None (``default``), a number or ``[nu]`` numbers."""
    if value is None:
        return torch.full((nu,), default, dtype=torch.float64)
    bound = torch.as_tensor(value, dtype=torch.float64).flatten()
    if bound.numel() == 1:
        bound = bound.expand(nu).clone()
    if bound.shape != (nu,) or torch.isnan(bound).any():
        raise ValueError(f"{name} must be a number or [nu={nu}] numbers, got {value!r}")
    return bound
