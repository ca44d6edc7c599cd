"""Which folder level holds the classes: each level's classes and examples, and the guess for a nested folder.

A collection in nested folders can be read at several levels: the top-level folder, the grandparent or the
parent folder of each file (and, under one wrapping folder, the level below it). The guess follows one rule:

1. A level is *admissible* only if it gives at least two classes and no class folder lies inside another class
   folder. On `animals/cat1.png` + `animals/birds/owl.png` the parent folder makes both `animals` and `birds`
   classes although `birds` lies inside `animals`: refused. (Classes met in several folders, as Tango's
   `16x16/actions` and `32x32/actions`, are fine.)
2. Of the admissible levels the highest wins: top-level folder, then the level under a wrapping folder, then
   grandparent, then parent: category/subcategory collections are read by their categories, however deep a
   picture lies.
3. Except when the top level is a *facet*: every top-level folder holds mostly the same subfolders (the same
   categories again) and every top-level name has a digit in it (sizes such as `16x16`, years, versions), or
   the top-level folders are `train/` and `valid/` (a split). Then
   the top level, and any level that reads the files as it does, is skipped: Tango's `<size>/<category>/` is read
   by the category. (If no other level is admissible, the top level is the guess after all.)
4. A level that labels every file as the parent folder does is named the parent folder (fastai's parent_label).

No admissible level: no guess; `guess_rule` then falls back on the parent folder, or the top-level folder when
the parent's classes nest (a top-level folder never lies inside another).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Sequence

from engine.errors import UserError
from engine.data.labels import LabelRule, apply_label_rule

VALID_FOLDER_NAMES = ("valid", "val", "validation", "test")  # with train/: a split, not classes
FACET_SHARE = 0.5  # a top folder holds at least this share of all subfolder names, on average: the layout is crossed


@dataclass(frozen=True)
class LevelOption:
    """What one label rule makes of a folder: its classes, a few files of each, and whether classes nest."""

    title: str  # "Top-level folder", "Parent folder", ...
    rule: LabelRule
    labels: list[str | None] = field(repr=False)
    class_counts: dict[str, int]  # largest first
    examples: dict[str, list[str]]  # class -> a few relative paths, spread over the class's files
    nested: tuple[str, str] | None = None  # (a class folder, a class folder inside it), when classes nest
    is_folder: bool = True  # a folder level (False: a regex on the names, offered beside the levels)

    @property
    def n_classes(self) -> int:
        return len(self.class_counts)

    @property
    def n_labelled(self) -> int:
        return sum(self.class_counts.values())

    @property
    def admissible(self) -> bool:
        """At least two classes, none inside another."""
        return self.n_classes >= 2 and self.nested is None


def _wrapper_depth(parts: list[tuple[str, ...]]) -> int:
    """How many folders every file in a subfolder lies under in common (`photos/…` alone at the top: 1)."""
    folders = [p[:-1] for p in parts if len(p) >= 2]
    if not folders:
        return 0
    depth = 0
    while all(len(f) > depth for f in folders) and len({f[depth] for f in folders}) == 1:
        depth += 1
    return depth


def _level_index(kind: str, n_parts: int, depth: int = 0) -> int | None:
    """Which of a path's parts names its class at this level (None: the level does not label the file)."""
    if kind == "top-folder":
        return 0 if n_parts >= 2 else None
    if kind == "depth":
        return depth if n_parts >= depth + 2 else None
    if kind == "grandparent":
        return n_parts - 3 if n_parts >= 3 else None
    return n_parts - 2 if n_parts >= 2 else None  # parent folder


def depth_rule(depth: int) -> LabelRule:
    """A path regex that reads the folder `depth` levels below the top (0: the top-level folder)."""
    return LabelRule(kind="regex", pattern="^" + "[^/]+/" * depth + "([^/]+)/", on="path")


def _spread(files: list[str], n: int) -> list[str]:
    """Up to n of the files, evenly spread (first, last and between), so examples come from several subfolders."""
    if len(files) <= n or n <= 1:
        return list(files[:max(n, 0)])
    return [files[round(i * (len(files) - 1) / (n - 1))] for i in range(n)]


def _nested_pair(folders: set[str]) -> tuple[str, str] | None:
    """A class folder with another class folder inside it, if there is one (the outer one first)."""
    for folder in sorted(folders):
        parts = folder.split("/")
        for cut in range(1, len(parts)):
            outer = "/".join(parts[:cut])
            if outer in folders:
                return outer, folder
    return None


def _option(title: str, rule: LabelRule, rel_paths: Sequence[str], labels: list[str | None],
            class_folders: set[str] | None, n_examples: int) -> LevelOption:
    """The option a rule's labels make (class_folders None: not a folder level)."""
    counts = Counter(label for label in labels if label is not None)
    files: dict[str, list[str]] = defaultdict(list)
    for rel, label in zip(rel_paths, labels):
        if label is not None:
            files[label].append(rel)
    ordered = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return LevelOption(title=title, rule=rule, labels=labels, class_counts=ordered,
                       examples={c: _spread(files[c], n_examples) for c in ordered},
                       nested=_nested_pair(class_folders) if class_folders else None,
                       is_folder=class_folders is not None)


