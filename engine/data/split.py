"""Split rules: which items train and which validate. Each returns an array of 'train' / 'valid' / ''.

'' marks an item a rule leaves out (e.g. a file in neither the train nor the valid folder).
"""
from __future__ import annotations

from pathlib import PurePosixPath
from typing import Sequence

import numpy as np
import torch

from engine.errors import UserError
from engine.spec import SPLIT_KINDS, SplitRule  # the schema owns the rule; re-exported here

TRUE_WORDS = frozenset({"1", "true", "yes", "y", "t", "valid", "validation"})


def _cut(perm: np.ndarray, valid_pct: float) -> tuple[np.ndarray, np.ndarray]:
    cut = int(valid_pct * len(perm))
    return perm[cut:], perm[:cut]


def random_splitter(n: int, valid_pct: float = 0.2, seed: int | None = 42, labels: Sequence[str] | None = None) -> np.ndarray:
    """fastai's RandomSplitter: a seeded permutation, the first int(valid_pct·n) validate.

    Uses torch.randperm with a generator seeded like fastai's torch.manual_seed(seed), so the same
    seed picks the same validation items as fastai. With `labels`, each class is split on its own
    (stratified), so every class keeps about valid_pct of its items in validation.
    """
    if not 0 <= valid_pct < 1:
        raise UserError(f"The validation share must be at least 0 and below 1 (got {valid_pct}).")
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    out = np.full(n, "train", dtype=object)
    if labels is None:
        _, valid = _cut(torch.randperm(n, generator=gen).numpy(), valid_pct)
        out[valid] = "valid"
        return out
    labels = np.asarray(labels, dtype=object)
    for cls in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == cls)
        perm = members[torch.randperm(len(members), generator=gen).numpy()]
        cut = int(round(valid_pct * len(perm)))
        out[perm[:cut]] = "valid"
    return out


def grandparent_splitter(rel_paths: Sequence[str], train_name: str = "train", valid_name: str = "valid") -> np.ndarray:
    """fastai's GrandparentSplitter, a little looser: the top folder names the split (train/3/x.png → train).

    The first folder of the relative path that equals `train_name` or `valid_name` decides;
    items under neither are left out ('').
    """
    out = np.full(len(rel_paths), "", dtype=object)
    for i, rel in enumerate(rel_paths):
        for part in PurePosixPath(rel).parts[:-1]:
            if part == valid_name:
                out[i] = "valid"
                break
            if part == train_name:
                out[i] = "train"
                break
    return out


def col_splitter(values: Sequence[object]) -> np.ndarray:
    """fastai's ColSplitter: a true value (True, 1, 'yes', 'valid'…) validates, anything else trains."""
    def is_true(v: object) -> bool:
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        return str(v).strip().lower() in TRUE_WORDS

    return np.array(["valid" if is_true(v) else "train" for v in values], dtype=object)


def apply_split_rule(rule: SplitRule, rel_paths: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Split labelled items (in order) with a rule; returns 'train' / 'valid' / '' per item."""
    if rule.kind == "random":
        return random_splitter(len(rel_paths), rule.valid_pct, rule.seed, labels if rule.stratify else None)
    if rule.kind == "folder":
        out = grandparent_splitter(rel_paths, rule.train_name, rule.valid_name)
        if not (out == "valid").any():
            raise UserError(
                f"No file is inside a folder named '{rule.valid_name}', so there is nothing to validate on. "
                "Check the folder names, or choose a random split."
            )
        return out
    if rule.kind == "csv":
        from engine.data.labels import read_label_csv  # one CSV reader for labels and splits

        df = read_label_csv(rule.csv_path, [rule.file_col, rule.valid_col])
        keys = df[rule.file_col].astype(str).str.strip().str.replace("\\", "/").str.removeprefix("./")
        has_paths = keys.str.contains("/").any()
        by_key = dict(zip(keys, df[rule.valid_col]))
        looked_up = [by_key.get(rel if has_paths else PurePosixPath(rel).name) for rel in rel_paths]
        out = col_splitter(["" if v is None else v for v in looked_up])
        out[[v is None for v in looked_up]] = ""
        return out
    raise UserError(f"Unknown split rule {rule.kind!r}; choose one of {', '.join(SPLIT_KINDS)}.")
