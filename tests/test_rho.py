"""ρ schedules: Alg. 2 on a hand-worked sequence, invariants, state, validation."""

from __future__ import annotations

import pytest
import torch

from learners.rho import (
    AdaptiveRho,
    FixedRho,
    InfluenceRatioConfig,
    adaptive_rho_step,
    ensemble_variance,
    make_influence_ratio,
)


def test_adaptive_rho_hand_worked_sequence():
    # ρ0 = 0.4, λ = 0.5, Ω0 = 0.
    # 1) V = [[0, 2], [1, 1]]: μ = [1, 1], σ² = [1, 0], σ̄² = 1/2, ω = 2/3,
    #    Ω1 = 0.5·0 + 0.5·2/3 = 1/3, η = 0.5·1/3 = 1/6, ρ1 = 0.4·5/6 = 1/3
    # 2) V = [[3, 3]]: σ̄² = 0, ω = 1, Ω2 = 0.5·1/3 + 0.5 = 2/3, η = 1/3, ρ2 = 1/3·2/3 = 2/9
    # 3) V = [[0, 4]]: μ = 2, σ² = (4 + 4)/2 = 4, ω = 1/5, Ω3 = 1/3 + 1/10 = 13/30,
    #    η = 13/60, ρ3 = 2/9·47/60 = 47/270
    rho = AdaptiveRho(rho0=0.4, lam=0.5, omega0=0.0)
    steps = [
        ([[0.0, 2.0], [1.0, 1.0]], 1 / 3, 1 / 3),
        ([[3.0, 3.0]], 2 / 3, 2 / 9),
        ([[0.0, 4.0]], 13 / 30, 47 / 270),
    ]
    for values, omega, expected in steps:
        out = rho.update(torch.tensor(values))
        assert out == pytest.approx(expected, rel=1e-12)
        assert rho.rho == out
        assert rho.omega == pytest.approx(omega, rel=1e-12)
    assert rho.num_updates == 3


def test_variance_is_the_population_variance_over_heads():
    # Alg. 2 divides by D: heads [0, 1, 2] -> (1 + 0 + 1)/3 = 2/3 (the unbiased estimate is 1)
    assert ensemble_variance(torch.tensor([[0.0, 1.0, 2.0]])) == pytest.approx(2 / 3)
    assert ensemble_variance(torch.tensor([[0.0, 1.0, 2.0], [5.0, 5.0, 5.0]])) == pytest.approx(
        1 / 3
    )


def test_adaptive_rho_never_grows_nor_goes_negative():
    g = torch.Generator().manual_seed(0)
    rho = AdaptiveRho(rho0=0.8, lam=0.9, omega0=0.3)
    prev = rho.rho
    for _ in range(200):
        scale = float(torch.rand(1, generator=g)) * 10
        out = rho.update(scale * torch.randn(16, 5, generator=g))
        assert 0.0 <= out <= prev
        prev = out


def test_clamp_and_extremes():
    # λ = 0 and a perfectly confident ensemble: Ω = ω = 1, η = 1, ρ -> max(0, 0) = 0
    assert adaptive_rho_step(torch.ones(4, 3), 0.7, 0.0, 0.0) == (0.0, 1.0)
    # ρ0 = 0 stays 0
    r = AdaptiveRho(0.0, 0.99)
    assert r.update(torch.randn(3, 2)) == 0.0


def test_per_minibatch_decay_figure_in_the_docs():
    # rho.py's docstring: with ω ≈ 1 and Ω0 = 0, 320 updates (10 epochs × 32 minibatches) leave
    # ρ/ρ0 ≈ 0.10 for λ = 0.99 and ≈ 0.004 for λ = 0.98; 488 updates at λ = 0.99 ≈ 0.02.
    same = torch.zeros(8, 5)
    for lam, n, expected in ((0.99, 320, 0.10), (0.98, 320, 0.004), (0.99, 488, 0.02)):
        rho = AdaptiveRho(1.0, lam)
        for _ in range(n):
            rho.update(same)
        assert rho.rho == pytest.approx(expected, rel=0.1)


def test_fixed_rho_has_the_same_interface():
    rho = FixedRho(0.3)
    assert rho.update(torch.randn(5, 1)) == 0.3
    assert rho.update(torch.randn(5, 4)) == 0.3
    assert rho.rho == 0.3 and rho.num_updates == 2
    other = FixedRho(0.3)
    other.load_state_dict(rho.state_dict())
    assert other.num_updates == 2


def test_state_dict_round_trip_continues_identically():
    a = AdaptiveRho(0.5, 0.9, 0.1)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(6, 3, generator=g) for _ in range(6)]
    for v in batches[:3]:
        a.update(v)
    b = AdaptiveRho(0.5, 0.9, 0.1)
    b.load_state_dict(a.state_dict())
    for v in batches[3:]:
        assert a.update(v) == b.update(v)
    assert (a.rho, a.omega, a.num_updates) == (b.rho, b.omega, b.num_updates)
    with pytest.raises(ValueError, match="adaptive"):
        FixedRho(0.1).load_state_dict(a.state_dict())


def test_adaptive_rho_refuses_single_head_and_nonfinite_values():
    rho = AdaptiveRho(0.5, 0.9)
    with pytest.raises(ValueError, match="D >= 2"):
        rho.update(torch.randn(4, 1))
    bad = torch.randn(4, 3)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        rho.update(bad)
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        rho.update(torch.randn(4))
    assert (rho.rho, rho.omega, rho.num_updates) == (0.5, 0.0, 0)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"rho0": -0.1}, "rho0"),
        ({"rho0": 1.5}, "rho0"),
        ({"lam": 1.0}, "lam"),
        ({"lam": -0.5}, "lam"),
        ({"omega0": -1.0}, "omega0"),
        ({"omega0": 2.0}, "omega0"),
        ({"mode": "cosine"}, "mode"),
        ({"update_every": "epoch"}, "update_every"),
    ],
)
def test_config_refuses_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"InfluenceRatioConfig.{field}"):
        InfluenceRatioConfig(**kwargs)


def test_constructors_validate_and_factory_builds():
    with pytest.raises(ValueError, match=r"rho must be in \[0, 1\]"):
        FixedRho(1.2)
    with pytest.raises(ValueError, match=r"lam must be in \[0, 1\)"):
        AdaptiveRho(0.3, 1.0)
    assert isinstance(make_influence_ratio(InfluenceRatioConfig()), FixedRho)
    adaptive = make_influence_ratio(InfluenceRatioConfig(mode="adaptive", rho0=0.5, lam=0.98))
    assert isinstance(adaptive, AdaptiveRho) and (adaptive.rho, adaptive.lam) == (0.5, 0.98)
