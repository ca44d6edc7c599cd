"""Verdicts from loss curves: each rule on synthetic curves with exact thresholds, then on real short runs."""
from __future__ import annotations

import math
import random

import pandas as pd
import pytest

from engine.data.augment import AugSettings
from engine.data.builtin import DIGIT_WORDS
from engine.data.loaders import PresizeCache
from engine.data.labels import LabelRule
from engine.store.runs import RunStore
from engine.spec import DataSpec, ModelSpec, RunSpec, TrainSpec
from engine.data.split import SplitRule
from engine.train.run import train_run
from engine.train.verdict import CODES, exploded_at, start_loss, verdict, verdict_of_run

NAN = math.nan


def falling(start: float, end: float, n: int) -> list[float]:
    """n smoothed losses falling evenly from start to end."""
    return [start + (end - start) * i / (n - 1) for i in range(n)]


# ---------------------------------------------------------------- diverged

def test_a_nan_loss_diverges_at_its_batch():
    assert exploded_at([2.3, 2.0, NAN, 1.0]) == 2
    assert exploded_at([2.3, 2.0, math.inf]) == 2
    assert verdict([2.3, 2.0, NAN], [NAN], [NAN]) == ("diverged", "Diverged: the loss exploded at batch 2.")


def test_a_loss_above_four_times_its_lowest_for_three_batches_has_exploded_where_that_began():
    # lowest 0.5 → the line is 2.0 (1.5 × the start, 3.45, is higher)
    assert exploded_at([2.3, 1.0, 0.5, 2.1, 2.2, 2.4, 2.5]) == 3


def test_a_loss_above_one_and_a_half_times_its_start_for_three_batches_has_exploded():
    # the start: the mean of the first 5, 2.0; lowest 1.9 → 4 × 1.9 = 7.6; 1.5 × 2.0 = 3.0 is the line
    assert exploded_at([2.0] * 5 + [1.9, 2.5, 3.1, 3.2, 3.3]) == 7
    assert exploded_at([2.0] * 5 + [1.9, 2.5, 3.0, 3.0, 3.0]) is None  # at the line is not above it


def test_the_start_is_the_mean_of_the_first_five_or_of_the_first_half_of_a_short_run():
    assert start_loss([3.0, 2.0, 1.0, 2.0, 2.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]) == 2.0
    assert start_loss([3.0, 2.0, 1.0, 0.5, 0.5, 0.5]) == 2.0  # 6 batches: the first 3
    assert start_loss([4.0]) == 4.0


def test_one_or_two_unlucky_batches_are_not_an_explosion():
    # fine_tune restarts the smoothing when it unfreezes: the first value is a single batch's loss
    assert exploded_at([2.0, 1.0, 0.1, 0.09, 0.5, 0.2, 0.1, 0.09]) is None
    assert exploded_at([2.0, 1.0, 0.1, 0.09, 0.5, 0.5, 0.2, 0.1]) is None
    assert exploded_at([2.0, 1.0, 0.1, 0.09, 0.5, 0.5, 0.5, 0.1]) == 4


def test_a_nan_validation_loss_is_divergence():
    v = verdict(falling(2.3, 0.5, 20), [1.0, 0.5], [0.8, NAN])
    assert v == ("diverged", "Diverged: the validation loss became NaN or infinite at epoch 1.")


def test_a_run_stopped_in_its_first_epoch_is_judged_only_on_divergence():
    assert verdict([2.3, 9.0, 9.5, 9.9], [], []).code == "diverged"
    assert verdict(falling(2.3, 2.2, 5), [], []) == ("too_short", "Too short to judge: no epoch finished.")
    assert verdict([], [], []) == ("too_short", "Too short to judge: no batch was trained.")


# ---------------------------------------------------------------- too low

def test_a_loss_that_fell_less_than_a_fifth_is_too_low():
    v = verdict(falling(2.3, 2.1, 30), [2.1], [2.0])  # the start: 2.286 (the mean of the first 5); down 8.1 %
    assert v.code == "too_low"
    assert v.text == ("Too low: the loss barely moved (down 8% from where it started) — the learning rate is "
                      "probably too small.")
    assert "up 4%" in verdict(falling(2.3, 2.4, 30), [2.4], [2.3]).text


