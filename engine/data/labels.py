"""Label rules: a regex on the file name or relative path, the parent folder, or a CSV column.

Every rule is a function of an item's path relative to the data set root (posix form, e.g.
"train/7/12.png"), returning the label or None when the rule does not apply to that item.
"""
from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import reduce
from operator import mul
from pathlib import Path, PurePosixPath
from typing import Sequence

import pandas as pd
import regex  # like `re`, but matching can be given a timeout (a pathological pattern must not hang the app)

from engine.errors import UserError, plain_reason
from engine.spec import LABEL_KINDS, LabelRule  # the schema owns the rule; re-exported here

REGEX_TIME_BUDGET_S = 1.5  # for labelling a whole data set; the page must answer within ~2 s
# regex.compile unrolls counted repeats: (a{1000}){1000} costs it ~0.35 s and ~270 MB, and
# ((a{1000}){1000}){1000} grows the server past 8 GB. Patterns are measured before compiling.
MAX_PATTERN_CHARS = 2_000
MAX_REPEAT_COUNT = 10_000  # far more than any file name or path needs
MAX_PATTERN_SIZE = 100_000  # items once repeats are multiplied out: compiles in ~0.03 s and ~40 MB
SIMPLE_EXAMPLE = "^(.+)_\\d+\\.png$"


def _parse_tree(pattern: str) -> object:
    """regex's own parse tree of the pattern, without compiling it (nothing is unrolled yet)."""
    from regex import _regex_core as core  # private, so pattern_size falls back to a rougher bound if it changes

    flags = 0
    for _ in range(4):  # a flag such as (?x) met mid-pattern makes regex parse again with it set, as compile does
        source = core.Source(pattern)
        info = core.Info(flags, source.char_type, {})
        source.ignore_space = bool(info.flags & regex.VERBOSE)
        try:
            return core._parse_pattern(source, info)
        except core._UnscopedFlagSet:
            flags = info.global_flags
    raise TypeError("the pattern's flags did not settle")


def _tree_size(node: object) -> tuple[int, int]:
    """(items once repeats are multiplied out, largest repeat count) of a parse tree."""
    from regex import _regex_core as core

    if isinstance(node, core.GreedyRepeat):  # also LazyRepeat and PossessiveRepeat
        count = node.min_count if node.max_count is None else node.max_count
        size, largest = _tree_size(node.subpattern)
        return max(count, 1) * size, max(count, largest)
    children = [child for value in vars(node).values()
                for child in (value if isinstance(value, (list, tuple)) else (value,))
                if isinstance(child, core.RegexBase)]
    if not children:
        return max(1, len(getattr(node, "characters", ()))), 0
    sizes = [_tree_size(child) for child in children]
    return sum(s for s, _ in sizes), max(c for _, c in sizes)


def _text_size(pattern: str) -> tuple[int, int]:
    """A bound on pattern_size from the text alone, as if every counted repeat held the whole pattern."""
    counts = [int(hi or lo or 0) for lo, hi in re.findall(r"\{(\d*)(?:,(\d*))?\}", pattern)]
    return len(pattern) * reduce(mul, (max(c, 1) for c in counts), 1), max(counts, default=0)


def pattern_size(pattern: str) -> tuple[int, int] | None:
    """(items once counted repeats are multiplied out, largest repeat count); None if the pattern does not parse."""
    try:
        return _tree_size(_parse_tree(pattern))
    except regex.error:
        return None  # regex.compile reports the mistake
    except RecursionError:
        raise UserError(f"The pattern nests groups too deeply to be read. Simplify it, e.g. {SIMPLE_EXAMPLE}") from None
    except (ImportError, AttributeError, TypeError, ValueError):
        return _text_size(pattern)  # regex's internals changed: a rougher bound that never underestimates


def check_pattern_size(pattern: str) -> None:
    """Refuse, before compiling, a pattern whose counted repeats would make compiling it take too much memory or time."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise UserError(f"The pattern is {len(pattern):,} characters long; Loupe accepts up to {MAX_PATTERN_CHARS:,}.")
    measured = pattern_size(pattern)
    if measured is None:
        return
    size, largest = measured
    if largest > MAX_REPEAT_COUNT:
        raise UserError(f"The pattern repeats something {largest:,} times; Loupe allows at most {MAX_REPEAT_COUNT:,} "
                        "(no file name or path is that long). Use + or * instead of a big {n}.")
    if size > MAX_PATTERN_SIZE:
        raise UserError(f"The pattern is too big to use: its repeats inside repeats multiply out to {size:,} "
                        f"characters (Loupe allows {MAX_PATTERN_SIZE:,}). Use + or * instead of nested {{n}} counts, "
                        f"e.g. {SIMPLE_EXAMPLE}")


def compile_pattern(pattern: str) -> regex.Pattern:
    """Compile a user's label pattern, checking it captures something and is safe to compile."""
    if not pattern.strip():
        raise UserError(f"The pattern is empty. Type a regular expression with one group in ( ), e.g. {SIMPLE_EXAMPLE}")
    check_pattern_size(pattern)
    try:
        compiled = regex.compile(pattern)
    except regex.error as e:
        where = f" at position {e.pos}" if getattr(e, "pos", None) is not None else ""
        raise UserError(f"That pattern is not a valid regular expression: {e.msg if hasattr(e, 'msg') else e}{where}.") from None
    except (ValueError, RecursionError) as e:  # conflicting flags such as (?V0V1); absurd nesting
        raise UserError(f"That pattern is not a valid regular expression ({e or 'nested too deeply'}).") from None
    if compiled.groups == 0:
        raise UserError(
            "The pattern has no group. Put the part that is the label in parentheses, "
            "e.g. ^(.+)_\\d+\\.png$ labels 'seven_12.png' as 'seven'."
        )
    return compiled


