"""Tests for engine/train/lr_suggest.py: fastai's LR suggestions on hand-made curves with answers worked out by hand.

Every curve below is written for the *trimmed* record (85 points, t = 0..84) and padded to a full
100-step finder record: trimmed index t is full index t + 10 (fastai drops num_it//10 = 10 at the
start and 5 at the end).
"""
import math

import fastai_reference as fastai
import numpy as np
import pytest
import torch

from engine.errors import UserError
from engine.train.lr_suggest import (EXPLANATIONS, LRFinderError, Suggestion, diverged, minimum, slide, smooth_losses,
                               smooth_step, steep, suggest_all, trim, valley)

NUM_IT = 100
LRS = np.array([1e-7 * (10 / 1e-7) ** (i / NUM_IT) for i in range(NUM_IT)])  # the finder's schedule
T = np.arange(85)  # trimmed indices


def record(curve, head=0.0, tail=0.0):
    """A full finder record: 10 head points, the 85-point curve, 5 tail points."""
    curve = np.asarray(curve, dtype=float)
    assert len(curve) == 85
    return LRS, np.concatenate([np.full(10, head), curve, np.full(5, tail)])


def u_shape():
    """1 + 0.001·(t − 40)²: strictly falls on t = 0..40, minimum 1.0 at t = 40 (full index 50), then rises."""
    return 1 + 0.001 * (T - 40.0) ** 2


# ---------------------------------------------------------------- trim

def test_trim_drops_first_tenth_and_last_five():
    lrs, losses = trim(LRS, np.arange(100.0))
    np.testing.assert_array_equal(lrs, LRS[10:95])
    np.testing.assert_array_equal(losses, np.arange(10.0, 95.0))


def test_trim_uses_the_requested_num_it_not_the_record_length():
    lrs, losses = trim(LRS, np.arange(100.0), num_it=200)  # 200 // 10 = 20 dropped at the start
    np.testing.assert_array_equal(lrs, LRS[20:95])
    np.testing.assert_array_equal(losses, np.arange(20.0, 95.0))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_trim_cuts_at_the_first_nan_or_inf(bad):
    losses = np.arange(100.0)
    losses[50] = bad
    losses[60] = math.nan
    lrs, kept = trim(LRS, losses)
    np.testing.assert_array_equal(lrs, LRS[10:50])  # full indices 10..49
    np.testing.assert_array_equal(kept, np.arange(10.0, 50.0))


def test_trim_ignores_nan_in_the_dropped_head_and_tail():
    losses = np.arange(100.0)
    losses[3] = losses[97] = math.nan  # both sliced off before the NaN search, as in fastai
    lrs, kept = trim(LRS, losses)
    assert len(lrs) == len(kept) == 85


def test_trim_accepts_lists_and_tensors():
    lrs, losses = trim(LRS.tolist(), torch.arange(100, dtype=torch.float64))
    np.testing.assert_array_equal(losses, np.arange(10.0, 95.0))


def test_trim_all_nan_raises_a_user_error():
    with pytest.raises(ValueError, match="usable"):
        trim(LRS, np.full(100, math.nan))
    with pytest.raises(UserError):
        trim(LRS, np.full(100, math.nan))


def test_trim_too_short_raises():
    trim(LRS[:7], np.arange(7.0))  # [0:2] leaves 2 points: enough
    with pytest.raises(LRFinderError, match="1 usable"):
        trim(LRS[:6], np.arange(6.0))  # [0:1] leaves 1
    losses = np.arange(100.0)
    losses[11] = math.nan  # only full index 10 survives
    with pytest.raises(LRFinderError):
        trim(LRS, losses)


def test_a_record_ending_in_nan_is_trimmed_as_fastais_full_record():
    # Loupe's finder stops at the first NaN; fastai's runs on to num_it, recording NaN. Same points kept.
    losses = np.arange(81.0)
    losses[80] = math.nan
    lrs, kept = trim(LRS[:81], losses, num_it=100)
    np.testing.assert_array_equal(lrs, LRS[10:80])
    full = np.concatenate([losses, np.full(19, math.nan)])  # what fastai's record holds
    assert lrs.tolist() == fastai.lr_find_points(LRS.tolist(), full.tolist(), num_it=100)[0]
    # a record stopped for another reason (divergence, the Stop button) loses its last 5 as usual
    lrs, _ = trim(LRS[:81], np.arange(81.0), num_it=100)
    np.testing.assert_array_equal(lrs, LRS[10:76])


def test_trim_mismatched_lengths_raise():
    with pytest.raises(LRFinderError, match="must match"):
        trim(LRS, np.arange(99.0))