def test_a_loss_that_rose_by_a_fifth_is_not_learning_not_too_low():
    # a camera set of 8 shots, one batch an epoch: the start is the mean of the first half of the run, 0.85
    v = verdict([0.8, 0.9, 1.2, 1.5], [0.9, 1.0, 1.2, 1.5], [0.8, 2.8, 4.6, 5.3], [0.0] * 4)
    assert v.text == ("Not learning: the loss ended above where it started (up 76%). With only 4 batches the curve is "
                      "mostly noise: train more epochs, or add pictures.")
    assert verdict(falling(2.0, 2.6, 30), [2.6], [2.5]).text == (
        "Not learning: the loss ended above where it started (up 27%). A learning rate too high makes it climb: try "
        "the LR finder's.")  # the start: 2.04 (the mean of the first 5)


def test_a_fall_of_exactly_a_fifth_is_no_longer_too_low():
    assert verdict([2.5] * 5 + [2.0] * 25, [2.0], [1.0]).code == "underfitting"


# ---------------------------------------------------------------- overfitting

def test_a_validation_loss_rising_while_the_training_loss_falls_is_overfitting():
    v = verdict(falling(2.3, 0.9, 50), [2.0, 1.5, 1.2, 1.0, 0.9], [1.0, 0.5, 0.4, 0.45, 0.5])
    assert v == ("overfitting", "Overfitting: the validation loss has been rising since epoch 2 while the training "
                                "loss falls.")


def test_overfitting_needs_a_rise_of_a_tenth_and_of_two_hundredths():
    train = [2.0, 1.5, 1.2, 1.0]
    assert verdict(falling(2.3, 1.0, 40), train, [1.0, 0.5, 0.4, 0.43]).code == "good"  # 0.03: under 10 % of 0.4
    assert verdict(falling(2.3, 1.0, 40), train, [1.0, 0.05, 0.01, 0.025]).code == "good"  # 150 %, but 0.015
    assert verdict(falling(2.3, 1.0, 40), train, [1.0, 0.05, 0.01, 0.035]).code == "overfitting"  # 0.025


def test_both_losses_rising_is_unstable_not_overfitting():
    v = verdict(falling(2.3, 1.2, 40), [2.0, 1.0, 1.1, 1.2], [1.0, 0.5, 0.6, 0.7])
    assert v == ("unstable", "Unstable: both losses have been rising since epoch 1 — the learning rate may be too high.")


# ---------------------------------------------------------------- underfitting and good

def test_both_losses_still_falling_in_the_last_epoch_is_underfitting():
    v = verdict(falling(2.3, 1.5, 20), [2.0, 1.5], [1.0, 0.5])
    assert v == ("underfitting", "Underfitting: the training and validation losses are both still falling — "
                                 "train longer.")


def test_after_one_epoch_both_losses_are_compared_with_the_untrained_models():
    assert verdict(falling(2.3, 0.9, 10), [0.9], [0.6]).code == "underfitting"


def test_a_validation_loss_that_levelled_off_is_good():
    v = verdict(falling(2.3, 0.9, 30), [2.0, 1.0, 0.9], [1.0, 0.3, 0.28])  # down 0.02: under 10 %
    assert v == ("good", "Good: the validation loss came down and has levelled off.")
    assert verdict(falling(2.3, 0.9, 30), [2.0, 1.0, 0.9], [1.0, 0.05, 0.041]).code == "good"  # 18 %, but 0.009
    assert verdict(falling(2.3, 0.9, 30), [2.0, 1.0, 0.9], [1.0, 0.05, 0.039]).code == "underfitting"


def test_the_validation_loss_falling_while_the_training_loss_rises_is_not_underfitting():
    assert verdict(falling(2.3, 1.0, 30), [2.0, 1.0, 1.1], [1.0, 0.5, 0.3]).code == "good"


def test_rows_from_the_runs_database_are_read_with_nulls_as_nan():
    batches = pd.DataFrame({"smooth_loss": [2.3, 1.0, None, None]})
    epochs = pd.DataFrame({"train_loss": [None], "valid_loss": [None]})
    assert verdict_of_run(batches, epochs) == ("diverged", "Diverged: the loss exploded at batch 2.")
    batches = pd.DataFrame({"smooth_loss": falling(2.3, 1.5, 20)})
    epochs = pd.DataFrame({"train_loss": [2.0, 1.5], "valid_loss": [1.0, 0.5]})
    assert verdict_of_run(batches, epochs).code == "underfitting"


def test_every_code_is_listed():
    assert set(CODES) == {"diverged", "too_low", "overfitting", "unstable", "underfitting", "good", "too_short"}


