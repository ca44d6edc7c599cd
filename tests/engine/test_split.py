"""Tests for engine/data/split.py: split rules as pure functions, checked against fastai's own recipe."""
from collections import Counter

import numpy as np
import pytest
import torch

from engine.errors import UserError
from engine.data.split import SplitRule, apply_split_rule, col_splitter, grandparent_splitter, random_splitter


def valid_set(split: np.ndarray) -> set[int]:
    return set(np.flatnonzero(split == "valid").tolist())


def fastai_random_valid(n: int, valid_pct: float, seed: int) -> set[int]:
    """fastai's RandomSplitter, written out: torch.manual_seed(seed); the first int(valid_pct*n) of a randperm."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        perm = torch.randperm(n)
    finally:
        torch.random.set_rng_state(state)
    return set(perm[:int(valid_pct * n)].tolist())


# ---------------------------------------------------------------- random_splitter

@pytest.mark.parametrize("n, valid_pct, n_valid", [(10, 0.2, 2), (99, 0.2, 19), (1797, 0.2, 359), (7, 0.5, 3), (5, 0.0, 0)])
def test_random_splitter_validates_exactly_int_pct_n(n, valid_pct, n_valid):
    split = random_splitter(n, valid_pct)
    assert split.shape == (n,)
    assert Counter(split.tolist()) == Counter({"valid": n_valid, "train": n - n_valid}) - Counter()
    assert set(split.tolist()) <= {"train", "valid"}


@pytest.mark.parametrize("n, valid_pct, seed", [(10, 0.2, 42), (50, 0.2, 42), (1797, 0.2, 42), (333, 0.3, 7)])
def test_random_splitter_matches_fastai(n, valid_pct, seed):
    assert valid_set(random_splitter(n, valid_pct, seed)) == fastai_random_valid(n, valid_pct, seed)


def test_random_splitter_does_not_touch_the_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    random_splitter(100, 0.2, seed=42)
    assert torch.equal(torch.rand(3), expected)


def test_random_splitter_is_deterministic_per_seed_and_differs_across_seeds():
    a, b, c = random_splitter(200, 0.2, 1), random_splitter(200, 0.2, 1), random_splitter(200, 0.2, 2)
    assert (a == b).all()
    assert valid_set(a) != valid_set(c)
    assert len(valid_set(c)) == 40


def test_random_splitter_without_seed_still_splits_exactly():
    assert len(valid_set(random_splitter(100, 0.25, seed=None))) == 25


def test_stratified_keeps_round_pct_of_each_class():
    labels = ["a"] * 10 + ["b"] * 7 + ["c"] * 3 + ["d"] * 1 + ["e"] * 13
    split = random_splitter(len(labels), 0.2, seed=42, labels=labels)
    per_class = Counter(lab for lab, s in zip(labels, split) if s == "valid")
    # round(2.0)=2, round(1.4)=1, round(0.6)=1, round(0.2)=0, round(2.6)=3
    assert dict(per_class) == {"a": 2, "b": 1, "c": 1, "e": 3}
    assert (split != "").all()
    assert (random_splitter(len(labels), 0.2, 42, labels) == split).all()


def test_stratified_draws_each_class_from_the_seeded_generator():
    labels = ["x"] * 6 + ["y"] * 4
    split = random_splitter(10, 0.5, seed=3, labels=labels)
    gen = torch.Generator().manual_seed(3)
    x_valid = set(torch.randperm(6, generator=gen)[:3].tolist())
    y_valid = {6 + i for i in torch.randperm(4, generator=gen)[:2].tolist()}
    assert valid_set(split) == x_valid | y_valid


@pytest.mark.parametrize("valid_pct", [-0.1, 1.0, 1.5])
def test_valid_pct_outside_0_1_is_a_user_error(valid_pct):
    with pytest.raises(UserError, match="validation share"):
        random_splitter(10, valid_pct)


# ---------------------------------------------------------------- grandparent_splitter

def test_grandparent_splitter_mnist_sample_layout():
    paths = ["train/3/a.png", "valid/7/b.png", "test/x.png", "top.png", "data/valid/3/c.png", "train/valid"]
    assert grandparent_splitter(paths).tolist() == ["train", "valid", "", "", "valid", "train"]


def test_grandparent_splitter_custom_names():
    paths = ["training/cat/a.png", "validation/dog/b.png", "train/cat/c.png", "valid/dog/d.png"]
    split = grandparent_splitter(paths, train_name="training", valid_name="validation")
    assert split.tolist() == ["train", "valid", "", ""]


# ---------------------------------------------------------------- col_splitter

def test_col_splitter_truthy_words():
    values = [True, False, np.bool_(True), np.bool_(False), 1, 0, "1", "0", "True", "false", " yes ", "no",
              "Y", "t", "valid", "Validation", "train", "", "nan"]
    expected = ["valid", "train", "valid", "train", "valid", "train", "valid", "train", "valid", "train", "valid",
                "train", "valid", "valid", "valid", "valid", "train", "train", "train"]
    assert col_splitter(values).tolist() == expected


# ---------------------------------------------------------------- apply_split_rule

def test_apply_split_rule_random_and_stratified():
    labels = ["a"] * 8 + ["b"] * 2
    rels = [f"{i}.png" for i in range(10)]
    plain = apply_split_rule(SplitRule(kind="random", valid_pct=0.2, seed=42), rels, labels)
    assert valid_set(plain) == fastai_random_valid(10, 0.2, 42)
    strat = apply_split_rule(SplitRule(kind="random", valid_pct=0.2, seed=42, stratify=True), rels, labels)
    assert Counter(lab for lab, s in zip(labels, strat) if s == "valid") == Counter({"a": 2})  # round(1.6), round(0.4)


def test_apply_split_rule_csv_with_names(tmp_path):
    csv = tmp_path / "split.csv"
    csv.write_text("name,is_valid\na.png,True\nb.png,False\nc.png,1\nd.png,\n")
    rule = SplitRule(kind="csv", csv_path=str(csv))
    split = apply_split_rule(rule, ["x/a.png", "b.png", "y/c.png", "d.png", "e.png"], ["l"] * 5)
    assert split.tolist() == ["valid", "train", "valid", "train", ""]


def test_apply_split_rule_csv_with_paths_and_custom_columns(tmp_path):
    csv = tmp_path / "split.csv"
    csv.write_text("file,valid\ncats/a.png,yes\ndogs/a.png,no\n./dogs/b.png,yes\n")
    rule = SplitRule(kind="csv", csv_path=str(csv), file_col="file", valid_col="valid")
    split = apply_split_rule(rule, ["cats/a.png", "dogs/a.png", "dogs/b.png", "a.png", "cats/z.png"], ["l"] * 5)
    assert split.tolist() == ["valid", "train", "valid", "", ""]


def test_apply_split_rule_csv_missing_column(tmp_path):
    csv = tmp_path / "split.csv"
    csv.write_text("name,label\na.png,cat\n")
    with pytest.raises(UserError, match="no column 'is_valid'. Its columns are: name, label"):
        apply_split_rule(SplitRule(kind="csv", csv_path=str(csv)), ["a.png"], ["cat"])


def test_apply_split_rule_folder():
    rels = ["train/3/a.png", "valid/3/b.png", "test/c.png"]
    assert apply_split_rule(SplitRule(kind="folder"), rels, ["3", "3", "x"]).tolist() == ["train", "valid", ""]


def test_folder_rule_without_a_valid_folder_is_a_user_error():
    with pytest.raises(UserError, match="No file is inside a folder named 'val'"):
        apply_split_rule(SplitRule(kind="folder", valid_name="val"), ["train/3/a.png", "valid/3/b.png"], ["3", "3"])


def test_unknown_split_kind_is_a_user_error():
    with pytest.raises(UserError, match="Unknown split rule 'magic'"):
        apply_split_rule(SplitRule(kind="magic"), ["a.png"], ["a"])