@dataclass(frozen=True)
class RegexLabeller:
    """fastai's RegexLabeller: the group named `label`, else the first group, of a match on the name or path."""

    pattern: str
    on: str = "name"  # "name" (file name only) or "path" (path relative to the data set root)

    def __post_init__(self) -> None:
        if self.on not in ("name", "path"):
            raise ValueError(f"RegexLabeller.on must be 'name' or 'path', not {self.on!r}")

    def label_all(self, rel_paths: Sequence[str], time_budget_s: float = REGEX_TIME_BUDGET_S) -> list[str | None]:
        """Label every path; raises UserError if the pattern needs more than the time budget."""
        compiled = compile_pattern(self.pattern)
        use_group = "label" if "label" in compiled.groupindex else 1
        # the budget counts this thread's CPU time: a busy machine (a training run, a test suite) slows the
        # labelling of a sane pattern down in wall-clock time, but never makes it look pathological
        start = time.thread_time()
        labels: list[str | None] = []
        for rel in rel_paths:
            target = PurePosixPath(rel).name if self.on == "name" else rel
            remaining = time_budget_s - (time.thread_time() - start)
            try:
                if remaining <= 0:
                    raise TimeoutError
                match = compiled.search(target, timeout=remaining)
            except TimeoutError:
                raise UserError(
                    f"This pattern takes too long to run (over {time_budget_s:g} s on {len(rel_paths):,} files), "
                    "probably because nested repeats such as (a+)+ make it backtrack. Simplify it, e.g. ^(.+)_\\d+\\.png$."
                ) from None
            value = match.group(use_group) if match else None
            labels.append(value if value else None)
        return labels


@dataclass(frozen=True)
class ParentLabeller:
    """fastai's parent_label: the name of the folder holding the file."""

    def label_all(self, rel_paths: Sequence[str]) -> list[str | None]:
        return [PurePosixPath(rel).parent.name or None for rel in rel_paths]


@dataclass(frozen=True)
class GrandparentLabeller:
    """The name of the folder two levels up (`pets/cats/indoor/x.jpg` → `cats`): classes with subfolders."""

    def label_all(self, rel_paths: Sequence[str]) -> list[str | None]:
        return [PurePosixPath(rel).parts[-3] if len(PurePosixPath(rel).parts) >= 3 else None for rel in rel_paths]


@dataclass(frozen=True)
class TopFolderLabeller:
    """The top-level folder under the data root (`cats/indoor/2019/x.jpg` → `cats`), however deep the file sits."""

    def label_all(self, rel_paths: Sequence[str]) -> list[str | None]:
        return [PurePosixPath(rel).parts[0] if len(PurePosixPath(rel).parts) >= 2 else None for rel in rel_paths]


@dataclass(frozen=True)
class CSVLabeller:
    """Labels from a CSV: one column names the file (name or path relative to the root), another holds the label."""

    csv_path: str
    file_col: str
    label_col: str

    def table(self) -> pd.DataFrame:
        return read_label_csv(self.csv_path, [self.file_col, self.label_col])

    def label_all(self, rel_paths: Sequence[str]) -> list[str | None]:
        return self.label_all_with_warnings(rel_paths)[0]

    def label_all_with_warnings(self, rel_paths: Sequence[str]) -> tuple[list[str | None], list[str]]:
        """Label every path, and say which files the CSV labels more than once (the first row wins)."""
        df = self.table()
        by_key: dict[str, str] = {}
        rows_of: dict[str, list[int]] = {}
        for row, (name, label) in enumerate(zip(df[self.file_col].astype(str), df[self.label_col])):
            if pd.isna(label) or str(label).strip() == "":
                continue
            key = name.strip().replace("\\", "/").removeprefix("./")
            by_key.setdefault(key, str(label).strip())
            rows_of.setdefault(key, []).append(row)
        has_paths = any("/" in k for k in by_key)
        labels = [by_key.get(rel if has_paths else PurePosixPath(rel).name) for rel in rel_paths]
        return labels, _duplicate_warnings(Path(self.csv_path).name, df[self.label_col], rows_of)