def folder_levels(rel_paths: Sequence[str], n_examples: int = 3) -> list[LevelOption]:
    """The folder levels a data set can be labelled by, highest first: top-level, [under a wrapping folder],
    grandparent, parent."""
    parts = [PurePosixPath(rel).parts for rel in rel_paths]
    wrapper = _wrapper_depth(parts)
    kinds = [("Top-level folder", "top-folder", LabelRule(kind="top-folder"))]
    if wrapper:
        kinds.append((f"Folder {wrapper + 1} levels down", "depth", depth_rule(wrapper)))
    kinds += [("Grandparent folder", "grandparent", LabelRule(kind="grandparent")),
              ("Parent folder", "folder", LabelRule(kind="folder"))]
    options = []
    for title, kind, rule in kinds:
        labels: list[str | None] = []
        folders: set[str] = set()
        for p in parts:
            i = _level_index(kind, len(p), wrapper)
            labels.append(None if i is None else p[i])
            if i is not None:
                folders.add("/".join(p[:i + 1]))
        options.append(_option(title, rule, rel_paths, labels, folders, n_examples))
    return options


def label_options(rel_paths: Sequence[str], extra_rules: Sequence[LabelRule] = (), n_examples: int = 3) -> list[LevelOption]:
    """The folder levels, then each extra rule (e.g. a regex on the file name) that labels at least one file."""
    options = folder_levels(rel_paths, n_examples)
    for rule in extra_rules:
        if any(option.rule == rule for option in options):
            continue
        try:
            report = apply_label_rule(rule, rel_paths)
        except UserError:
            continue  # a broken pattern: the rule's own field says what is wrong
        if report.n_matched:
            title = "Regex on the file name" if rule.on == "name" else "Regex on the relative path"
            options.append(_option(title, rule, rel_paths, report.labels, None, n_examples))
    return options


def top_is_facet(rel_paths: Sequence[str]) -> bool:
    """Whether the top-level folders are versions of one set (the same subfolders in each, names with digits)."""
    subfolders: dict[str, set[str]] = defaultdict(set)
    for rel in rel_paths:
        parts = PurePosixPath(rel).parts
        if len(parts) >= 3:
            subfolders[parts[0]].add(parts[1])
    every = set().union(*subfolders.values()) if subfolders else set()
    if len(subfolders) < 2 or len(every) < 2:
        return False
    share = sum(len(names) for names in subfolders.values()) / (len(subfolders) * len(every))
    split = "train" in subfolders and any(name in subfolders for name in VALID_FOLDER_NAMES)
    return share >= FACET_SHARE and (split or all(any(ch.isdigit() for ch in top) for top in subfolders))


def _same_reading(a: list[str | None], b: list[str | None]) -> bool:
    """Whether two levels give the same class to every file both label (one may label fewer files)."""
    return all(x == y for x, y in zip(a, b) if x is not None and y is not None)


def guess_level(options: Sequence[LevelOption], rel_paths: Sequence[str]) -> tuple[LevelOption | None, str]:
    """The folder level the classes most likely are (see the module's rule), and why, in a sentence for the user."""
    folder_options = [o for o in options if o.is_folder]
    by_kind = {o.rule.kind: o for o in folder_options}
    top, parent = by_kind.get("top-folder"), by_kind.get("folder")
    facet = top is not None and top_is_facet(rel_paths)
    candidates = [o for o in folder_options if not (facet and _same_reading(o.labels, top.labels))]
    chosen = next((o for o in candidates if o.admissible), None) or next((o for o in folder_options if o.admissible), None)
    facet = facet and chosen is not top
    if chosen is None:
        return None, "No folder level gives two or more classes that do not lie inside each other."
    if parent is not None and chosen is not parent and chosen.labels == parent.labels:
        chosen = parent
    refused = [o for o in folder_options if o.nested is not None and o.n_classes >= 2]
    why = [f"The {chosen.title.lower()} gives {chosen.n_classes:,} classes"]
    if facet:
        why.append(f"the top-level folders ({', '.join(sorted(top.class_counts)[:4])}) each hold the same subfolders "
                   "and are named like sizes, versions or a train/valid split, so they are not the classes")
    for o in refused:
        outer, inner = o.nested
        why.append(f"the {o.title.lower()} would put classes inside others ('{inner}' lies inside '{outer}')")
    others = [o for o in folder_options if o.admissible and not _same_reading(o.labels, chosen.labels)]
    sure = ("Other levels also give classes that do not nest: compare them." if others
            else "No other folder level gives other classes without nesting them.")
    return chosen, "; ".join(why) + ". " + sure


def guess_rule(rel_paths: Sequence[str]) -> LabelRule:
    """The folder rule for these files: the guessed level, else the parent folder, else the top-level folder."""
    levels = folder_levels(rel_paths, n_examples=0)
    chosen, _ = guess_level(levels, rel_paths)
    if chosen is not None:
        return chosen.rule
    parent = levels[-1]
    return parent.rule if parent.nested is None else levels[0].rule
