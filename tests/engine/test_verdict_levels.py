"""Verdicts weigh the levels a run reached, not only how far its training loss fell (scripted curves, exact rules)."""
from __future__ import annotations

import pandas as pd

from engine.train.verdict import GOOD_ACCURACY, LOW_LOSS, verdict, verdict_of_run


def test_a_short_run_that_reached_a_low_validation_loss_is_not_too_low_though_its_smoothed_loss_trails():
    # a camera run: 3 epochs of one batch; the smoothed loss is the mean of all batches so far (down 14 %)
    smooth, train = [0.70, 0.62, 0.60], [0.70, 0.62, 0.60]
    v = verdict(smooth, train, [0.30, 0.06, 0.055], [0.9, 1.0, 1.0])
    assert v == ("good", "Good: the model gets 100% of the validation pictures right, and its validation loss has "
                         "levelled off.")
    assert verdict(smooth, train, [0.30, 0.06, 0.055]) == (  # no accuracy known: the validation loss's level
        "good", "Good: the validation loss is low (0.055) and has levelled off.")


def test_a_model_already_right_on_every_validation_picture_is_not_too_low():
    # pretrained: the loss was low from the first batch and had little room to fall
    smooth, train, valid = [0.30, 0.28, 0.28], [0.30, 0.28, 0.28], [0.26, 0.25, 0.25]
    v = verdict(smooth, train, valid, [1.0, 1.0, 1.0])
    assert v == ("good", "Good: the model gets 100% of the validation pictures right, and its validation loss has "
                         "levelled off.")
    assert verdict(smooth, train, valid, [0.8, 0.8, 0.8]).code == "too_low"  # the same curves, a weaker model
    assert verdict(smooth, train, valid).code == "too_low"  # no accuracy known: the curves alone


def test_the_accuracy_line_is_exact():
    smooth, train, valid = [2.3] * 10, [2.3], [2.2]
    assert verdict(smooth, train, valid, [GOOD_ACCURACY]).code != "too_low"
    assert verdict(smooth, train, valid, [GOOD_ACCURACY - 0.01]).code == "too_low"


def test_the_low_loss_line_is_exact():
    smooth, train = [2.0] * 10, [2.0]
    assert verdict(smooth, train, [LOW_LOSS]).code == "good"
    assert verdict(smooth, train, [LOW_LOSS + 0.001]).code == "too_low"
    assert verdict(smooth, train, [1.5]).code == "too_low"  # a validation loss below the training start is no level


def test_a_verdict_names_epochs_as_the_run_table_numbers_them():
    batches = pd.DataFrame({"smooth_loss": [2.3 - 1.4 * i / 49 for i in range(50)]})
    epochs = pd.DataFrame({"epoch": [0, 1, 2, 3, 4], "train_loss": [2.0, 1.5, 1.2, 1.0, 0.9],
                           "valid_loss": [1.0, 0.5, 0.4, 0.45, 0.5], "accuracy": [0.5, 0.8, 0.85, 0.84, 0.83]})
    v = verdict_of_run(batches, epochs)
    assert v.code == "overfitting" and "since epoch 2 " in v.text  # the table's row 2, the ★ kept epoch
    assert int(epochs.loc[epochs["valid_loss"].idxmin(), "epoch"]) == 2
