"""Likely wrong labels: confident learning (cleanlab) on out-of-fold predicted probabilities.

Every image's probabilities come from a model that never saw it: the readable images are dealt into k folds
(each class spread evenly), and k short runs of the spec's model each train on k − 1 folds and predict the
fold left out. cleanlab then flags the images whose given label the model finds unlikely compared with how
confident it is about each class on average, ranked by self-confidence (the probability of the given label).

    seconds = estimate_label_issue_seconds(spec, cache)          # shown before anything starts
    table = find_likely_label_errors(spec, cache, k=3, epochs=2, stop=stop_event)
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from engine.data import DataLoaders, LabelledItems, PresizeCache, load_items
from engine.errors import UserError
from engine.images import PresizedImages
from engine.jobs import Job
from engine.learner import Callback, FunctionCallback, Learner
from engine.models import create_model
from engine.scoring import item_inputs, score
from engine.spec import RunSpec, total_epochs
from engine.training import batches_per_epoch, device_of, estimate_from_step, fit, ready_spec

DEFAULT_K = 3  # folds: each model trains on two thirds of the images
DEFAULT_EPOCHS = 2  # epochs per fold (fine_tune adds its frozen epochs): enough to rank, far short of a full run
COLUMNS = ["rank", "file", "label", "suggested", "self_confidence", "likely_error", "split"]

Progress = Callable[[int, int], None]  # (training steps done, planned) across all folds


class SkipValidation(Callback):
    """The folds' runs need no per-epoch validation: the held-out fold is predicted once, after training."""

    def before_fit(self, learn, logs):
        learn.skip_validation = True


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


def fold_spec(spec: RunSpec, epochs: int) -> RunSpec:
    """The spec each fold trains with: `epochs` epochs, no early stopping, the last weights kept."""
    if epochs < 1:
        raise UserError(f"Each fold needs at least one epoch (got {epochs}).")
    return replace(spec, train=replace(spec.train, epochs=epochs, patience=0, keep_best=False))


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


def rank_label_issues(labels: np.ndarray, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, flagged): every item ordered cleanlab's flagged ones first, by self-confidence; `flagged` per item.

    Items cleanlab does not flag follow, least self-confident first.
    """
    ranked = cleanlab_find_label_issues()(labels, pred_probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    flagged = np.zeros(len(labels), dtype=bool)
    flagged[ranked] = True
    confidence = pred_probs[np.arange(len(labels)), labels]
    rest = np.flatnonzero(~flagged)
    rest = rest[np.argsort(confidence[rest], kind="stable")]
    return np.concatenate([np.asarray(ranked, dtype=np.int64), rest]), flagged


def issues_table(items: LabelledItems, positions: np.ndarray, pred_probs: np.ndarray) -> pd.DataFrame:
    """The ranked table (see COLUMNS) of the items at `positions`, given their out-of-fold probabilities."""
    if not len(positions):
        return pd.DataFrame({c: [] for c in COLUMNS})
    labels = items.targets[positions]
    order, flagged = rank_label_issues(labels, pred_probs)
    pos = positions[order]
    return pd.DataFrame({
        "rank": np.arange(1, len(pos) + 1),
        "file": [items.rel_paths[p] for p in pos],
        "label": [items.labels[p] for p in pos],
        "suggested": [items.classes[c] for c in pred_probs[order].argmax(axis=1)],
        "self_confidence": pred_probs[order, labels[order]],
        "likely_error": flagged[order],
        "split": [str(items.split[p]) for p in pos],
    })


# ---------------------------------------------------------------- runs

def _load(spec: RunSpec, cache: PresizeCache, default_threads: int | None) -> tuple[RunSpec, LabelledItems, PresizedImages]:
    spec = ready_spec(spec, default_threads)
    items = load_items(spec.data)
    images = cache.get(items.scanned_paths, spec.data.presize, spec.data.presize_method)
    return spec, items, images


def _readable_folds(items: LabelledItems, images: PresizedImages, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions of the readable items, their folds); UserError when there are too few to cut into k folds."""
    if k < 2:
        raise UserError(f"Out-of-fold predictions need at least 2 folds (got {k}).")
    positions = np.flatnonzero(images.ok[items.image_index])
    if len(positions) < 2 * k:
        raise UserError(f"{len(positions)} readable images are too few to cut into {k} folds.")
    return positions, fold_assignment([items.labels[p] for p in positions], k, seed)


