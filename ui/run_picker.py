"""The run whose model the Interpret, Clean and Predict pages look at (one choice shared by the three pages)."""
from __future__ import annotations

import streamlit as st

from engine.errors import UserError
from engine.results.review import RunReview
from engine.train.export import ExportedModel
from engine.store.runs import ACTIVE
from ui.run_cache import run_model, run_review
from ui.shared import run_store
from ui.state import REVIEW_RUN
from ui.text import md
from ui.stop import stop_page


def _label(row) -> str:
    accuracy = f" · {row['accuracy']:.1%}" if row["accuracy"] == row["accuracy"] and row["accuracy"] is not None else ""
    kept = f" · epoch {row['kept_epoch']}" if row["kept_epoch"] == row["kept_epoch"] and row["kept_epoch"] is not None \
        else ""
    return f"#{row['id']} · {row['data']} · {row['arch']}{accuracy}{kept} · {row['status']}"


def pick_run() -> dict | None:
    """A select box of the runs that saved a model, newest first; None (with a way onward) if there are none."""
    runs = run_store().runs()
    usable = runs[runs["weights_path"].notna() & ~runs["status"].isin(ACTIVE)] if len(runs) else runs
    if usable.empty:
        st.info("No trained model yet: train one on the Train page, then come back.")
        st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
        return None
    ids = usable["id"].astype(int).tolist()
    labels = {int(r["id"]): _label(r) for _, r in usable.iterrows()}
    if REVIEW_RUN.get() not in ids:
        REVIEW_RUN.set(ids[0])
    run_id = st.selectbox("Model of run", ids, format_func=labels.get, key=REVIEW_RUN.key, persist_state="session",
                          help="Every run that saved a model; the newest first.")
    return run_store().run(int(run_id))


def _pick(load):
    """The chosen run and `load(run)`; stops the page (with a message) when there is none or it cannot be loaded."""
    run = pick_run()
    if run is None:
        stop_page()
    try:
        return run, load(run)
    except UserError as e:
        st.error(md(e))
        stop_page()


def pick_review() -> tuple[dict, RunReview]:
    """The chosen run and its model re-scored on its data; stops the page (with a message) when there is none."""
    return _pick(run_review)


def pick_model() -> tuple[dict, ExportedModel]:
    """The chosen run and its saved model; stops the page (with a message) when there is none or it cannot be read."""
    return _pick(run_model)
