"""Schedules are pure functions: exact numbers at known points."""
import math

import pytest

from engine.train.schedule import (combine_scheds, combined_cos, lr_range, one_cycle_lr, one_cycle_mom, sched_cos,
                             sched_exp, sched_lin)

POS = [0, 0.25, 0.5, 0.75, 1]


def test_sched_cos_from_0_to_2():
    # 1 - cos(pi/4) = 0.2929, the reference's example
    assert [round(sched_cos(0, 2, p), 3) for p in POS] == [0, 0.293, 1, 1.707, 2]


def test_sched_lin_and_exp():
    assert [sched_lin(1, 3, p) for p in POS] == [1, 1.5, 2, 2.5, 3]
    assert [sched_exp(1e-7, 10, p) for p in (0, 0.5, 1)] == pytest.approx([1e-7, math.sqrt(1e-6), 10], rel=1e-12)


def test_combine_scheds_switches_at_the_boundary():
    sched = combine_scheds([0.25, 0.75], [lambda p: sched_lin(0, 1, p), lambda p: sched_lin(1, 0, p)])
    assert [sched(p) for p in (0, 0.125, 0.25, 0.625, 1)] == pytest.approx([0, 0.5, 1, 0.5, 0])
    with pytest.raises(ValueError):
        combine_scheds([0.5, 0.4], [sched_cos, sched_cos])


def test_combined_cos_at_phase_points():
    sched = combined_cos(0.25, 1, 2, 0)
    assert sched(0) == 1 and sched(0.25) == 2 and sched(1) == pytest.approx(0)
    assert sched(0.125) == pytest.approx(1.5)  # halfway through a cosine is the midpoint
    assert sched(0.625) == pytest.approx(1.0)


def test_one_cycle_lr_defaults_match_fastai():
    lr = one_cycle_lr(1e-3)  # div 25, div_final 1e5, pct_start 0.25
    assert lr(0) == pytest.approx(4e-5)
    assert lr(0.25) == pytest.approx(1e-3)
    assert lr(1) == pytest.approx(1e-8)
    assert lr(0.125) == pytest.approx((4e-5 + 1e-3) / 2)
    # strictly rising then strictly falling
    values = [lr(i / 100) for i in range(101)]
    assert all(a < b for a, b in zip(values[:25], values[1:26]))
    assert all(a > b for a, b in zip(values[25:100], values[26:]))


def test_one_cycle_mom_goes_down_then_up():
    mom = one_cycle_mom(pct_start=0.3)
    assert [round(mom(p), 6) for p in (0, 0.15, 0.3, 0.65, 1)] == [0.95, 0.9, 0.85, 0.9, 0.95]


def test_fine_tune_frozen_phase_pct_099():
    lr = one_cycle_lr(2e-3, pct_start=0.99)
    assert lr(0.99) == pytest.approx(2e-3) and lr(1) == pytest.approx(2e-8)


def test_lr_range_like_fastai():
    assert lr_range(1e-3, 3) == [1e-3] * 3
    assert lr_range(slice(1e-3), 3) == pytest.approx([1e-4, 1e-4, 1e-3])
    assert lr_range(slice(1e-5, 1e-3), 3) == pytest.approx([1e-5, 1e-4, 1e-3])  # geometric
    assert lr_range([1, 2, 3], 3) == [1, 2, 3]
    with pytest.raises(ValueError):
        lr_range([1, 2], 3)
