"""Tests for engine/results/label_issues.py: folds, the time estimate, and real digits with flipped labels found near the top."""
from __future__ import annotations

import itertools
import json
import math
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from engine.data.builtin import DIGIT_WORDS, digit_images
from engine.cli import main
from engine.data.loaders import PresizeCache
from engine.errors import UserError
from engine.results import label_issues
from engine.store.jobs import CANCELLED, Job, RunControl
from engine.train import precision, run
from engine.results.label_issues import (COLUMNS, MIN_OOF_ACCURACY, estimate_label_issue_seconds, find_likely_label_errors,
                                 fold_assignment, fold_spec, fold_split, judgement, label_issue_seconds,
                                 label_issues_target, needed_accuracy, percent_sure, planned_steps,
                                 rank_label_issues)
from engine.data.labels import LabelRule
from engine.spec import DataSpec, DeviceSpec, ModelSpec, RunSpec, TrainSpec
from engine.data.split import SplitRule

PER_CLASS = 40  # 400 real digits: a small model separates them well after a few epochs
N_FLIPPED = 8


@pytest.fixture(scope="module")
def flipped_digits(tmp_path_factory):
    """(folder, names of the 8 images saved under a wrong class): 40 real digits per class, Pets-style names."""
    root = tmp_path_factory.mktemp("flipped")
    images, targets = digit_images()
    seen = dict.fromkeys(range(10), 0)
    flipped = []
    for i, (im, t) in enumerate(zip(images, targets)):
        if seen[t] == PER_CLASS:
            continue
        seen[t] += 1
        label = DIGIT_WORDS[t]
        if seen[t] == 3 and len(flipped) < N_FLIPPED:  # the third image of the first 8 classes seen
            label = DIGIT_WORDS[(t + 5) % 10]
            flipped.append(f"{label}_{i}.png")
        Image.fromarray(im, "L").save(root / f"{label}_{i}.png")
    return root, flipped


def small_spec(root, epochs: int = 3) -> RunSpec:
    return RunSpec(data=DataSpec(source=str(root), label=LabelRule(kind="regex", pattern=r"^(.+)_\d+\.png$", on="name"),
                                 split=SplitRule(kind="random"), size=28, presize=32, bs=32),
                   model=ModelSpec(arch="small", pretrained=False),
                   train=TrainSpec(schedule="one_cycle", epochs=epochs, lr=5e-3, seed=0))


def test_flipped_labels_rank_at_the_top(flipped_digits, one_thread):
    root, flipped = flipped_digits
    progress: list[tuple[int, int]] = []
    table = find_likely_label_errors(small_spec(root), PresizeCache(), k=3, epochs=6,
                                     progress=lambda done, total: progress.append((done, total)))
    assert list(table.columns) == COLUMNS and len(table) == 10 * PER_CLASS
    assert table["rank"].tolist() == list(range(1, len(table) + 1))
    top = table.head(20)
    assert top["file"].isin(flipped).sum() >= 6
    assert table["likely_error"].head(int(table["likely_error"].sum())).all()  # cleanlab's flags come first
    found = top[top["file"].isin(flipped)]
    really = [DIGIT_WORDS[(DIGIT_WORDS.index(label) + 5) % 10] for label in found["label"]]
    assert (found["suggested"] == really).sum() >= 5  # the suggested label is the digit it really is
    assert {k: table.attrs[k] for k in ("folds_done", "k", "judged")} == {"folds_done": 3, "k": 3, "judged": True}
    assert progress[-1][0] == progress[-1][1] == len(progress)  # every planned step reported, once


def test_stopping_keeps_the_finished_folds(flipped_digits, one_thread):
    root, _ = flipped_digits
    control = RunControl()
    spec = small_spec(root)

    def progress(done: int, total: int) -> None:
        if done == total // 3 + 1:  # the first step of the second fold
            control.stop()

    table = find_likely_label_errors(spec, PresizeCache(), k=3, epochs=1, progress=progress, control=control)
    folds = fold_assignment(sorted_labels(root), 3, seed=0)
    assert table.attrs["folds_done"] == 1 and len(table) == int((folds == 0).sum())


class StopAtFirstStep(Job):
    """A job whose user presses Stop as soon as the first training step is reported."""

    def set_progress(self, done: float, total: float) -> None:
        super().set_progress(done, total)
        self.stop()


def test_a_job_stopped_in_the_first_fold_is_cancelled_with_an_empty_table(flipped_digits):
    job = StopAtFirstStep("label_issues", "digits", label_issues_target(small_spec(flipped_digits[0]), PresizeCache()))
    job.run()
    assert job.state == CANCELLED
    assert job.result.empty and list(job.result.columns) == COLUMNS and job.result.attrs["folds_done"] == 0


def sorted_labels(root) -> list[str]:
    """Labels of the folder's images in the order the items list them (sorted paths)."""
    return [p.name.split("_")[0] for p in sorted(root.glob("*.png"))]


