"""Value targets and advantages: GAE for real data, λ-returns along planned paths for virtual data.

Both are the same linear recurrence run backwards in time, ``y_t = x_t + c_t y_{t+1}``
(``y`` past the end is 0), computed by `reverse_linear_scan` in ⌈log2 T⌉ vectorised steps
(a Hillis–Steele scan) instead of a Python loop over T; the tests check both functions against
plain loops on random inputs. Time is the leading axis: ``[T, B]`` for real fragments,
``[N, H]`` inputs are transposed internally for virtual paths.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_discounts(gamma: float, lam: float) -> None:
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam (the GAE λ) must be in [0, 1], got {lam}")


def reverse_linear_scan(x: Tensor, c: Tensor) -> Tensor:
    """``y_t = x_t + c_t · y_{t+1}`` for t = T-1..0 with ``y_T = 0``; ``x, c, y`` are ``[T, ...]``.

    Hillis–Steele scan: after the step with stride s, ``y_t`` sums the 2s terms
    ``(Π_{i<j} c_{t+i}) x_{t+j}``, j < 2s, and ``c_t`` holds the product over the same window.
    """
    if x.shape != c.shape:
        raise ValueError(f"x and c must have the same shape, got {list(x.shape)}, {list(c.shape)}")
    T = x.shape[0]
    s = 1
    while s < T:
        x = torch.cat((x[:-s] + c[:-s] * x[s:], x[-s:]))
        c = torch.cat((c[:-s] * c[s:], c[-s:]))
        s *= 2
    return x


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation (Schulman et al. 2015, eqs. 11–16) on real data.

    The "GAE value target" of Alg. 1 for the real buffer D_RL. All inputs ``[T, B]``:
    ``values[t] = V(s_t)``, ``next_values[t] = V(s_{t+1})`` of the *true* next observation
    (the final observation where an episode ended), ``terminated``/``truncated`` bool::

        δ_t = r_t + γ (1 - terminated_t) V(s_{t+1}) - V(s_t)
        A_t = δ_t + γ λ (1 - terminated_t)(1 - truncated_t) A_{t+1},   A_T = 0
        R_t = A_t + V(s_t)

    so a truncated episode bootstraps from the value of its last observation, a terminated
    one from 0, neither leaks advantages across the episode boundary, and the last step of
    the fragment bootstraps from ``next_values[T-1]``. Returns ``(advantages, returns)``,
    both ``[T, B]``.
    """
    _check_discounts(gamma, lam)
    shape = rewards.shape
    for name, t in (("values", values), ("next_values", next_values)):
        if t.shape != shape:
            raise ValueError(f"{name} must have shape {list(shape)}, got {list(t.shape)}")
    for name, t in (("terminated", terminated), ("truncated", truncated)):
        if t.shape != shape:
            raise ValueError(f"{name} must have shape {list(shape)}, got {list(t.shape)}")
    live = (~terminated.bool()).to(rewards.dtype)
    cont = (~(terminated.bool() | truncated.bool())).to(rewards.dtype)
    deltas = rewards + gamma * live * next_values - values
    advantages = reverse_linear_scan(deltas, gamma * lam * cont)
    return advantages, advantages + values


def virtual_lambda_return(
    path_rewards: Tensor,
    path_values: Tensor,
    path_terminated: Tensor,
    gamma: float,
    lam: float,
) -> Tensor:
    """The value target of a virtual sample (Alg. 1's "GAE value target" for D_MPPI).

    The λ-return of the candidate's planned path: rewards r̂_k = ``path_rewards[:, k]``
    ``[N, H]``, critic values V_k = V(ψ(x̂_k)) = ``path_values[:, k]`` ``[N, H+1]`` (the
    current critic, ensemble mean), live_k = 1 - ``path_terminated[:, k]`` ``[N, H]``::

        G_H = V_H                                               (truncated at H)
        G_k = r̂_k + γ live_k [(1 - λ) V_{k+1} + λ G_{k+1}],      k = H-1..0

    and the target is G_0 ``[N]``. It equals V_0 + A_0 with A the GAE of the path
    (δ_k = r̂_k + γ live_k V_{k+1} - V_k, A_k = δ_k + γλ live_k A_{k+1}, A_H = 0), so V_0 = V(ψ(x_t))
    cancels and is not used. Special cases: λ = 1 gives the H-step truncated return
    Σ_k γ^k r̂_k + γ^H V_H of eq. (14); λ = 0 the one-step target r̂_t + γ V(ŝ_{t+1}) of the
    eq. (6) tuple. A terminal planned state x̂_{k+1} stops the sum: nothing after it counts.
    """
    _check_discounts(gamma, lam)
    if path_rewards.ndim != 2:
        raise ValueError(f"path_rewards must be [N, H], got {list(path_rewards.shape)}")
    N, H = path_rewards.shape
    if path_values.shape != (N, H + 1):
        raise ValueError(f"path_values must have shape {[N, H + 1]}, got {list(path_values.shape)}")
    if path_terminated.shape != (N, H):
        raise ValueError(
            f"path_terminated must have shape {[N, H]}, got {list(path_terminated.shape)}"
        )
    live = (~path_terminated.bool()).to(path_rewards.dtype)
    v_next = path_values[:, 1:]
    x = path_rewards + gamma * live * (1.0 - lam) * v_next
    c = gamma * lam * live
    # G_H = V_H: fold the last bootstrap into the last step's input
    x = torch.cat((x.T[:-1], (x[:, -1] + c[:, -1] * v_next[:, -1])[None]))
    return reverse_linear_scan(x, c.T.contiguous())[0]
