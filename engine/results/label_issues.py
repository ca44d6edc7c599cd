"""Likely wrong labels: confident learning (cleanlab) on out-of-fold predicted probabilities.

Every image's probabilities come from a model that never saw it: the readable images are dealt into k folds
(each class spread evenly), and k short runs of the spec's model each train on k − 1 folds and predict the
fold left out. The data is prepared once (`engine.train.run.prepare_data`); each fold is a run of its own spec (the
user's, with the fold's seed and split) whose learner `engine.train.run.build_learner` builds as every run's, so its
precision, threads and every other setting are the user's.

cleanlab's own guide warns that confident learning needs a model that is already good: a weak model's mistakes
look like wrong labels. So the models are judged first, by their out-of-fold accuracy (how often the model that
never saw an image agrees with its label). Below `needed_accuracy` (0.8, or halfway from always guessing the
biggest class to perfect, whichever is higher) nothing is flagged and the message says what would help. Otherwise
cleanlab flags the images whose given label the models find unlikely compared with how confident they are about
each class on average (its per-class thresholds), ranked by self-confidence (the probability of the given label),
and each flag carries the models' probability of the class they suggest. Nothing here changes a file: the user
accepts each suggestion.

    seconds = estimate_label_issue_seconds(spec, cache)          # shown before anything starts
    table = find_likely_label_errors(spec, cache, k=3, control=control)
    table.attrs["message"]                                        # how sure, or why nothing is flagged
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from engine.data.loaders import LabelledItems, PresizeCache
from engine.errors import UserError
from engine.data.images import PresizedImages
from engine.store.jobs import Job, RunControl
from engine.train.learner import FunctionCallback, Learner, batches_per_epoch
from engine.train.scoring import item_inputs, score
from engine.spec import RunSpec, total_epochs
from engine.train.run import (PreparedData, build_learner, estimate_from_step, fit, prepare_data, time_steps,
                              with_split)

DEFAULT_K = 3  # folds: each model trains on two thirds of the images
# The out-of-fold accuracy below which the models are too weak to judge labels. cleanlab needs a model that is
# already good; at 80% one image in five already disagrees with its model, and a weak model's own mistakes
# (the issue's 2-epoch folds of a 58% model flagged 376 of 982 images) would drown the real wrong labels. The price:
# a data set with more than about one label in five wrong is never judged (it needs relabelling, not a review).
MIN_OOF_ACCURACY = 0.8
COLUMNS = ["rank", "file", "label", "suggested", "confidence", "self_confidence", "likely_error", "split"]
HELP = "more epochs per model, a pretrained model (resnet18 or larger, with pretrained weights) or a larger image size"

Progress = Callable[[int, int], None]  # (training steps done, planned) across all folds


# ---------------------------------------------------------------- pure parts

def fold_assignment(labels: Sequence[str], k: int, seed: int) -> np.ndarray:
    """Fold (0…k−1) of each item: each class shuffled with `seed` and dealt round-robin, so folds keep its share."""
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels, dtype=object)
    folds = np.zeros(len(labels_arr), dtype=np.int64)
    offset = 0  # where the next class starts dealing, so small classes do not all land in fold 0
    for cls in sorted(set(labels_arr.tolist())):
        members = rng.permutation(np.flatnonzero(labels_arr == cls))
        folds[members] = (offset + np.arange(len(members))) % k
        offset = (offset + len(members)) % k
    return folds


def fold_spec(spec: RunSpec, epochs: int | None = None, fold: int = 0) -> RunSpec:
    """The spec fold `fold` trains with: the user's, `epochs` epochs (default: the spec's), the seed plus the fold, no
    early stopping and the last weights kept (the held-out fold is predicted once, so it cannot pick an epoch)."""
    epochs = spec.train.epochs if epochs is None else epochs
    if epochs < 1:
        raise UserError(f"Each fold needs at least one epoch (got {epochs}).")
    seed = None if spec.train.seed is None else spec.train.seed + fold
    return replace(spec, train=replace(spec.train, epochs=epochs, patience=0, keep_best=False, seed=seed))


def fold_split(n_items: int, positions: np.ndarray, folds: np.ndarray, fold: int) -> np.ndarray:
    """'train' / 'valid' / '' per item: fold `fold` validates, the other folds train, unreadable items stay out."""
    split = np.full(n_items, "", dtype=object)
    split[positions] = np.where(folds == fold, "valid", "train")
    return split


def percent_sure(p: float) -> str:
    """A probability as a whole percent rounded down, so a model short of certain never reads 100% sure."""
    return f"{math.floor(round(p * 100, 6))}%"


def needed_accuracy(labels: np.ndarray, n_classes: int) -> float:
    """The out-of-fold accuracy the models need before they judge labels: MIN_OOF_ACCURACY, or halfway from always
    guessing the biggest class (chance, for these labels) to perfect, whichever is higher."""
    majority = np.bincount(labels, minlength=n_classes).max() / max(1, len(labels))
    return max(MIN_OOF_ACCURACY, (1 + float(majority)) / 2)


def judgement(oof_accuracy: float | None, needed: float, n_flagged: int, n_ranked: int) -> str:
    """What the search found, in words: how sure it is, or why it flags nothing and what would help."""
    if oof_accuracy is None:
        return "No model finished, so no image was judged."
    if oof_accuracy < needed:
        return (f"The models are too weak to judge labels: the model that never saw an image agreed with its label "
                f"for only {oof_accuracy:.0%} of the {n_ranked:,} images, and they need at least {needed:.0%} before "
                f"their disagreements mean anything. Nothing is flagged. What would help: {HELP}.")
    if not n_flagged:
        return (f"The model that never saw an image agreed with its label for {oof_accuracy:.0%} of the "
                f"{n_ranked:,} images, and no label looks wrong to it.")
    return (f"The model that never saw an image agreed with its label for {oof_accuracy:.0%} of the {n_ranked:,} "
            f"images. {n_flagged:,} label(s) look wrong to it, the most likely first, each with how sure it is of the "
            "class it suggests. Nothing changes until you accept a suggestion.")


def label_issue_seconds(step_seconds: float, spec: RunSpec, fold_sizes: list[int]) -> float:
    """Seconds of k fold runs from one measured training step: each trains on the other folds, then predicts its own.

    Predicting costs a third of a step per `spec.data.bs` images, as `estimate_from_step` counts validation;
    the folds' runs validate nothing else.
    """
    n = sum(fold_sizes)
    total = 0.0
    for size in fold_sizes:
        total += estimate_from_step(step_seconds, spec, n - size, 0)
        total += step_seconds / 3 * math.ceil(size / spec.data.bs)
    return total


def planned_steps(spec: RunSpec, fold_sizes: list[int]) -> int:
    """Training steps of all the fold runs (what progress counts up to)."""
    n = sum(fold_sizes)
    return sum(total_epochs(spec) * batches_per_epoch(n - size, spec.data.bs) for size in fold_sizes)


def cleanlab_find_label_issues() -> Callable:
    """cleanlab's find_label_issues, or a UserError saying how to install it."""
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        raise UserError("Finding likely wrong labels needs the cleanlab package: pip install cleanlab") from None
    return find_label_issues