def test_estimate_is_planned_steps_times_the_measured_step(flipped_digits, monkeypatch):
    root, _ = flipped_digits
    clock = itertools.count(step=0.25)  # every timed step takes a quarter of a second
    monkeypatch.setattr(run, "time", SimpleNamespace(perf_counter=lambda: next(clock)))  # where steps are timed
    spec = small_spec(root)
    seconds = estimate_label_issue_seconds(spec, PresizeCache(), k=3, epochs=2)
    sizes = np.bincount(fold_assignment(sorted_labels(root), 3, seed=0)).tolist()
    assert seconds == pytest.approx(label_issue_seconds(0.25, fold_spec(spec, 2), sizes))
    assert seconds == pytest.approx(0.25 * (3 * 2 * (266 // 32) + 3 * math.ceil(134 / 32) / 3))


def test_label_issue_seconds():
    spec = RunSpec(data=DataSpec(bs=10), train=TrainSpec(schedule="one_cycle", epochs=2))
    # folds of 34, 33, 33: 66 or 67 training images = 6 steps an epoch, 2 epochs; 4 prediction batches at a third
    assert label_issue_seconds(0.5, spec, [34, 33, 33]) == pytest.approx(0.5 * (3 * 12 + 3 * 4 / 3))
    assert planned_steps(spec, [34, 33, 33]) == 36


def test_fold_assignment_spreads_each_class():
    labels = ["a"] * 5 + ["b"] * 4
    folds = fold_assignment(labels, 3, seed=1)
    assert np.bincount(folds).tolist() == [3, 3, 3]
    assert np.bincount(folds[:5], minlength=3).tolist() == [2, 2, 1]
    assert np.bincount(folds[5:], minlength=3).tolist() == [1, 1, 2]
    assert folds.tolist() == fold_assignment(labels, 3, seed=1).tolist()


def test_rank_label_issues_puts_the_unlikely_label_first():
    labels = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.05, 0.95], [0.1, 0.9], [0.3, 0.7], [0.2, 0.8]])
    order, flagged = rank_label_issues(labels, probs)
    assert order[0] == 2 and flagged.tolist() == [False, False, True, False, False, False]
    assert order.tolist() == [2, 4, 1, 5, 0, 3]  # then the rest, least self-confident first (0.7, 0.8, 0.8, 0.9, 0.9)
    order, flagged = rank_label_issues(labels, probs, judge=False)  # models too weak: nothing flagged, same order
    assert not flagged.any() and order.tolist() == [2, 4, 1, 5, 0, 3]


def test_the_models_need_an_accuracy_well_above_chance_and_the_floor():
    assert MIN_OOF_ACCURACY == 0.8
    balanced = np.repeat(np.arange(10), 5)  # chance 10%: the floor decides
    assert needed_accuracy(balanced, 10) == 0.8
    skewed = np.array([0] * 9 + [1])  # always guessing class 0 is right 90% of the time: halfway to perfect
    assert needed_accuracy(skewed, 2) == pytest.approx(0.95)
    weak = judgement(0.58, 0.8, 0, 982)
    assert "too weak" in weak and "58%" in weak and "80%" in weak and "Nothing is flagged" in weak
    assert "more epochs" in weak and "pretrained" in weak and "image size" in weak
    good = judgement(0.9, 0.8, 12, 400)
    assert "90%" in good and "12 label(s) look wrong" in good and "until you accept" in good
    assert "no label looks wrong" in judgement(0.95, 0.8, 0, 400)


def test_percent_sure_never_rounds_up_to_certain():
    shown = [percent_sure(p) for p in (0.9994, 0.995, 0.5, 0.289, 1.0, 0.0)]
    assert shown == ["99%", "99%", "50%", "28%", "100%", "0%"]


def test_fold_spec_and_split():
    spec = RunSpec(train=TrainSpec(epochs=7, patience=2, keep_best=True, seed=10), device=DeviceSpec(precision="bf16"))
    fold = fold_spec(spec, fold=2)
    assert (fold.train.epochs, fold.train.patience, fold.train.keep_best, fold.train.seed) == (7, 0, False, 12)
    assert fold.device == spec.device and fold.data == spec.data and fold.model == spec.model
    assert fold_spec(spec, 3).train.epochs == 3
    split = fold_split(5, np.array([0, 1, 3, 4]), np.array([0, 1, 1, 0]), 1)
    assert split.tolist() == ["train", "valid", "", "valid", "train"]


def test_without_cleanlab_a_clear_error_before_any_training(flipped_digits, monkeypatch):
    monkeypatch.setitem(sys.modules, "cleanlab.filter", None)
    with pytest.raises(UserError, match="pip install cleanlab"):
        rank_label_issues(np.array([0, 1]), np.array([[0.9, 0.1], [0.2, 0.8]]))
    monkeypatch.setattr(label_issues, "fit", None)  # any fold run would fail differently
    with pytest.raises(UserError, match="pip install cleanlab"):
        find_likely_label_errors(small_spec(flipped_digits[0]), PresizeCache())


def test_too_few_images_for_the_folds(tmp_path):
    images, targets = digit_images()
    for i in range(5):  # one validates: the split is fine, the folds are not
        Image.fromarray(images[i], "L").save(tmp_path / f"{DIGIT_WORDS[targets[i] % 2]}_{i}.png")
    with pytest.raises(UserError, match="too few to cut into 3 folds"):
        find_likely_label_errors(small_spec(tmp_path), PresizeCache(), k=3)


