"""Clean: go through the images a model finds hardest, and keep, delete (to a trash folder) or relabel them; undo any time."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from engine.builtin import BUILTINS, builtin_path
from engine.clean import DELETE, KEEP, RELABEL, Change, apply_changes, history, reset_builtin, trash_dir, undo_last
from engine.errors import UserError
from ui.frame import require_app_frame
from ui.gallery import DISPLAY_PX, display_image
from ui.run_picker import pick_review
from ui.text import md
from ui.state import (CLEAN_CONFIRM_RESET, CLEAN_LABEL, CLEAN_MESSAGE, CLEAN_PAGE, CLEAN_PENDING, CLEAN_PER_PAGE,
                      CLEAN_SPLIT, clean_choice, run_loss_table)

require_app_frame("pages/clean.py")

COLS = 6

st.title("Clean")
st.caption("The images the model finds hardest come first: wrong labels and odd pictures hide there. "
           "Deleted images go to a trash folder inside the data set, and every change can be undone.")
run, review = pick_review()
config = review.config
root = Path(config.root)
if config.split.kind == "random":
    st.caption("This data set uses a random split, drawn from the list of files as fastai does: deleting or "
               "relabelling images changes which images validate. Compare runs trained after the same cleaning.")
if CLEAN_MESSAGE.is_set():
    st.success(md(CLEAN_MESSAGE.pop()))

classes = review.dls.items.classes
if (CLEAN_PENDING.get() or {}).get("root") != str(root):  # choices belong to one data set
    CLEAN_PENDING.set({"root": str(root), "choices": {}})
chosen: dict[str, str] = CLEAN_PENDING.get()["choices"]  # kept while other classes or pages are shown


def remember(rel: str) -> None:
    value = clean_choice(rel).get()
    if value == KEEP:
        chosen.pop(rel, None)
    else:
        chosen[rel] = value


def forget_choices() -> None:
    for rel in list(chosen):
        clean_choice(rel).clear()
    chosen.clear()

c1, c2, c3 = st.columns([2, 1, 1])
if CLEAN_LABEL.get() not in classes:
    CLEAN_LABEL.set(classes[0])
label = c1.selectbox("Class", classes, key=CLEAN_LABEL.key)
split = c2.segmented_control("Split", ["train", "valid"], key=CLEAN_SPLIT.key, default="train", required=True)
per_page = c3.selectbox("Per page", [12, 24, 48], key=CLEAN_PER_PAGE.key)
table = run_loss_table(run, split, label)
if table.empty:
    st.info(f"There are no {split} images labelled {md(label)}.")
else:
    pages = (len(table) - 1) // per_page + 1
    CLEAN_PAGE.set(min(CLEAN_PAGE.get(), pages))
    page = st.number_input(f"Page (of {pages})", 1, pages, key=CLEAN_PAGE.key) if pages > 1 else 1
    shown = table.iloc[(page - 1) * per_page: page * per_page]
    st.caption(f"{len(table):,} {split} image(s) labelled **{md(label)}**, largest loss first. "
               "Each shows the model's prediction, its probability and the loss.")
    options = [KEEP, DELETE] + [c for c in classes if c != label]
    names = {KEEP: "keep", DELETE: "delete"}
    images = review.images(shown["pos"].tolist())
    with st.container(key="gallery-clean"):
        for start in range(0, len(shown), COLS):
            row = st.columns(COLS)
            for col, (_, r), x in zip(row, shown.iloc[start:start + COLS].iterrows(), images[start:start + COLS]):
                col.image(display_image(x), width=DISPLAY_PX,
                          caption=md(f"{r['item'].rsplit('/', 1)[-1]} · {r['predicted']} {r['probability']:.2f} · "
                                     f"loss {r['loss']:.2f}"))
                choice = clean_choice(r["item"])
                choice.setdefault(chosen.get(r["item"], KEEP))
                col.selectbox("Action", options, key=choice.key, label_visibility="collapsed",
                              format_func=lambda o: names.get(o, f"relabel → {o}"), on_change=remember, args=(r["item"],))

changes = [Change(rel, DELETE) if v == DELETE else Change(rel, RELABEL, v) for rel, v in sorted(chosen.items())]
c1, c2, c3 = st.columns([1, 1, 3])
if c1.button(f"Apply {len(changes)} change(s)", type="primary", disabled=not changes, key="clean.apply"):
    try:
        batch = apply_changes(root, config.label, changes)
    except UserError as e:
        st.error(md(e))
    else:
        forget_choices()
        CLEAN_MESSAGE.set(f"{batch.summary}. Scores and the Interpret page now use the cleaned data.")
        st.rerun()
if c2.button("Discard choices", disabled=not changes, key="clean.discard"):
    forget_choices()
    st.rerun()
if changes:
    deletes = sum(c.action == DELETE for c in changes)
    c3.caption(f"Pending: {deletes} to delete, {len(changes) - deletes} to relabel (kept while you browse other classes).")

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

builtin = next((key for key in BUILTINS if builtin_path(key).resolve() == root.resolve()), None)
if builtin is not None:
    st.subheader("Reset")
    if not CLEAN_CONFIRM_RESET.get():
        if st.button(f"Reset “{md(BUILTINS[builtin].title)}” to its original images…", key="clean.reset"):
            CLEAN_CONFIRM_RESET.set(True)
            st.rerun()
    else:
        st.warning("Make the built-in data set again from scikit-learn's digits? The cleaned folder moves to Loupe's trash.")
        c1, c2, _ = st.columns([1, 1, 4])
        if c1.button("Yes, reset", type="primary", key="clean.reset_yes"):
            reset_builtin(builtin)
            CLEAN_CONFIRM_RESET.clear()
            CLEAN_MESSAGE.set(f"{BUILTINS[builtin].title} is back to its original 1,797 images.")
            st.rerun()
        if c2.button("Cancel", key="clean.reset_no"):
            CLEAN_CONFIRM_RESET.clear()
            st.rerun()
