"""TAID's adaptive t schedule: the exact update of reference B.2, its invariants, and an exact state round trip."""

import math
import random

import pytest

from trlm.distill.schedule import OFFICIAL_ALPHA, OFFICIAL_STEPS, TAIDSchedule, scaled_alpha


def test_update_matches_the_reference_formula_by_hand():
    s = TAIDSchedule(t_start=0.4, t_end=1.0, alpha=0.1, beta=0.9)
    assert s.step(2.0, 1, 10) == 0.4 and s.prev_loss == 2.0 and s.m == 0.0  # first step: no update
    t = s.step(1.5, 2, 10)
    delta = (2.0 - 1.5) / (2.0 + 1e-15)
    m = 0.9 * 0.0 + (1 - 0.9) * delta
    expected = min(1.0, max(0.4 + 0.6 * 2 / 10, 0.4 + 0.1 * (1 / (1 + math.exp(-m))) * 0.6))
    assert t == pytest.approx(expected, abs=0) and s.m == pytest.approx(m, abs=0)
    # a growing loss gives a negative delta, but t never falls below the linear floor
    t2 = s.step(3.0, 3, 10)
    assert t2 >= 0.4 + 0.6 * 3 / 10 and t2 >= t


def test_t_is_monotone_bounded_and_never_below_linear_on_noisy_losses():
    rng = random.Random(0)
    s = TAIDSchedule(alpha=0.05)
    prev = s.t
    for step in range(1, 201):
        t = s.step(rng.uniform(0.5, 5.0), step, 200)
        assert prev <= t <= 1.0
        assert t >= 0.4 + 0.6 * step / 200 - 1e-12 or step == 1
        prev = t
    assert s.t == 1.0


def test_without_the_adaptive_update_t_is_the_linear_floor():
    s = TAIDSchedule(adaptive=False)
    s.step(3.0, 1, 4)
    assert [s.step(x, k, 4) for x, k in ((2.0, 2), (1.0, 3), (0.5, 4))] == pytest.approx([0.7, 0.85, 1.0])


def test_scaled_alpha_is_the_official_value_at_the_official_length():
    assert scaled_alpha(OFFICIAL_STEPS) == OFFICIAL_ALPHA
    assert scaled_alpha(OFFICIAL_STEPS // 100) == pytest.approx(OFFICIAL_ALPHA * 100)
    # at the official alpha a short run never leaves the linear floor; scaled alpha front-loads t as the paper did
    short = [TAIDSchedule(alpha=a) for a in (OFFICIAL_ALPHA, scaled_alpha(100))]
    for sch in short:
        for k in range(1, 26):
            sch.step(3.0 - 0.01 * k, k, 100)
    assert short[0].t == pytest.approx(0.4 + 0.6 * 25 / 100)
    assert short[1].t > short[0].t + 0.1


def test_state_dict_round_trip_continues_bit_identically():
    losses = [4.0 / (1 + 0.1 * k) + 0.01 * math.sin(k) for k in range(1, 41)]
    whole = TAIDSchedule(alpha=0.2)
    ts = [whole.step(x, k, 40) for k, x in enumerate(losses, 1)]
    first = TAIDSchedule(alpha=0.2)
    for k, x in enumerate(losses[:17], 1):
        first.step(x, k, 40)
    second = TAIDSchedule(alpha=0.2)
    second.load_state_dict(first.state_dict())
    rest = [second.step(x, k, 40) for k, x in enumerate(losses[17:], 18)]
    assert rest == ts[17:]  # exact equality, not approx


def test_bad_settings_and_non_finite_losses_are_refused():
    with pytest.raises(ValueError, match="t_start"):
        TAIDSchedule(t_start=0.9, t_end=0.5)
    with pytest.raises(ValueError, match="beta"):
        TAIDSchedule(beta=1.0)
    s = TAIDSchedule()
    with pytest.raises(ValueError, match="lr"):
        s.step(float("nan"), 1, 10)
