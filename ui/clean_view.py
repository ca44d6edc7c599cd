"""The Clean page's parts: the pending choices, a grid of images with a choice each, the three views, Apply and Undo.

Choices live in one place, `CLEAN_PENDING` = {"root": data set folder, "choices": {rel path: "delete" | new label}},
which every view reads and writes. Each run drops the choices of files that are no longer in the data set
(applied, undone, changed by another window) and sets every choice widget from the choices, so a widget left
over from an earlier run can neither bring a choice back nor lose one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
import torch

from engine.data.resolve import data_root
from engine.data.builtin import BUILTINS, builtin_path
from engine.data.clean import DELETE, KEEP, RELABEL, Change, apply_changes, history, reset_builtin, trash_dir, undo_last
from engine.data.loaders import LabelledItems, load_items, usable_counts
from engine.errors import UserError
from engine.data.images import PresizedImages
from engine.data.labels import LabelRule
from engine.spec import RunSpec
from ui.gallery import DISPLAY_PX, display_image
from ui.run_picker import pick_review
from ui.data_status import data_problem, run_spec
from ui.run_cache import run_loss_table
from ui.shared import presize_cache
from ui.state import (CLEAN_CONFIRM_RESET, CLEAN_HEALTH, CLEAN_HEALTH_PAGE, CLEAN_LABEL, CLEAN_MESSAGE, CLEAN_PAGE,
                      CLEAN_PENDING, CLEAN_PER_PAGE, CLEAN_SPLIT, CLEAN_VIEW, SessionKey, clean_choice)
from ui.text import md
from ui.train_view import ask_for_data

HARDEST, HEALTH, ISSUES = "hardest", "health", "issues"
VIEWS = {HARDEST: "Hardest images (a trained model)", HEALTH: "From the health check", ISSUES: "Likely wrong labels"}
TILE_PX = DISPLAY_PX + 8  # an image and its choice; tiles wrap onto more rows in a narrow window


@dataclass(frozen=True)
class Target:
    """The data set a view changes: its folder, how labels are read, and each item's label now."""

    root: Path
    rule: LabelRule
    labels: dict[str, str]  # rel path -> label, for every item in the data set now
    classes: list[str]


def items_target(root: Path, rule: LabelRule, items: LabelledItems) -> Target:
    return Target(Path(root), rule, dict(zip(items.rel_paths, items.labels)), list(items.classes))


def same_folder(a: str | Path | None, b: str | Path | None) -> bool:
    """Whether two paths name the same folder (however they are written)."""
    if not a or not b:
        return False
    return os.path.realpath(Path(a).expanduser()) == os.path.realpath(Path(b).expanduser())


# ---------------------------------------------------------------- the pending choices

def drop_stale_choices(choices: dict[str, str], labels: dict[str, str]) -> list[str]:
    """Remove the choices that mean nothing now (file gone, no action, relabel to its own label); return them."""
    stale = [rel for rel, value in choices.items()
             if rel not in labels or not isinstance(value, str) or value in (KEEP, "") or value == labels[rel]]
    for rel in stale:
        del choices[rel]
    return stale


def pending_choices(target: Target) -> dict[str, str]:
    """This window's choices for the target's data set (a new, empty set when it is another one), stale ones dropped."""
    pending = CLEAN_PENDING.get()
    if not isinstance(pending, dict) or not same_folder(pending.get("root"), target.root) \
            or not isinstance(pending.get("choices"), dict):
        pending = {"root": str(target.root), "choices": {}}
        CLEAN_PENDING.set(pending)
    drop_stale_choices(pending["choices"], target.labels)
    return pending["choices"]


def remember(root: str, rel: str) -> None:
    """A choice widget changed: record it (a widget of another data set or with no value is ignored)."""
    value, pending = clean_choice(rel).get(), CLEAN_PENDING.get()
    if not isinstance(value, str) or not isinstance(pending, dict) or not same_folder(pending.get("root"), root):
        return
    choices = pending.setdefault("choices", {})
    if value == KEEP:
        choices.pop(rel, None)
    else:
        choices[rel] = value  # a file that has gone meanwhile is dropped on the next run


def adopt_health_handoff() -> None:
    """The Data page's health check handed over its list: keep the list, pre-fill the choices, open its view."""
    pending = CLEAN_PENDING.get()
    if not isinstance(pending, dict) or pending.get("source") != "health":
        return
    listed = {str(rel): str(value) for rel, value in (pending.get("choices") or {}).items()}
    CLEAN_HEALTH.set({"root": str(pending.get("root") or ""), "choices": listed})
    CLEAN_PENDING.set({"root": str(pending.get("root") or ""),
                       "choices": {rel: value for rel, value in listed.items() if value != KEEP}})
    CLEAN_HEALTH_PAGE.set(1)
    CLEAN_VIEW.set(HEALTH)


def choice_name(option: str) -> str:
    return {KEEP: "keep", DELETE: "delete"}.get(option, f"relabel → {option}")


# ---------------------------------------------------------------- drawing

