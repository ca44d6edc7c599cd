"""Small pieces of the Train and Runs pages: fastai's epoch table, final metrics, durations."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.spec import RunSpec
from engine.train.run import format_duration, lr_finder_key
from ui.data_status import run_spec
from ui.draft import draft, update_draft
from ui.state import LR_FOUND_FOR, LR_SOURCE
from ui.text import md

DEFAULT_LR_HELP = "fastai's default; the LR finder can suggest one."


def forget_foreign_lr(spec: RunSpec | None) -> RunSpec | None:
    """The spec to use, after dropping a learning rate the LR finder found for other data or another model.

    "Use this LR" fills the draft's LR and remembers what it was found for; when the data set or the model has
    changed since (the demo script switching to the digits, another folder), that rate is not this data's: the LR goes
    back to fastai's default, and the page says so once.
    """
    found = LR_FOUND_FOR.get()
    if found is None or spec is None:
        return spec
    key, lr = found
    if draft().train.lr != lr:  # the user typed another rate since: it is theirs
        LR_FOUND_FOR.clear()
        LR_SOURCE.clear()
        return spec
    if key == lr_finder_key(spec):
        return spec
    update_draft({"train.lr": None})
    LR_FOUND_FOR.clear()
    LR_SOURCE.clear()
    st.info(f"The learning rate {lr:.1e} came from the LR finder on other data or another model, so it is not used "
            "here: back to fastai's default. Run the LR finder again for these settings.")
    return run_spec()


def lr_help() -> str:
    """Where the learning rate shown comes from."""
    return LR_SOURCE.get() or DEFAULT_LR_HELP


def ask_for_data(problem: str | None) -> None:
    """What a page that needs a data set says when the draft has none it can use."""
    if problem:
        st.error(f"The data settings have a problem: {md(problem)} Fix them on the Data page.")
    else:
        st.info("Choose a data set on the Data page first.")
    st.page_link("pages/data.py", label="Go to Data", icon=":material/photo_library:")


def format_seconds(seconds: float) -> str:
    """62 → '1:02', 3725 → '1:02:05'."""
    return format_duration(seconds)


def epoch_table(epochs: pd.DataFrame) -> pd.DataFrame:
    """fastai's table: epoch, train_loss, valid_loss, error_rate, accuracy, time (mm:ss)."""
    table = epochs[["epoch", "train_loss", "valid_loss", "error_rate", "accuracy", "time"]].copy()
    for col in ("train_loss", "valid_loss", "error_rate", "accuracy"):
        table[col] = table[col].map(lambda v: f"{v:.6f}")
    table["time"] = table["time"].map(lambda t: f"{int(t) // 60:02d}:{int(t) % 60:02d}")
    return table


def kept_model_caption(run: dict) -> str:
    """'Model from epoch N (lowest validation loss).' — the one meaning of the epoch a run keeps, numbered as the epoch
    table, the chart and the verdict number it: from 0, as fastai's table does."""
    kept = run.get("kept_epoch")
    if kept is None:
        return "No model was kept (the run ended before its first epoch)."
    keep_best = run["spec"].train.keep_best
    return (f"Model from epoch {kept} ({'lowest validation loss' if keep_best else 'the last epoch'}). Epochs are "
            "numbered from 0, as in fastai's table.")


def final_metrics(run: dict | None, epochs: pd.DataFrame) -> None:
    """The metrics of the model the run keeps (its kept epoch's), with a word on which epoch that is."""
    if run is None or not len(epochs):
        return
    kept = run.get("kept_epoch")
    rows = epochs[epochs["epoch"] == kept] if kept is not None else epochs.iloc[0:0]
    row = rows.iloc[0] if len(rows) else epochs.iloc[-1]
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Accuracy", f"{row['accuracy']:.1%}")
    c2.metric("Error rate", f"{row['error_rate']:.1%}")
    c3.metric("Validation loss", f"{row['valid_loss']:.4f}")
    c4.metric("Epochs", len(epochs))
    st.caption(kept_model_caption(run) + (" It is the ★ on the chart." if kept is not None else ""))
