"""The LR finder plot shows the points fastai's plot_lr_find shows."""
from __future__ import annotations

import math

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
