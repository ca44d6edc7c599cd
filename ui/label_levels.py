"""The Data page's level chooser: each folder level (and the name regex) with its classes and a few pictures of each."""
from __future__ import annotations

import os

import numpy as np
import streamlit as st

from engine.data.images import fit_to_box, open_image
from engine.data.label_levels import LevelOption, guess_level, label_options
from engine.data.labels import LabelRule
from engine.data.sources import FolderScan
from engine.spec import NAME_PATTERN
from ui.draft import update_draft
from ui.text import md, md_list

THUMB_PX = 64
GAP_PX = 4  # between a class's pictures; a light frame with PAD_PX of white inside holds them together
PAD_PX = 4
FRAME = (214, 214, 214)
CLASSES_SHOWN = 6  # the largest classes of a level get thumbnails
PER_CLASS = 2


@st.cache_data(max_entries=4096, show_spinner=False)
def _thumbnail(path: str, mtime_ns: int) -> np.ndarray | None:
    """A small RGB copy of a picture (None: it cannot be read); `mtime_ns` makes a changed file load again."""
    try:
        return np.asarray(fit_to_box(open_image(path, draft=THUMB_PX), THUMB_PX))
    except (ValueError, OSError):
        return None


def thumbnail(path: str) -> np.ndarray | None:
    """The thumbnail of a picture as it is on disk now."""
    try:
        return _thumbnail(path, os.stat(path).st_mtime_ns)
    except OSError:
        return None


def strip(thumbs: list[np.ndarray]) -> np.ndarray:
    """A class's example thumbnails side by side on white in a light frame, each centred in its THUMB_PX square, so
    one caption under them has their whole width (a class name under a single 64 px picture broke mid-word)."""
    width = len(thumbs) * (THUMB_PX + GAP_PX) - GAP_PX + 2 * PAD_PX
    out = np.full((THUMB_PX + 2 * PAD_PX, width, 3), 255, dtype=np.uint8)
    out[[0, -1], :] = FRAME
    out[:, [0, -1]] = FRAME
    for i, thumb in enumerate(thumbs):
        h, w = thumb.shape[:2]
        top, left = PAD_PX + (THUMB_PX - h) // 2, PAD_PX + i * (THUMB_PX + GAP_PX) + (THUMB_PX - w) // 2
        out[top:top + h, left:left + w] = thumb
    return out


@st.cache_data(max_entries=8, show_spinner=False)
def _options(rel_lines: str, regexes: tuple[tuple[str, str], ...]) -> tuple[list[LevelOption], int | None, str]:
    """The options for these files, the index of the guessed one, and why it was guessed.

    The relative paths come joined by NUL, which no path holds: one string hashes much faster than a tuple.
    """
    rels = rel_lines.split("\0")
    options = label_options(rels, [LabelRule(kind="regex", pattern=p, on=on) for p, on in regexes],
                            n_examples=PER_CLASS)
    options = [o for o in options if o.n_labelled]
    guessed, why = guess_level(options, rels)
    return options, next((i for i, o in enumerate(options) if o is guessed), None), why


def same_rule(a: LabelRule, b: LabelRule) -> bool:
    """Whether two rules read the same labels (the fields a kind does not use are ignored)."""
    if a.kind != b.kind:
        return False
    return (a.pattern, a.on) == (b.pattern, b.on) if a.kind == "regex" else a.kind != "csv" or a == b


def _key(option: LevelOption) -> str:
    return "data.level." + option.title.lower().replace(" ", "-")


def _option_row(option: LevelOption, in_use: bool, guessed: bool, same_as: str | None, root, n_files: int) -> None:
    left, right = st.columns([2, 5], vertical_alignment="top")
    with left:
        st.markdown(f"**{option.title}**" + (" · Loupe's guess" if guessed else ""))
        st.caption(f"{option.n_classes:,} class{'es' if option.n_classes != 1 else ''} · "
                   f"{option.n_labelled:,} of {n_files:,} pictures labelled")
        if in_use:
            st.button("In use", key=_key(option), disabled=True)
        else:
            st.button("Use this", key=_key(option), on_click=update_draft, args=({"data.label": option.rule},))
    with right:
        if same_as:
            st.caption(f"Reads every picture as the {same_as.lower()} does.")
            return
        if option.nested is not None:
            outer, inner = option.nested
            st.warning(f"Classes lie inside other classes: {md(inner)} is inside {md(outer)}, so one picture's class "
                       "depends on how deep it lies.", icon=":material/account_tree:")
        elif option.n_classes < 2:
            st.caption("One class only: nothing to tell apart.")
        shown = []  # (class, its examples side by side)
        for c in list(option.class_counts)[:CLASSES_SHOWN]:
            thumbs = [t for rel in option.examples[c] if (t := thumbnail(str(root / rel))) is not None]
            if thumbs:
                shown.append((c, strip(thumbs)))
        if shown:  # captions read Markdown
            st.image([t for _, t in shown], caption=[md(c) for c, _ in shown], width="content")
        if option.n_classes > CLASSES_SHOWN:
            rest = list(option.class_counts)[CLASSES_SHOWN:]
            st.caption(f"… and {len(rest):,} more: " + md_list(rest, limit=8))


def label_level_chooser(scan: FolderScan, current: LabelRule) -> None:
    """Every folder level (and the file-name regex) with its number of classes and example pictures; one click uses it."""
    cut = len(str(scan.root)) + 1  # the scan's images all lie under its root: slicing is cheaper than relative_to
    rel_lines = "\0".join(str(p)[cut:] for p in scan.images).replace(os.sep, "/")
    # the name regex Loupe knows (a pattern being typed is tried by the live tester alone: it may be slow)
    options, guessed, why = _options(rel_lines, ((NAME_PATTERN, "name"),))
    folders = [o for o in options if o.is_folder]
    if not folders:
        return  # every picture lies in the data folder itself: no level to choose
    readings = {tuple(o.labels) for o in folders}
    with st.expander("Which folder level holds the classes?", expanded=len(readings) > 1), st.container(key="data.levels"):
        st.caption(md(why))
        seen: dict[tuple, str] = {}
        for i, option in enumerate(options):
            same_as = seen.setdefault(tuple(option.labels), option.title) if option.is_folder else None
            _option_row(option, same_rule(option.rule, current), i == guessed,
                        same_as if same_as != option.title else None, scan.root, len(scan.images))