# ---------------------------------------------------------------- minimum

def test_minimum_is_the_lr_at_the_lowest_loss_over_ten():
    s = minimum(*record(u_shape()))
    assert s.name == "minimum"
    assert s.lr == LRS[50] / 10  # t = 40 → full index 50
    assert s.loss == 1.0


def test_minimum_ignores_a_lower_loss_in_the_dropped_tail():
    s = minimum(*record(u_shape(), head=0.1, tail=0.1))
    assert s.lr == LRS[50] / 10


# ---------------------------------------------------------------- steep

def test_steep_is_the_left_end_of_the_steepest_segment():
    curve = 3.0 - 0.01 * T
    curve[31:] -= 0.5  # the segment t = 30 → 31 falls by 0.51, every other by 0.01
    s = steep(*record(curve))
    assert s.name == "steep"
    assert s.lr == LRS[40]  # t = 30 → full index 40
    assert s.loss == curve[30]


def test_steep_per_log_lr_with_uneven_steps():
    lrs = np.array([1e-4, 1e-2, 2e-2, 3e-2] + [1.0] * 5)  # the last 5 are dropped by trim
    losses = np.array([2.0, 1.7, 1.5, 1.49] + [9.0] * 5)
    # slopes: -0.3/ln(100) = -0.065, -0.2/ln(2) = -0.289, -0.01/ln(1.5) = -0.025 → segment 1
    s = steep(lrs, losses, num_it=9)
    assert s.lr == 1e-2
    assert s.loss == 1.7


# ---------------------------------------------------------------- valley

def test_valley_on_a_run_after_a_low_plateau():
    curve = np.empty(85)
    curve[:20] = 0.5  # low plateau: lower than the whole run, so never part of it
    curve[20:50] = np.linspace(3.0, 1.0, 30)  # strictly decreasing on t = 20..49: L = 30
    curve[50:] = 1.0 + 0.05 * (T[50:] - 49)  # rises again, never above 3.0
    s = valley(*record(curve))
    # fastai: end = 49, start = end − L = 49 − 30 = 19 (one before the run), idx = 19 + 30//3 + 30//6 = 19 + 10 + 5 = 34
    assert s.name == "valley"
    assert s.lr == LRS[44]  # t = 34 → full index 44
    assert s.loss == curve[34]


def test_valley_on_a_u_shape():
    s = valley(*record(u_shape()))
    # falls on t = 0..40: end = 40, L = 41, start = 40 − 41 = −1, idx = −1 + 41//3 + 41//6 = −1 + 13 + 6 = 18
    assert s.lr == LRS[28]  # t = 18 → full index 28
    assert s.loss == u_shape()[18]


def test_valley_follows_a_decreasing_subsequence_not_a_contiguous_run():
    curve = [5.0, 3.0, 4.0, 2.0, 6.0, 1.0, 7.0, 8.0]
    lrs = LRS[:23]
    losses = np.concatenate([np.zeros(10), curve, np.zeros(5)])
    # longest strictly decreasing subsequence: 5 > 3 > 2 > 1 (or 5 > 4 > 2 > 1), ending at t = 5: L = 4
    # start = 5 − 4 = 1, idx = 1 + 4//3 + 4//6 = 1 + 1 + 0 = 2
    s = valley(lrs, losses, num_it=100)
    assert s.lr == LRS[12]  # t = 2 → full index 12
    assert s.loss == 4.0


def test_valley_on_a_loss_that_never_falls_takes_the_first_point():
    # fastai's bookkeeping never moves max_start, max_end off 0 here: it answers the first point too
    lrs, losses = record(1.0 + 0.01 * T)
    s = valley(lrs, losses)
    assert s.lr == LRS[10] == fastai.valley(*fastai.lr_find_points(lrs.tolist(), losses.tolist()))


def test_valley_where_fastai_has_no_valley():
    # The longest decreasing run is the first two points: fastai's index is 0 − 2 + 0 + 0 = −1, which picks
    # lrs[-1], the largest LR, where the loss is highest. A deliberate difference: Loupe takes the first point.
    curve = 1.0 + 0.01 * T
    curve[0] = 2.0  # falls once, from t = 0 to t = 1, then rises for good
    lrs, losses = record(curve)
    kept_lrs, kept_losses = fastai.lr_find_points(lrs.tolist(), losses.tolist())
    assert fastai.valley(kept_lrs, kept_losses) == LRS[94]  # fastai: the last kept point
    s = valley(lrs, losses)
    assert s.lr == LRS[10] and s.loss == 2.0  # Loupe: the first
    assert "fastai would suggest the largest" in s.explanation


