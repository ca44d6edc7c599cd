"""Gradient descent by hand, drawn: an exploding loss keeps a readable axis, and a curve that has left the chart
says where it went."""
from __future__ import annotations

from engine.results.learning import initialise, run_steps, speed_data
from ui.charts_learning import decades_per_tick, loss_history_figure, speed_figure


def test_a_loss_over_many_powers_of_ten_gets_a_label_every_few_powers():
    data = speed_data()
    exploded = run_steps(initialise(), data, lr=1e-3, n=10)  # the chapter's too-large rate: the loss explodes
    span = max(exploded.losses) / min(exploded.losses)
    assert span > 1e20
    step = loss_history_figure(exploded.losses).layout.yaxis.dtick
    assert step > 1 and len(str(int(span))) / step <= 9  # at most about 8 labels, not one per power of ten
    assert decades_per_tick([1.0, 10.0, 1e5]) == 1  # a few powers of ten: each labelled


def test_a_curve_off_the_chart_says_so_and_one_on_it_does_not():
    data = speed_data()
    exploded = run_steps(initialise(), data, lr=1e-3, n=10)
    [note] = speed_figure(data, exploded).layout.annotations
    assert note.text.startswith("The curve is off the chart: its speeds run from")
    calm = run_steps(initialise(), data, lr=1e-5, n=10)
    assert not speed_figure(data, calm).layout.annotations