def choice_grid(target: Target, choices: dict[str, str], images: torch.Tensor, rels: list[str], captions: list[str],
                key: str) -> None:
    """Images ([n, 3, H, W] in [0, 1]) in tiles that wrap, each captioned, with a keep / delete / relabel choice."""
    with st.container(key=key, horizontal=True, gap="small"):
        for x, rel, caption in zip(images, rels, captions):
            with st.container(width=TILE_PX, gap=None):
                st.image(display_image(x), caption=md(caption), width=DISPLAY_PX)  # captions read Markdown
                value = choices.get(rel, KEEP)
                options = [KEEP, DELETE] + [c for c in target.classes if c not in (KEEP, DELETE, target.labels[rel])]
                if value not in options:  # a new class name handed over by the health check
                    options.append(value)
                choice = clean_choice(rel)
                choice.set(value)  # from the choices, every run
                st.selectbox("Action", options, key=choice.key, label_visibility="collapsed", format_func=choice_name,
                             on_change=remember, args=(str(target.root), rel))


def page_of(n: int, per_page: int, page: SessionKey[int], where=st) -> slice:
    """A page number input (when there is more than one page) and the rows of the page it shows."""
    pages = max(1, (n - 1) // per_page + 1)
    page.set(min(max(page.get(), 1), pages))
    number = where.number_input(f"Page (of {pages})", 1, pages, key=page.key) if pages > 1 else 1
    return slice((number - 1) * per_page, number * per_page)


def per_page_box(where=st) -> int:
    return where.selectbox("Per page", [12, 24, 48], key=CLEAN_PER_PAGE.key)


def pager(n: int, page: SessionKey[int]) -> slice:
    """Images per page and the page number side by side; the rows of the page shown."""
    c1, c2, _ = st.columns([1, 1, 2])
    return page_of(n, per_page_box(c1), page, c2)


def presized(spec: RunSpec, items: LabelledItems) -> PresizedImages:
    """The data set's presized pixels, from the cache the other pages share."""
    with st.spinner("Reading the images…"):
        return presize_cache().get(items.scanned_paths, spec.data.presize, spec.data.presize_method)


def readable_count(spec: RunSpec, items: LabelledItems) -> int:
    """Labelled images that can be read, as every page counts them."""
    counts = usable_counts(items, presized(spec, items))
    return counts.n_train + counts.n_valid


def thumbnails(spec: RunSpec, items: LabelledItems, rels: list[str]) -> tuple[torch.Tensor, np.ndarray]:
    """The items' presized pixels as [n, 3, P, P] in [0, 1], and whether each could be read."""
    images = presized(spec, items)
    index = {rel: i for i, rel in enumerate(items.rel_paths)}
    rows = np.array([items.image_index[index[rel]] for rel in rels], dtype=np.int64)
    if not len(rows):
        return torch.zeros(0, 3, images.size, images.size), np.zeros(0, dtype=bool)
    return torch.as_tensor(images.pixels[rows]).float() / 255, images.ok[rows]


def draft_data() -> tuple[RunSpec, LabelledItems, Target] | None:
    """The draft's data set (the health check's and the likely-wrong-labels views use it); None, said, if unusable."""
    spec = run_spec()
    if spec is None:
        ask_for_data(data_problem())
        return None
    try:
        items = load_items(spec.data)
    except (UserError, OSError) as e:
        st.error(md(e))
        return None
    return spec, items, items_target(data_root(spec.data), spec.data.label, items)


# ---------------------------------------------------------------- the views

def hardest_view() -> Target:
    """A trained model's hardest images of one class and split, largest loss first (stops the page without a run)."""
    st.caption("The images the model finds hardest come first: wrong labels and odd pictures hide there.")
    run, review = pick_review()
    config = review.config
    if config.split.kind == "random":
        st.caption("This data set uses a random split, drawn from the list of files as fastai does: deleting or "
                   "relabelling images changes which images validate. Compare runs trained after the same cleaning.")
    target = items_target(data_root(config), config.label, review.dls.items)
    choices = pending_choices(target)
    classes = target.classes
    c1, c2, c3 = st.columns([2, 1, 1])
    if CLEAN_LABEL.get() not in classes:
        CLEAN_LABEL.set(classes[0])
    label = c1.selectbox("Class", classes, key=CLEAN_LABEL.key)
    split = c2.segmented_control("Split", ["train", "valid"], key=CLEAN_SPLIT.key, default="train", required=True)
    per_page = per_page_box(c3)
    table = run_loss_table(run, split, label)
    if table.empty:
        st.info(f"There are no {split} images labelled {md(label)}.")
        return target
    shown = table.iloc[page_of(len(table), per_page, CLEAN_PAGE)]
    st.caption(f"{len(table):,} {split} image(s) labelled **{md(label)}**, largest loss first. "
               "Each shows the model's prediction, its probability and the loss.")
    captions = [f"{r.item.rsplit('/', 1)[-1]} · {r.predicted} {r.probability:.2f} · loss {r.loss:.2f}"
                for r in shown.itertuples()]
    images = review.images(shown["pos"].tolist())
    choice_grid(target, choices, images, shown["item"].tolist(), captions, "gallery-clean")
    return target


def health_view() -> Target | None:
    """The images the Data page's health check handed over, each with the choice it suggested."""
    listed = CLEAN_HEALTH.get()
    if not listed:
        st.info("Run the health check on the Data page: the images it finds (duplicates, label conflicts, leaks, "
                "unreadable files) come here with a suggested action each.")
        st.page_link("pages/data.py", label="Go to Data", icon=":material/photo_library:")
        return None
    data = draft_data()
    if data is None:
        return None
    spec, items, target = data
    if not same_folder(listed["root"], target.root):
        st.info(f"The health check's list is for another data set ({md(listed['root'])}); choose it on the Data page, "
                "or run the health check on this one.")
        return None
    if not same_folder((CLEAN_PENDING.get() or {}).get("root"), target.root):  # another view's data set came between
        CLEAN_PENDING.set({"root": str(target.root),
                           "choices": {rel: v for rel, v in listed["choices"].items() if v != KEEP}})
    choices = pending_choices(target)
    rels = [rel for rel in listed["choices"] if rel in target.labels]
    gone = len(listed["choices"]) - len(rels)
    marked = sum(listed["choices"][rel] == DELETE for rel in rels)
    st.caption(f"{len(rels):,} image(s) from the health check: {marked:,} marked for deletion (exact extra copies), "
               "the others unmarked for you to decide; change any of them."
               + (f" {gone:,} listed image(s) are no longer in the data set." if gone else ""))
    if not rels:
        return target
    shown = rels[pager(len(rels), CLEAN_HEALTH_PAGE)]
    images, ok = thumbnails(spec, items, shown)
    captions = [f"{rel} · {target.labels[rel]}" + ("" if good else " · unreadable")  # the path: two a.png differ
                for rel, good in zip(shown, ok)]
    choice_grid(target, choices, images, shown, captions, "gallery-clean-health")
    return target


# ---------------------------------------------------------------- apply, undo, reset

def apply_bar(target: Target, choices: dict[str, str]) -> None:
    """Apply or discard the pending choices."""
    changes = [Change(rel, DELETE) if v == DELETE else Change(rel, RELABEL, v) for rel, v in sorted(choices.items())]
    c1, c2, c3 = st.columns([1, 1, 3])
    if c1.button(f"Apply {len(changes)} change(s)", type="primary", disabled=not changes, key="clean.apply"):
        try:
            batch = apply_changes(target.root, target.rule, changes)
        except UserError as e:
            st.error(md(e))
        else:
            choices.clear()
            CLEAN_MESSAGE.set(f"{batch.summary}. Scores and the Interpret page now use the cleaned data.")
            st.rerun()
    if c2.button("Discard choices", disabled=not changes, key="clean.discard"):
        choices.clear()
        st.rerun()
    if changes:
        deletes = sum(c.action == DELETE for c in changes)
        c3.caption(f"Pending: {deletes} to delete, {len(changes) - deletes} to relabel "
                   "(kept while you browse other classes, pages and views).")


def history_panel(root: Path) -> None:
    """Every change applied to the data set, and Undo for the last one."""
    done = history(root)
    last = next((b for b in done if not b.undone), None)
    st.subheader("Changes")
    if last is None:
        st.caption("No changes yet." if not done else "Every change has been undone.")
    elif st.button(f"Undo: {md(last.summary)}", key="clean.undo", icon=":material/undo:"):
        try:
            undone = undo_last(root)
        except UserError as e:
            st.error(md(e))
        else:
            CLEAN_MESSAGE.set(f"Undone: {undone.summary}.")
            st.rerun()
    if done:
        st.dataframe(pd.DataFrame({
            "change": [b.id for b in done],
            "when": [pd.Timestamp(b.time, unit="s").floor("s") for b in done],
            "what": [b.summary for b in done],
            "undone": [b.undone for b in done],
        }), hide_index=True, key="clean.history")
        st.caption(f"Deleted images and the log are kept in {md(trash_dir(root))}.")


def reset_panel(root: Path) -> None:
    """For a built-in data set: make it again from scikit-learn's digits (after a confirmation)."""
    builtin = next((key for key in BUILTINS if same_folder(builtin_path(key), root)), None)
    if builtin is None:
        return
    st.subheader("Reset")
    if not CLEAN_CONFIRM_RESET.get():
        if st.button(f"Reset “{md(BUILTINS[builtin].title)}” to its original images…", key="clean.reset"):
            CLEAN_CONFIRM_RESET.set(True)
            st.rerun()
        return
    st.warning("Make the built-in data set again from scikit-learn's digits? "
               "The cleaned folder moves to Loupe's trash.")
    c1, c2, _ = st.columns([1, 1, 4])
    if c1.button("Yes, reset", type="primary", key="clean.reset_yes"):
        reset_builtin(builtin)
        CLEAN_CONFIRM_RESET.clear()
        CLEAN_MESSAGE.set(f"{BUILTINS[builtin].title} is back to its original 1,797 images.")
        st.rerun()
    if c2.button("Cancel", key="clean.reset_no"):
        CLEAN_CONFIRM_RESET.clear()
        st.rerun()