@pytest.mark.parametrize("seed", range(5))
def test_all_four_match_fastai_on_noisy_curves(seed):
    rng = np.random.default_rng(seed)
    curve = 3 - 2 * np.sin(np.linspace(0, 3, 85)) + rng.normal(0, 0.1, 85)
    lrs, losses = record(curve, head=5.0, tail=9.0)
    kept = fastai.lr_find_points(lrs.tolist(), losses.tolist())
    expected = {name: f(*kept) for name, f in fastai.SUGGESTIONS.items()}
    assert {name: s.lr for name, s in suggest_all(lrs, losses).items()} == expected


def reference_valley_index(losses):
    """The valley rule written out with plain loops, for comparison on random curves."""
    n = len(losses)
    best = [1] * n
    for i in range(n):
        for j in range(i):
            if losses[j] > losses[i]:
                best[i] = max(best[i], best[j] + 1)
    end = best.index(max(best))
    length = best[end]
    return max(end - length + int(length / 3) + int(length / 3 / 2), 0)


@pytest.mark.parametrize("seed", range(5))
def test_valley_matches_plain_loops_on_noisy_curves(seed):
    rng = np.random.default_rng(seed)
    curve = 3 - 2 * np.sin(np.linspace(0, 3, 85)) + rng.normal(0, 0.1, 85)
    idx = reference_valley_index(curve.tolist())
    s = valley(*record(curve))
    assert s.lr == LRS[idx + 10]
    assert s.loss == curve[idx]


# ---------------------------------------------------------------- slide

def kinked():
    """Falls by 0.01 a step up to t = 75, then rises by 0.1 a step."""
    curve = 2.0 - 0.01 * T
    curve[76:] = curve[75] + 0.1 * (T[76:] - 75)
    return curve


def test_slide_stops_where_the_slopes_at_both_ends_agree():
    # np.gradient: −0.01 up to t = 74, (0.1 − 0.01)/2 = 0.045 at t = 75, 0.1 from t = 76 on.
    # The window (left, right) starts at (84 − 15, 84) = (69, 84) and slides left while the gradients
    # at its ends differ by more than 0.005: true while right ≥ 75, i.e. down to (60, 75);
    # at (59, 74) both are −0.01, so it stops and answers left = 60.
    s = slide(*record(kinked()))
    assert s.name == "slide"
    assert s.lr == LRS[70]  # t = 60 → full index 70
    assert s.loss == pytest.approx(2.0 - 0.01 * 60, rel=1e-12)


def test_slide_on_a_straight_line_answers_the_first_window():
    s = slide(*record(2.0 - 0.01 * T))
    assert s.lr == LRS[79]  # left = 84 − 15 = 69 → full index 79


def test_slide_that_never_settles_reaches_the_first_point():
    s = slide(*record(0.01 * T ** 2))  # gradients 15 apart always differ by about 0.3
    assert s.lr == LRS[10]  # left = 0 → full index 10


def test_slide_adjust_value_scales_the_lr_and_interpolates_the_loss():
    s = slide(*record(kinked()), adjust_value=0.5)
    assert s.lr == LRS[70] * 0.5
    # LRs are 0.08 apart in log10, so halving moves log10(2)/0.08 points left of t = 60,
    # still on the line 2 − 0.01·t
    assert s.loss == pytest.approx(2.0 - 0.01 * (60 - math.log10(2) / 0.08), rel=1e-9)


def test_slide_needs_more_points_than_its_window():
    lrs, losses = LRS[:30], np.linspace(2, 1, 30)  # [3:25] leaves 22 points
    slide(lrs, losses, lr_diff=21)
    with pytest.raises(LRFinderError, match="more than 22"):
        slide(lrs, losses, lr_diff=22)


# ---------------------------------------------------------------- suggest_all

def test_suggest_all_gives_all_four_with_explanations():
    out = suggest_all(*record(kinked()))
    assert list(out) == ["valley", "minimum", "steep", "slide"]
    for name, s in out.items():
        assert isinstance(s, Suggestion) and s.name == name
        assert s.explanation == EXPLANATIONS[name] and s.explanation.endswith(".")
        assert s.explanation.count(". ") == (1 if name == "valley" else 0)  # valley adds where it differs from fastai
    assert out["slide"] == slide(*record(kinked()))
    assert out["minimum"].lr == LRS[85] / 10  # lowest loss at t = 75 → full index 85