def _duplicate_warnings(csv_name: str, labels: pd.Series, rows_of: dict[str, list[int]], n_examples: int = 3) -> list[str]:
    """One warning naming the files that several rows label, with their spreadsheet row numbers and labels."""
    repeated = {key: rows for key, rows in rows_of.items() if len(rows) > 1}
    if not repeated:
        return []
    examples = [f"'{key}' (rows {', '.join(str(r + 2) for r in rows)}: "  # row 1 is the header
                f"{', '.join(str(labels.iloc[r]).strip() for r in rows)})"
                for key, rows in list(repeated.items())[:n_examples]]
    more = f" and {len(repeated) - n_examples:,} more" if len(repeated) > n_examples else ""
    return [f"{csv_name} has more than one row for {len(repeated):,} file{'s' if len(repeated) != 1 else ''}: "
            f"{'; '.join(examples)}{more}. Loupe uses the first row for each."]


def read_label_csv(csv_path: str | Path, needed: Sequence[str] = ()) -> pd.DataFrame:
    """Read a labels CSV, with user-facing errors for a missing file or missing columns."""
    path = Path(csv_path)
    if not path.is_file():
        raise UserError(f"The CSV file {path} does not exist.")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as e:
        raise UserError(f"Could not read {path.name} as a CSV file: {plain_reason(e)}.") from None
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise UserError(f"{path.name} has no column {', '.join(map(repr, missing))}. Its columns are: {', '.join(df.columns)}.")
    return df


def labeller_for(rule: LabelRule) -> RegexLabeller | ParentLabeller | GrandparentLabeller | TopFolderLabeller | CSVLabeller:
    """The labeller that applies a label rule."""
    if rule.kind == "regex":
        return RegexLabeller(rule.pattern, rule.on)
    if rule.kind == "folder":
        return ParentLabeller()
    if rule.kind == "grandparent":
        return GrandparentLabeller()
    if rule.kind == "top-folder":
        return TopFolderLabeller()
    if rule.kind == "csv":
        return CSVLabeller(rule.csv_path, rule.file_col, rule.label_col)
    raise UserError(f"Unknown label rule {rule.kind!r}; choose one of {', '.join(LABEL_KINDS)}.")


def parse_label_rule(text: str, root: str | Path | None = None) -> LabelRule:
    """The CLI form: `regex:PATTERN`, `path-regex:PATTERN`, `folder` (or `parent`), `grandparent`, `top-folder`,
    or `csv:FILE:COLUMN` (file column 'name')."""
    if text in ("folder", "parent"):
        return LabelRule(kind="folder")
    if text in ("grandparent", "top-folder"):
        return LabelRule(kind=text)
    if text.startswith("regex:"):
        return LabelRule(kind="regex", pattern=text[len("regex:"):], on="name")
    if text.startswith("path-regex:"):
        return LabelRule(kind="regex", pattern=text[len("path-regex:"):], on="path")
    if text.startswith("csv:"):
        file_and_col = text[len("csv:"):]
        csv_file, sep, column = file_and_col.rpartition(":")
        if not sep or not csv_file or not column:
            raise UserError("A CSV label rule looks like csv:FILE:COLUMN, e.g. csv:labels.csv:label")
        csv_path = Path(csv_file)
        if root is not None and not csv_path.is_absolute():
            csv_path = Path(root) / csv_path
        return LabelRule(kind="csv", csv_path=str(csv_path), file_col="name", label_col=column)
    raise UserError(f"Unknown label rule {text!r}: use regex:PATTERN, path-regex:PATTERN, folder, grandparent, "
                    "top-folder or csv:FILE:COLUMN.")


@dataclass
class LabelReport:
    """What a label rule made of a list of files: the live tester's figures."""

    labels: list[str | None]
    n_matched: int
    unmatched_examples: list[str] = field(default_factory=list)
    class_counts: dict[str, int] = field(default_factory=dict)  # largest first
    warnings: list[str] = field(default_factory=list)  # plain sentences, e.g. a CSV that names a file twice

    @property
    def n_unmatched(self) -> int:
        return len(self.labels) - self.n_matched

    @property
    def classes(self) -> list[str]:
        return sorted(self.class_counts)


def apply_label_rule(rule: LabelRule, rel_paths: Sequence[str], n_examples: int = 5) -> LabelReport:
    """Label every file and count matches, misses (with examples) and classes."""
    labeller = labeller_for(rule)
    if isinstance(labeller, CSVLabeller):
        labels, warnings = labeller.label_all_with_warnings(rel_paths)
    else:
        labels, warnings = labeller.label_all(rel_paths), []
    counts = Counter(label for label in labels if label is not None)
    unmatched = [rel for rel, label in zip(rel_paths, labels) if label is None][:n_examples]
    return LabelReport(
        labels=labels,
        n_matched=sum(counts.values()),
        unmatched_examples=unmatched,
        class_counts=dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        warnings=warnings,
    )