def rank_label_issues(labels: np.ndarray, pred_probs: np.ndarray, judge: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(order, flagged): every item ordered flagged ones first, each group least self-confident first.

    An item is flagged when cleanlab finds its label an issue and the models suggest another class; with
    `judge` False (models too weak) nothing is.
    """
    flagged = np.zeros(len(labels), dtype=bool)
    if judge:
        ranked = cleanlab_find_label_issues()(labels, pred_probs, return_indices_ranked_by="self_confidence", n_jobs=1)
        flagged[ranked] = True
        flagged &= pred_probs.argmax(axis=1) != labels
    self_confidence = pred_probs[np.arange(len(labels)), labels]
    return np.lexsort((self_confidence, ~flagged)), flagged


def issues_table(items: LabelledItems, positions: np.ndarray, pred_probs: np.ndarray) -> pd.DataFrame:
    """The ranked table (see COLUMNS) of the items at `positions`, given their out-of-fold probabilities.

    `table.attrs` holds "oof_accuracy" (None without items), "needed_accuracy", "judged" (whether the models were
    good enough to flag anything) and "message".
    """
    labels = items.targets[positions]
    needed = needed_accuracy(labels, len(items.classes))
    if not len(positions):
        table = pd.DataFrame({c: [] for c in COLUMNS})
        table.attrs.update(oof_accuracy=None, needed_accuracy=needed, judged=False,
                           message=judgement(None, needed, 0, 0))
        return table
    accuracy = float((pred_probs.argmax(axis=1) == labels).mean())
    judged = accuracy >= needed
    order, flagged = rank_label_issues(labels, pred_probs, judge=judged)
    pos, probs = positions[order], pred_probs[order]
    suggested = probs.argmax(axis=1)
    table = pd.DataFrame({
        "rank": np.arange(1, len(pos) + 1),
        "file": [items.rel_paths[p] for p in pos],
        "label": [items.labels[p] for p in pos],
        "suggested": [items.classes[c] for c in suggested],
        "confidence": probs[np.arange(len(pos)), suggested],  # the models' probability of the suggested class
        "self_confidence": probs[np.arange(len(pos)), labels[order]],  # ... and of the given label
        "likely_error": flagged[order],
        "split": [str(items.split[p]) for p in pos],
    })
    table.attrs.update(oof_accuracy=accuracy, needed_accuracy=needed, judged=judged,
                       message=judgement(accuracy, needed, int(flagged.sum()), len(pos)))
    return table


# ---------------------------------------------------------------- runs

def _readable_folds(items: LabelledItems, images: PresizedImages, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions of the readable items, their folds); UserError when there are too few to cut into k folds."""
    if k < 2:
        raise UserError(f"Out-of-fold predictions need at least 2 folds (got {k}).")
    positions = np.flatnonzero(images.ok[items.image_index])
    if len(positions) < 2 * k:
        raise UserError(f"{len(positions)} readable images are too few to cut into {k} folds.")
    return positions, fold_assignment([items.labels[p] for p in positions], k, seed)


def fold_learner(data: PreparedData, positions: np.ndarray, folds: np.ndarray, fold: int, epochs: int | None = None,
                 control: RunControl | None = None) -> Learner:
    """A fresh learner, built as every run's, that trains on every fold but `fold` and holds `fold` as its held-out
    set (predicted once after training, so its epochs are not validated); `data` is what the search prepared."""
    split = fold_split(len(data.items.rel_paths), positions, folds, fold)
    fold_data = replace(data, spec=fold_spec(data.spec, epochs, fold), items=with_split(data.items, split))
    learn = build_learner(fold_data, control=control).learn
    learn.validate_epochs = False
    return learn


def estimate_label_issue_seconds(spec: RunSpec, cache: PresizeCache, k: int = DEFAULT_K, epochs: int | None = None,
                                 steps: int = 5, default_threads: int | None = None) -> float:
    """How long `find_likely_label_errors` would take here, from a few timed training steps of the first fold's model."""
    data = prepare_data(spec, cache, default_threads=default_threads)
    spec = fold_spec(replace(data.spec, model=replace(data.spec.model, pretrained=False)), epochs)  # no download to time a step
    positions, folds = _readable_folds(data.items, data.images, k, spec.train.seed)
    per_step, _ = time_steps(fold_learner(replace(data, spec=spec), positions, folds, 0), steps)
    return label_issue_seconds(per_step, spec, np.bincount(folds, minlength=k).tolist())


def find_likely_label_errors(spec: RunSpec, cache: PresizeCache, k: int = DEFAULT_K, epochs: int | None = None,
                             progress: Progress | None = None, control: RunControl | None = None,
                             default_threads: int | None = None) -> pd.DataFrame:
    """Every readable image ranked by how likely its label is wrong: one row each, columns COLUMNS.

    Each fold trains `epochs` epochs (default: the spec's). `rank` starts at 1; `likely_error` marks the flagged
    images (they come first, least self-confident first; none when the models are too weak); `suggested` is the
    class the out-of-fold model found most likely and `confidence` its probability. Every fold obeys `control`: a
    stop ends the current fold's training at the next batch, and the table then covers only the folds finished
    (none: an empty table); a pause holds training. `table.attrs` holds "folds_done", "k" and those of `issues_table`.
    """
    cleanlab_find_label_issues()  # before the runs, not after them
    control = control if control is not None else RunControl()
    data = prepare_data(spec, cache, default_threads=default_threads)
    items = data.items
    data = replace(data, spec=fold_spec(data.spec, epochs))
    spec = data.spec
    positions, folds = _readable_folds(items, data.images, k, spec.train.seed)
    sizes = np.bincount(folds, minlength=k).tolist()
    total, done = planned_steps(spec, sizes), 0
    probs = np.zeros((len(positions), len(items.classes)), dtype=np.float64)
    finished = np.zeros(len(positions), dtype=bool)
    folds_done = 0

    def count(event: str, logs: dict) -> None:
        nonlocal done
        if event == "after_batch":
            done += 1
            if progress is not None:
                progress(done, total)

    for fold in range(k):
        if control.stopped:
            break
        learn = fold_learner(data, positions, folds, fold, control=control)
        learn.callbacks.append(FunctionCallback(count))
        fit(learn, spec.train)  # the fold's spec differs from it only in the seed
        if control.stopped:
            break
        held_out = learn.dls.valid_idx  # positions in items, in the order of `positions`
        logits = score(learn.model, held_out, lambda pos: item_inputs(learn.dls, pos))
        rows = np.searchsorted(positions, held_out.numpy())
        probs[rows] = torch.softmax(logits.double(), dim=1).numpy()
        finished[rows] = True
        folds_done += 1
    table = issues_table(items, positions[finished], probs[finished])
    table.attrs.update(folds_done=folds_done, k=k)
    return table


def label_issues_target(spec: RunSpec, cache: PresizeCache, k: int = DEFAULT_K, epochs: int | None = None,
                        default_threads: int | None = None) -> Callable[[Job], pd.DataFrame]:
    """A job target that ranks likely wrong labels (its result: the table), obeying the job's control."""

    def target(job: Job) -> pd.DataFrame:
        job.emit("stage", text=f"Training {k} models, each on {k - 1} of {k} parts of the images")
        return find_likely_label_errors(spec, cache, k, epochs, progress=job.set_progress, control=job.control,
                                        default_threads=default_threads)

    return target
