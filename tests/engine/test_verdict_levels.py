"""Verdicts weigh the levels a run reached, not only how far its training loss fell (scripted curves, exact rules)."""
from __future__ import annotations

import pandas as pd

from engine.verdict import GOOD_ACCURACY, verdict, verdict_of_run


def test_a_short_run_whose_validation_loss_fell_is_not_too_low_though_its_smoothed_loss_trails():
    # a camera run: 3 epochs of one batch; the smoothed loss is the mean of all batches so far (down 14 %)
    smooth, train = [0.70, 0.62, 0.60], [0.70, 0.62, 0.60]
    v = verdict(smooth, train, [0.30, 0.06, 0.055], [0.9, 1.0, 1.0])
    assert v == ("good", "Good: the validation loss came down and has levelled off.")
    assert verdict(smooth, train, [0.30, 0.06, 0.055]).code == "good"  # the validation loss alone says it learned


def test_a_model_already_right_on_every_validation_picture_is_not_too_low():
    # pretrained: the loss was low from the first batch and had little room to fall
    smooth, train, valid = [0.10, 0.09, 0.09], [0.10, 0.09, 0.09], [0.09, 0.085, 0.085]
    v = verdict(smooth, train, valid, [1.0, 1.0, 1.0])
    assert v == ("good", "Good: the model gets 100% of the validation pictures right, and its validation loss has "
                         "levelled off.")
    assert verdict(smooth, train, valid, [0.5, 0.5, 0.5]).code == "too_low"  # the same curves at chance
    assert verdict(smooth, train, valid).code == "too_low"  # no accuracy known: the curves alone


def test_the_accuracy_line_is_exact():
    smooth, train, valid = [2.3] * 10, [2.3], [2.2]
    assert verdict(smooth, train, valid, [GOOD_ACCURACY]).code != "too_low"
    assert verdict(smooth, train, valid, [GOOD_ACCURACY - 0.01]).code == "too_low"


def test_a_validation_loss_a_fifth_below_the_start_is_a_fall_even_when_the_training_loss_did_not_fall():
    smooth = [2.0] * 10  # the start: 2.0
    assert verdict(smooth, [2.0], [1.6]).code != "too_low"  # 1.6 = 0.8 × 2.0
    assert verdict(smooth, [2.0], [1.61]).code == "too_low"


def test_a_verdict_names_epochs_as_the_run_table_numbers_them():
    batches = pd.DataFrame({"smooth_loss": [2.3 - 1.4 * i / 49 for i in range(50)]})
    epochs = pd.DataFrame({"epoch": [0, 1, 2, 3, 4], "train_loss": [2.0, 1.5, 1.2, 1.0, 0.9],
                           "valid_loss": [1.0, 0.5, 0.4, 0.45, 0.5], "accuracy": [0.5, 0.8, 0.85, 0.84, 0.83]})
    v = verdict_of_run(batches, epochs)
    assert v.code == "overfitting" and "since epoch 2 " in v.text  # the table's row 2, the ★ kept epoch
    assert int(epochs.loc[epochs["valid_loss"].idxmin(), "epoch"]) == 2
