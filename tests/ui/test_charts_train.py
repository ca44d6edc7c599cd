"""The LR finder plot shows the points fastai's plot_lr_find shows."""
from __future__ import annotations

import math

import pytest

from ui.charts_train import lr_finder_figure, plotted_points


def test_a_full_record_drops_its_last_five_points():
    assert plotted_points([1.0] * 100, num_it=100) == 95


def test_a_record_that_diverged_drops_its_last_five_points():
    assert plotted_points([1.0] * 60 + [9.0], num_it=100) == 56


def test_a_record_that_stopped_at_a_nan_shows_every_finite_point():
    """fastai runs on to num_it with NaNs and drops the last 5: the finite points before the NaN all show."""
    assert plotted_points([1.0] * 40 + [math.nan], num_it=100) == 40
    assert plotted_points([1.0] * 40 + [None], num_it=100) == 40
    assert plotted_points([1.0] * 97 + [math.nan], num_it=100) == 95  # within the last 5 of num_it: fastai drops them


def test_the_figure_plots_those_points():
    lrs = [1e-7 * 10 ** (i / 12) for i in range(41)]
    fig = lr_finder_figure(lrs, [1.0] * 40 + [math.nan], {}, num_it=100)
    assert len(fig.data[0].x) == 40
    live = lr_finder_figure(lrs[:10], [1.0] * 10, {})  # while it runs: every point so far
    assert len(live.data[0].x) == 10


def test_the_minimum_is_marked_where_the_loss_is_lowest_and_its_label_says_so():
    from engine.train.lr_suggest import suggest_all

    lrs = [1e-6 * 10 ** (i / 10) for i in range(60)]
    losses = [2.0 - i / 40 if i <= 40 else 1.0 + (i - 40) / 5 for i in range(60)]  # lowest at lrs[40] = 1e-2
    marks = {t.name.split(":")[0]: t for t in lr_finder_figure(lrs, losses, suggest_all(lrs, losses)).data[1:]}
    assert marks["minimum"].x[0] == pytest.approx(lrs[40])  # the diamond sits at the lowest loss
    assert marks["minimum"].name == "minimum: 1.0e-03 (a tenth of the 1.0e-02 marked)"  # and the rate is a tenth of it