# ---------------------------------------------------------------- real short runs

@pytest.fixture(scope="module")
def digits(tmp_path_factory, write_digits, one_thread):
    """240 real digits (192 train in 6 batches of 32, 48 valid), the small model from scratch, one cycle, seed 0."""
    root = write_digits(tmp_path_factory.mktemp("verdict-digits"), count=240)
    store = RunStore(tmp_path_factory.mktemp("verdict-home") / "runs.sqlite")
    spec = RunSpec(data=DataSpec(source=str(root), label=LabelRule(pattern=r"^(.+)_\d+\.png$"), size=28, presize=32,
                                 bs=32), augment=AugSettings(do_flip=False),
                   model=ModelSpec(arch="small", pretrained=False), train=TrainSpec(schedule="one_cycle", seed=0))
    yield spec, store, PresizeCache()
    store.close()


def real_verdict(digits, lr: float, epochs: int) -> str:
    spec, store, cache = digits
    run = train_run(RunSpec(data=spec.data, augment=spec.augment, model=spec.model,
                            train=TrainSpec(schedule="one_cycle", seed=0, lr=lr, epochs=epochs)), cache, store)
    return verdict_of_run(store.batches(run["run_id"]), store.epochs(run["run_id"])).text


@pytest.mark.parametrize("lr, epochs, expected", [
    (10.0, 1, "Diverged: the loss exploded at batch "),
    (1e-7, 1, "Too low: the loss barely moved"),
    (3e-3, 2, "Underfitting:"),
    (1e-2, 12, "Good:"),
])
def test_real_runs_on_the_digits(digits, lr, epochs, expected):
    # the kind of verdict only: the batch or epoch it names moves with the CPU's floating point (AVX2 vs AVX-512)
    assert real_verdict(digits, lr, epochs).startswith(expected)


@pytest.fixture(scope="module")
def memorising(tmp_path_factory, write_digits, one_thread):
    """A run made to overfit on any CPU: 192 training digits, 80 % of them under another digit's name (a fixed
    draw), 48 correctly named validation digits in their own folder, no augmentation. As the model learns the wrong
    names by heart its validation loss climbs well above its lowest (by a quarter or more on every seed tried)."""
    root = tmp_path_factory.mktemp("memorising")
    write_digits(root, count=240)
    rng = random.Random(0)
    for j, path in enumerate(sorted(root.iterdir())):
        word, number = path.stem.rsplit("_", 1)
        if j % 5 == 0:
            split = "valid"
        else:
            split = "train"
            if rng.random() < 0.8:
                word = rng.choice(sorted(set(DIGIT_WORDS) - {word}))
        (root / split).mkdir(exist_ok=True)
        path.rename(root / split / f"{word}_{number}.png")
    store = RunStore(tmp_path_factory.mktemp("memorising-home") / "runs.sqlite")
    spec = RunSpec(data=DataSpec(source=str(root), label=LabelRule(pattern=r"^(.+)_\d+\.png$"), size=28, presize=32,
                                 bs=32, split=SplitRule(kind="folder")), augment=AugSettings.off(),
                   model=ModelSpec(arch="small", pretrained=False),
                   train=TrainSpec(schedule="one_cycle", seed=0, lr=1e-2, epochs=16))
    yield spec, store
    store.close()


def test_a_real_run_that_learns_wrong_labels_by_heart_is_overfitting(memorising):
    spec, store = memorising
    run = train_run(spec, PresizeCache(), store)
    v = verdict_of_run(store.batches(run["run_id"]), store.epochs(run["run_id"]))
    assert v.code == "overfitting", v.text
    assert v.text.startswith("Overfitting: the validation loss has been rising since epoch ")


def test_after_one_epoch_a_verdict_never_claims_the_losses_levelled_off():
    assert verdict(falling(2.3, 0.9, 10), [0.9], [0.6]) == (
        "underfitting", "Underfitting: both losses fell a long way in the one epoch trained, and nothing shows them "
                        "levelling off yet — train longer.")
    camera = verdict([0.70], [0.70], [0.055], [1.0])  # one batch, one epoch, every validation picture right
    assert camera == ("good", "Good: the model gets 100% of the validation pictures right, and its validation loss is "
                              "0.055 after one epoch (train more to see whether it levels off).")
    assert all("levelled off" not in v.text for v in (camera, verdict([0.70], [0.70], [0.055])))
