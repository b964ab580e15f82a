"""The spectrum of model mismatch the paper relies on (§5): exact → approximate → coarse."""

from __future__ import annotations

import numpy as np
import pytest

from rlmpc.bench.model_error import one_step_errors


@pytest.fixture(scope="module")
def errors():
    # planner-driven states (the ones virtual data starts from); 300 steps keep this quick.
    # The circuit's a = 0 is a world-frame target of standing still: it is driven by the
    # planner tracking its scripted targets instead.
    out = {name: one_step_errors(name, steps=300, seed=1) for name in ("acrobot", "lunarlander")}
    out["racing-stadium"] = one_step_errors("racing-stadium", steps=300, seed=1)
    out["racing"] = one_step_errors("racing", steps=300, seed=1, policy="scripted")
    return out


def test_acrobot_model_is_exact(errors):
    assert errors["acrobot"].relative < 1e-6


def test_mismatch_grows_from_lunar_lander_to_racing(errors):
    lunar, racing = errors["lunarlander"].relative, errors["racing"].relative
    # Lunar Lander's miss is mostly Box2D's random engine dispersion (±50 % main thrust):
    # about half of a step's motion. The kinematic bicycle misses the dynamic car's slip
    # and yaw dynamics by more than a whole step's motion when it is driven.
    assert 0.05 < lunar < 1.0
    assert racing > 2 * lunar and errors["racing-stadium"].relative > 2 * lunar
    # without the stadium model's lateral-acceleration cap the circuit's model misses more
    assert racing > errors["racing-stadium"].relative
    assert np.all(np.isfinite(errors["racing"].mean_abs))


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="policy"):
        one_step_errors("acrobot", steps=1, policy="greedy")