def test_suggest_all_leaves_slide_out_of_a_short_record():
    lrs, losses = LRS[:40], np.linspace(2, 1, 40)  # a run stopped early: [10:35] leaves 25 points
    assert list(suggest_all(lrs, losses, num_it=NUM_IT)) == ["valley", "minimum", "steep", "slide"]
    lrs, losses = LRS[:30], np.linspace(2, 1, 30)  # [10:25] leaves 15 points: too few for slide
    assert list(suggest_all(lrs, losses, num_it=NUM_IT)) == ["valley", "minimum", "steep"]


def test_suggestion_is_frozen():
    s = minimum(*record(u_shape()))
    with pytest.raises(AttributeError):
        s.lr = 1.0


# ---------------------------------------------------------------- smooth_losses and diverged

def test_smooth_losses_of_a_constant_is_the_constant():
    assert smooth_losses([1.0, 1.0, 1.0]).tolist() == pytest.approx([1.0, 1.0, 1.0], rel=1e-12)


def test_smooth_losses_two_values_by_hand():
    # avg1 = 0.02·1 = 0.02 → 0.02 / (1 − 0.98) = 1
    # avg2 = 0.98·0.02 + 0.02·2 = 0.0596 → 0.0596 / (1 − 0.98²) = 0.0596 / 0.0396
    assert smooth_losses([1.0, 2.0]).tolist() == pytest.approx([1.0, 0.0596 / 0.0396], rel=1e-12)


def test_smooth_losses_against_the_closed_form():
    raw = [2.3, 1.7, 4.0, 0.5, 3.1]
    beta = 0.9
    expected = [sum((1 - beta) * beta ** (n - k) * raw[k] for k in range(n + 1)) / (1 - beta ** (n + 1))
                for n in range(len(raw))]
    assert smooth_losses(raw, beta=beta).tolist() == pytest.approx(expected, rel=1e-12)


def test_smooth_step_is_fastais_avg_smooth_loss():
    # fastai/learner.py AvgSmoothLoss: val = lerp(loss, val, 0.98); value = val / (1 − 0.98**count)
    avg, out = 0.0, []
    for count, loss in enumerate([2.0, 1.0, 4.0], start=1):
        avg, smoothed = smooth_step(avg, loss, count)
        out.append(smoothed)
    assert out == pytest.approx([2.0, (0.98 * 0.04 + 0.02) / (1 - 0.98 ** 2),
                                 (0.98 * (0.98 * 0.04 + 0.02) + 0.08) / (1 - 0.98 ** 3)], rel=1e-12)
    assert smooth_losses([2.0, 1.0, 4.0]).tolist() == out  # the same function, run over a list


def test_diverged_is_more_than_four_times_the_best():
    assert not diverged(4.0, 1.0)
    assert diverged(4.000001, 1.0)
    assert not diverged(1e9, math.inf)  # before any best loss
    assert not diverged(math.nan, 1.0)  # as in fastai: NaN never compares greater


# ---------------------------------------------------------------- what each suggestion is said to be

def test_each_suggestion_is_described_by_its_value_not_its_name():
    from engine.train.lr_suggest import compare
    # the real case: steep was the smallest rate found (6.3e-07), below valley and far below the loss's low point
    found = {"valley": Suggestion("valley", 1e-3, 1.0, ""), "minimum": Suggestion("minimum", 1e-2, 0.5, ""),
             "steep": Suggestion("steep", 6.3e-07, 2.0, ""), "slide": Suggestion("slide", 3e-3, 0.9, "")}
    words = compare(found)
    assert words["steep"].startswith("The smallest rate suggested: the most cautious")
    assert "1,587× smaller than valley's rate: safer" in words["steep"] and "bold" not in words["steep"]
    assert words["slide"] == ("About 3× valley's rate: faster learning, less margin before the loss turns up. "
                              "33× below the rate where the loss was lowest (1.0e-01).")
    assert words["valley"] == "100× below the rate where the loss was lowest (1.0e-01)."
    assert words["minimum"].startswith("The largest rate suggested: the boldest. 10× valley's rate")
    # a steep past the lowest point is said to be too high
    late = {**found, "steep": Suggestion("steep", 0.2, 3.0, "")}
    assert "At or past the lowest point of the curve (1.0e-01)" in compare(late)["steep"]
    assert compare(late)["steep"].startswith("The largest rate suggested")
    assert compare({}) == {}


def test_the_meanings_are_fastais():
    assert "longest stretch where the loss keeps falling" in EXPLANATIONS["valley"]
    assert "falls fastest" in EXPLANATIONS["steep"] and "lowest" in EXPLANATIONS["minimum"]
