"""A run spec resolved against the world: where its data is, what it is called, its source made ready (a built-in
written, a fastai set downloaded), and the automatic settings filled in (a folder scanned to guess its rules).

engine.spec is the schema alone; everything here may read LOUPE_HOME, scan a folder or download.
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from engine.data.builtin import BUILTINS, builtin_path, ensure_builtin
from engine.data.label_levels import VALID_FOLDER_NAMES, guess_rule
from engine.data.sources import FASTAI_DATASETS, FolderScan, dataset_path, download_dataset, is_downloaded, scan_folder
from engine.errors import UserError
from engine.spec import (NAME_PATTERN, AugSettings, DataSpec, LabelRule, RunSpec, SplitRule, check_builtin, default_lr,
                         default_presize, default_size)


def data_root(data: DataSpec) -> Path:
    """The folder holding the images (nothing is written or downloaded to answer this)."""
    if data.kind == "builtin":
        return builtin_path(data.key)
    if data.kind == "fastai":
        remote = FASTAI_DATASETS[data.key.upper()]
        return dataset_path(remote.key) / remote.image_subdir if remote.image_subdir else dataset_path(remote.key)
    return Path(data.source).expanduser()


def data_name(data: DataSpec) -> str:
    """What the user calls this data set."""
    if data.kind == "builtin":
        return BUILTINS[data.key].title
    if data.kind == "fastai":
        return data.key.upper()
    root = data_root(data)
    return root.name or str(root)


def suggest_rules(scan: FolderScan) -> tuple[LabelRule, SplitRule]:
    """Guess a label and split rule from a folder's layout, as a starting point the user can change.

    train/ and valid/ (or val/) folders → label by parent folder, split by those folders;
    names like `beagle_12.jpg` → regex on the name, random split; otherwise the folder level that
    engine.data.label_levels.guess_level picks (never classes inside other classes: a nested category/subcategory
    collection is read by its top-level folders, Tango's <size>/<category>/ by the parent), random split;
    the parent folder (or the top-level one, if the parent's classes nest) when no level fits.
    """
    rel = [p.relative_to(scan.root).as_posix() for p in scan.images]
    tops = {r.split("/", 1)[0] for r in rel if "/" in r}
    valid_name = next((v for v in VALID_FOLDER_NAMES if v in tops), None)
    if "train" in tops and valid_name:
        return LabelRule(kind="folder"), SplitRule(kind="folder", train_name="train", valid_name=valid_name)
    sample = [r.rsplit("/", 1)[-1] for r in rel[:: max(1, len(rel) // 200)]]
    named = sum(1 for name in sample if re.match(NAME_PATTERN, name))
    if sample and named >= 0.9 * len(sample):
        return LabelRule(kind="regex", pattern=NAME_PATTERN, on="name"), SplitRule(kind="random")
    return guess_rule(rel), SplitRule(kind="random")


def default_augment(data: DataSpec) -> AugSettings:
    """fastai's aug_transforms, without flips for the built-in digits (a mirrored digit is another shape)."""
    builtin = BUILTINS.get(data.key) if data.kind == "builtin" else None
    return builtin.aug if builtin is not None else AugSettings()


def check_source(source: str) -> None:
    """UserError for a built-in or fastai key that does not exist."""
    data = DataSpec(source=source)
    check_builtin(data)
    if data.kind == "fastai" and data.key.upper() not in FASTAI_DATASETS:
        raise UserError(f"Unknown fastai data set “{data.key}”. Choose one of: {', '.join(FASTAI_DATASETS)}.")


def prepare_source(spec: RunSpec, progress=None) -> Path:
    """Make the data folder exist: write a built-in set, download a fastai one (once); returns the folder."""
    check_source(spec.data.source)
    data = spec.data
    if data.kind == "builtin":
        return ensure_builtin(data.key)
    if data.kind == "fastai":
        download_dataset(data.key.upper(), progress=progress)
    return data_root(data)


def resolve(spec: RunSpec, scan: FolderScan | None = None, guess_rules: bool = True) -> RunSpec:
    """Fill every automatic (None) setting except the seed; a folder is scanned only if its rules must be guessed.

    A fastai data set that is not downloaded yet keeps its label and split rules automatic, and so does a
    folder with `guess_rules=False` (which never scans).
    """
    check_source(spec.data.source)
    data, augment, train = spec.data, spec.augment, spec.train
    builtin = BUILTINS.get(data.key) if data.kind == "builtin" else None
    label, split = data.label, data.split
    if builtin is not None:
        label, split = label or builtin.label_rule, split or builtin.split_rule
    elif (label is None or split is None) and guess_rules:
        if data.kind != "fastai" or is_downloaded(data.key.upper()):
            guessed = suggest_rules(scan or scan_folder(data_root(data)))
            label, split = label or guessed[0], split or guessed[1]
    size = data.size or default_size(data)
    data = replace(data, label=label, split=split, size=size, presize=data.presize or default_presize(size))
    train = replace(train, lr=train.lr if train.lr is not None else default_lr(train.schedule))
    return replace(spec, data=data, augment=augment or default_augment(data), train=train)