def _fold_learner(spec: RunSpec, items: LabelledItems, images: PresizedImages, positions: np.ndarray,
                  folds: np.ndarray, fold: int) -> Learner:
    """A fresh learner that trains on every fold but `fold` and holds `fold` as its validation set."""
    split = np.full(len(items.rel_paths), "", dtype=object)  # unreadable items stay out of both
    split[positions] = np.where(folds == fold, "valid", "train")
    seed = spec.train.seed + fold
    dls = DataLoaders(replace(items, split=split), images, size=spec.data.size, bs=spec.data.bs, aug=spec.augment,
                      device=device_of(spec), seed=seed)
    torch.manual_seed(seed)
    want = spec.model.pretrained and spec.model.arch != "small"
    model, info = create_model(spec.model.arch, len(items.classes), pretrained=want)
    return Learner(model, dls, pretrained=info.pretrained, wd=spec.train.wd,
                   cpu_threads=spec.device.threads if dls.device.type == "cpu" else None)


def estimate_label_issue_seconds(spec: RunSpec, cache: PresizeCache, k: int = DEFAULT_K, epochs: int = DEFAULT_EPOCHS,
                                 steps: int = 5, default_threads: int | None = None) -> float:
    """How long `find_likely_label_errors` would take here, from a few timed training steps of the first fold's model."""
    spec, items, images = _load(spec, cache, default_threads)
    spec = fold_spec(replace(spec, model=replace(spec.model, pretrained=False)), epochs)  # no download to time a step
    positions, folds = _readable_folds(items, images, k, spec.train.seed)
    learn = _fold_learner(spec, items, images, positions, folds, 0)
    if learn.cpu_threads:
        torch.set_num_threads(learn.cpu_threads)
    batches = iter(learn.dls.train())
    x, y = next(batches)
    learn.train_step(x, y)  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()  # making the (augmented) batch is part of a step's cost
        x, y = next(batches, (x, y))
        learn.train_step(x, y)
        times.append(time.perf_counter() - start)
    per_step = float(np.median(times))  # a step slowed by another program on the machine is not the rule
    return label_issue_seconds(per_step, spec, np.bincount(folds, minlength=k).tolist())


def find_likely_label_errors(spec: RunSpec, cache: PresizeCache, k: int = DEFAULT_K, epochs: int = DEFAULT_EPOCHS,
                             progress: Progress | None = None, stop: threading.Event | None = None,
                             pause: threading.Event | None = None, default_threads: int | None = None) -> pd.DataFrame:
    """Every readable image ranked by how likely its label is wrong: one row each, columns COLUMNS.

    `rank` starts at 1; `likely_error` marks the images cleanlab flags (they come first, least
    self-confident first); `suggested` is the class the out-of-fold model found most likely. Setting `stop`
    ends the current fold's training at the next batch: the table then covers only the folds finished
    (none: an empty table). While `pause` is set, training waits. `table.attrs` holds "folds_done" and "k".
    """
    cleanlab_find_label_issues()  # before the runs, not after them
    spec, items, images = _load(spec, cache, default_threads)
    spec = fold_spec(spec, epochs)
    stop = stop or threading.Event()
    positions, folds = _readable_folds(items, images, k, spec.train.seed)
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
        if stop.is_set():
            break
        learn = _fold_learner(spec, items, images, positions, folds, fold)
        learn.stop_event = stop
        if pause is not None:
            learn.pause_event = pause
        learn.callbacks += [SkipValidation(), FunctionCallback(count)]
        fit(learn, spec.train)
        if stop.is_set():
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


def label_issues_target(spec: RunSpec, cache: PresizeCache, k: int = DEFAULT_K, epochs: int = DEFAULT_EPOCHS,
                        default_threads: int | None = None) -> Callable[[Job], pd.DataFrame]:
    """A job target that ranks likely wrong labels (its result: the table), obeying the job's stop and pause."""

    def target(job: Job) -> pd.DataFrame:
        job.emit("stage", text=f"Training {k} models, each on {k - 1} of {k} parts of the images")
        return find_likely_label_errors(spec, cache, k, epochs, progress=job.set_progress, stop=job.stop_event,
                                        pause=job.pause_event, default_threads=default_threads)

    return target