@pytest.fixture(scope="module")
def planted_folders(tmp_path_factory) -> tuple[object, set[str]]:
    """(folder, planted files): 40 real digits per class in class folders (`seven/12.png`), 5% of them (20) put in
    the folder of another, randomly drawn class."""
    root = tmp_path_factory.mktemp("planted")
    images, targets = digit_images()
    picked = [i for i in range(len(targets)) if (targets[:i] == targets[i]).sum() < PER_CLASS]
    rng = np.random.default_rng(0)
    planted = set(rng.choice(picked, size=len(picked) // 20, replace=False).tolist())
    rels = set()
    for i in picked:
        t = int(targets[i])
        label = DIGIT_WORDS[(t + 1 + int(rng.integers(9))) % 10] if i in planted else DIGIT_WORDS[t]
        (root / label).mkdir(exist_ok=True)
        Image.fromarray(images[i], "L").save(root / label / f"{i}.png")
        if i in planted:
            rels.add(f"{label}/{i}.png")
    return root, rels


def folder_spec(root, epochs: int = 10, precision_: str = "auto") -> RunSpec:
    """Short runs of the small model from scratch on one thread; a fixed seed."""
    return RunSpec(data=DataSpec(source=str(root), label=LabelRule(kind="folder"), split=SplitRule(kind="random"),
                                 size=28, presize=32, bs=32),
                   model=ModelSpec(arch="small", pretrained=False),
                   train=TrainSpec(schedule="one_cycle", epochs=epochs, lr=5e-3, seed=0),
                   device=DeviceSpec(threads=1, precision=precision_))


def test_planted_wrong_folders_are_flagged_by_the_command_line(planted_folders, capsys, one_thread):
    """`python -m engine label-issues` with the train command's flags: one JSON line; most planted files flagged,
    most flagged files planted."""
    root, planted = planted_folders
    assert len(planted) == 20
    code = main(["label-issues", "--data", str(root), "--label", "folder", "--split", "random", "--arch", "small",
                 "--no-pretrained", "--schedule", "one_cycle", "--epochs", "10", "--lr", "5e-3", "--size", "28",
                 "--presize", "32", "--bs", "32", "--seed", "0", "--threads", "1", "--folds", "3", "--json"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and len(out) == 1
    result = json.loads(out[0])
    assert set(result) == {"oof_accuracy", "needed_accuracy", "n_ranked", "flagged", "message"}
    assert result["n_ranked"] == 400 and result["needed_accuracy"] == 0.8
    assert result["oof_accuracy"] >= 0.8 and f"{result['oof_accuracy']:.0%}" in result["message"]
    flagged = {row["file"] for row in result["flagged"]}
    hits = len(flagged & planted)
    assert hits / len(flagged) > 0.5 and hits / len(planted) > 0.5  # precision and recall
    for row in result["flagged"]:
        assert set(row) == {"file", "label", "suggested", "confidence"}
        assert row["file"].split("/")[0] == row["label"] != row["suggested"] and 0 < row["confidence"] <= 1
    assert "Nothing changes until you accept" in result["message"]


def test_the_command_line_refuses_too_few_folds(planted_folders, capsys):
    assert main(["label-issues", "--data", str(planted_folders[0]), "--folds", "1", "--json"]) == 2
    assert "at least 2 folds" in capsys.readouterr().err


def test_models_too_weak_to_judge_flag_nothing_and_say_their_accuracy(planted_folders, tmp_path, one_thread):
    """Labels drawn at random: no model can agree with them much more often than chance."""
    root, _ = planted_folders
    rng = np.random.default_rng(1)
    for path in sorted(root.rglob("*.png")):
        label = DIGIT_WORDS[int(rng.integers(10))]
        (tmp_path / label).mkdir(exist_ok=True)
        (tmp_path / label / path.name).write_bytes(path.read_bytes())
    table = find_likely_label_errors(folder_spec(tmp_path, epochs=1), PresizeCache(), k=3)
    accuracy = table.attrs["oof_accuracy"]
    assert accuracy < 0.5 and not table.attrs["judged"] and not table["likely_error"].any()
    assert len(table) == 400
    message = table.attrs["message"]
    assert f"{accuracy:.0%}" in message and "too weak" in message and "Nothing is flagged" in message
    assert "more epochs" in message and "pretrained" in message


def test_the_folds_learners_get_the_specs_precision(planted_folders, monkeypatch):
    """Each fold's learner is built as every run's: the spec's precision and threads reach it."""
    root, _ = planted_folders
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    built = []

    def no_training(learn, train):
        built.append((learn.precision, learn.cpu_threads, learn.dls.n_train + learn.dls.n_valid))
        return {}

    monkeypatch.setattr(label_issues, "fit", no_training)
    find_likely_label_errors(folder_spec(root, epochs=1, precision_="bf16"), PresizeCache(), k=3)
    assert [b[:2] for b in built] == [("bf16", 1)] * 3 and all(n == 400 for _, _, n in built)
