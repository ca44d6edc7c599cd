"""A run's verdict in plain words, read from its loss curves: a pure function with documented thresholds.

    verdict(smooth_losses, train_losses, valid_losses)  # -> Verdict("underfitting", "Underfitting: …")

The checks run in this order; the first that holds is the verdict.

1. diverged: the smoothed training loss became NaN or infinite, or it *exploded*: for `EXPLODE_RUN` batches in a
   row it stayed above `EXPLODE_VS_BEST` × its lowest value so far (fastai's LR-finder stop rule) or above
   `EXPLODE_VS_START` × its start (worse than the untrained model). A NaN or infinite validation loss is
   divergence too. Needing a few batches in a row keeps one unlucky batch from counting (the smoothing restarts
   when fine_tune unfreezes, and a restarted average is a single batch's loss).
2. too_low: the smoothed training loss ended less than `TOO_LOW_FALL` (20 %) below its start, *and* the levels reached
   say the model did not learn either: the last validation accuracy is under `GOOD_ACCURACY` (95 %) and the last
   validation loss above `LOW_LOSS` (0.1: the right class gets about 90 % on average). In a run of a few batches the
   smoothed loss is the mean of them all and trails the model (a camera run can reach 100 % accuracy while it falls
   by 10 %), and a pretrained model may start low: the levels decide. (The validation loss is not compared with the
   training loss's start: one is measured in eval mode, the other in train mode with augmentation, and they differ
   by more than 20 % on an untrained model.) A loss that *rose* by 20 % or more is "not learning" instead of "too low":
   a learning rate too high, or, in a run of fewer than 2 × `START_BATCHES` batches, noise.
3. overfitting: the last validation loss is above the lowest one, of an earlier epoch N, by at least
   `OVERFIT_RISE` (10 %) of it and at least `OVERFIT_ABS` (0.02: tiny losses wobble by more than 10 %), while the
   training loss fell since epoch N. If the training loss did not fall either, the run is *unstable* instead.
4. underfitting: in the last epoch the validation loss fell by at least `UNDERFIT_FALL` (10 %) and `UNDERFIT_ABS`
   (0.01), and the training loss fell too (after a single epoch, both are compared with the start: the untrained
   model's loss).
5. good: none of the above: the validation loss came down and has levelled off (or, when it had little room to
   come down, the levels above say it is already good).

A run with no epoch finished can only be judged diverged; otherwise it is "too_short".

The *start* is the mean of the first `START_BATCHES` (5) smoothed losses, or of the first half of a run shorter than
10 batches: the first smoothed loss is a single batch's, and with a learning rate that changes nothing it still
wobbles by ±20 % (±60 % with batches of 8) against the end of the run; the mean of five, by about ±10 % (±20 %).

Epochs are named by their number in the run's epoch table (counted from 0, as fastai's table counts them) when the
caller gives those numbers, else by their position from 0.

The per-epoch training loss is the smoothed loss at the end of the epoch (as fastai's table shows it), so in short
runs it trails the model by a couple of epochs; the checks that judge the trend lean on the validation loss.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

EXPLODE_VS_BEST = 4.0  # fastai's lr_find stop_div: 4 × the lowest smoothed loss so far
EXPLODE_VS_START = 1.5  # 1.5 × the start (the untrained model's loss)
EXPLODE_RUN = 3  # batches in a row above either line
TOO_LOW_FALL = 0.20  # the loss must fall by at least 20 % of its start
GOOD_ACCURACY = 0.95  # a model this accurate on the validation set has learned, whatever its training curve did
LOW_LOSS = 0.1  # likewise a validation loss this low (cross-entropy: about 0.9 on the right class)
START_BATCHES = 5  # the start: the mean of this many first smoothed losses
OVERFIT_RISE, OVERFIT_ABS = 0.10, 0.02  # validation loss above its lowest by 10 % and by 0.02
UNDERFIT_FALL, UNDERFIT_ABS = 0.10, 0.01  # validation loss down by 10 % and by 0.01 in the last epoch

CODES = ("diverged", "too_low", "overfitting", "unstable", "underfitting", "good", "too_short")


class Verdict(NamedTuple):
    """A short code (one of CODES) and the sentence that says it."""

    code: str
    text: str


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def start_loss(smooth_losses: Sequence[float | None]) -> float:
    """The loss a run started from: the mean of its first START_BATCHES smoothed losses (of the first half of a short
    run), the non-finite ones left out; NaN if there are none."""
    first = smooth_losses[:max(1, min(START_BATCHES, len(smooth_losses) // 2))]
    finite = [x for x in first if _finite(x)]
    return sum(finite) / len(finite) if finite else math.nan


def exploded_at(smooth_losses: Sequence[float | None]) -> int | None:
    """The batch (0-based) where the smoothed loss became NaN or infinite or began to explode, else None."""
    start, best = start_loss(smooth_losses), None
    streak_start, streak = None, 0
    for i, loss in enumerate(smooth_losses):
        if not _finite(loss):
            return streak_start if streak else i
        best = loss if best is None else best
        if loss > min(EXPLODE_VS_BEST * best, EXPLODE_VS_START * start):
            streak_start = i if streak == 0 else streak_start
            streak += 1
            if streak >= EXPLODE_RUN:
                return streak_start
        else:
            streak = 0
        best = min(best, loss)
    return None


def verdict(smooth_losses: Sequence[float | None], train_losses: Sequence[float | None],
            valid_losses: Sequence[float | None], accuracies: Sequence[float | None] | None = None,
            epoch_numbers: Sequence[int] | None = None) -> Verdict:
    """The verdict of a run from its per-batch smoothed training losses and per-epoch training and validation losses
    (and, when known, per-epoch validation accuracies and the epochs' numbers in the run's table)."""
    smooth = list(smooth_losses)
    if not smooth:
        return Verdict("too_short", "Too short to judge: no batch was trained.")
    valid, train = list(valid_losses), list(train_losses)
    numbers = list(epoch_numbers) if epoch_numbers is not None and len(epoch_numbers) == len(valid) \
        else list(range(len(valid)))
    at = exploded_at(smooth)
    if at is not None:
        return Verdict("diverged", f"Diverged: the loss exploded at batch {at}.")
    bad_valid = next((e for e, v in enumerate(valid) if not _finite(v)), None)
    if bad_valid is not None:
        return Verdict("diverged", f"Diverged: the validation loss became NaN or infinite at epoch {numbers[bad_valid]}.")
    if not valid or len(train) != len(valid):
        return Verdict("too_short", "Too short to judge: no epoch finished.")
    start, end = start_loss(smooth), smooth[-1]
    fell = (start - end) / start if start > 0 else 0.0
    accuracy = accuracies[-1] if accuracies is not None and len(accuracies) == len(valid) else None
    accurate = _finite(accuracy) and accuracy >= GOOD_ACCURACY
    low = valid[-1] <= LOW_LOSS
    if fell < TOO_LOW_FALL and not accurate and not low:
        if fell <= -TOO_LOW_FALL:  # it rose: "barely moved" and "too small" would be wrong
            why = (f"With only {len(smooth)} batches the curve is mostly noise: train more epochs, or add pictures."
                   if len(smooth) < 2 * START_BATCHES else "A learning rate too high makes it climb: try the LR finder's.")
            return Verdict("too_low", f"Not learning: the loss ended above where it started ({_change(fell)}). {why}")
        return Verdict("too_low", f"Too low: the loss barely moved ({_change(fell)} from where it started) — "
                                  "the learning rate is probably too small.")
    best = min(range(len(valid)), key=lambda e: (valid[e], e))
    rise = valid[-1] - valid[best]
    if best < len(valid) - 1 and rise >= OVERFIT_RISE * valid[best] and rise >= OVERFIT_ABS:
        if train[-1] < train[best]:
            return Verdict("overfitting", f"Overfitting: the validation loss has been rising since epoch "
                                          f"{numbers[best]} while the training loss falls.")
        return Verdict("unstable", f"Unstable: both losses have been rising since epoch {numbers[best]} — the "
                                   "learning rate may be too high.")
    before_valid = valid[-2] if len(valid) > 1 else start
    before_train = train[-2] if len(train) > 1 else start
    drop = before_valid - valid[-1]
    one = len(valid) == 1  # one epoch: compared with the untrained model; whether the losses level off is not seen
    if drop >= UNDERFIT_FALL * before_valid and drop >= UNDERFIT_ABS and train[-1] < before_train:
        if one:
            return Verdict("underfitting", "Underfitting: both losses fell a long way in the one epoch trained, and "
                                           "nothing shows them levelling off yet — train longer.")
        return Verdict("underfitting", "Underfitting: the training and validation losses are both still falling — "
                                       "train longer.")
    after = ("after one epoch (train more to see whether it levels off)" if one else "and has levelled off")
    if fell < TOO_LOW_FALL:  # judged good by the levels reached, not by the fall
        if accurate:
            level = f"its validation loss is {valid[-1]:.3f} {after}" if one else "its validation loss has levelled off"
            return Verdict("good", f"Good: the model gets {accuracy:.0%} of the validation pictures right, and {level}.")
        return Verdict("good", f"Good: the validation loss is low ({valid[-1]:.3f}) {after}.")
    return Verdict("good", f"Good: the validation loss came down {after}.")


def _change(fell: float) -> str:
    """-0.04 → 'up 4%', 0.03 → 'down 3%'."""
    return f"{'down' if fell >= 0 else 'up'} {abs(fell):.0%}"


def verdict_of_run(batches, epochs) -> Verdict:
    """The verdict from a run's rows as the runs database returns them (`RunStore.batches`, `RunStore.epochs`)."""
    accuracies = _floats(epochs["accuracy"]) if "accuracy" in epochs else None
    numbers = [int(e) for e in epochs["epoch"].tolist()] if "epoch" in epochs else None
    return verdict(_floats(batches["smooth_loss"]), _floats(epochs["train_loss"]), _floats(epochs["valid_loss"]),
                   accuracies, numbers)


def _floats(column) -> list[float]:
    # SQLite gives NULL for a NaN that was written: read it back as NaN
    return [math.nan if v is None or v != v else float(v) for v in column.tolist()]
