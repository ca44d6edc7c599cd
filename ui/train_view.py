"""Small pieces of the Train and Runs pages: fastai's epoch table, final metrics, durations."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.training import format_duration

from ui.text import md


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
    """'Model from epoch N (lowest validation loss).' — the one meaning of the epoch a run keeps."""
    kept = run.get("kept_epoch")
    if kept is None:
        return "No model was kept (the run ended before its first epoch)."
    keep_best = run["spec"].train.keep_best
    return f"Model from epoch {kept} ({'lowest validation loss' if keep_best else 'the last epoch'})."


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
    st.caption(kept_model_caption(run) + (" (★ on the chart)" if kept is not None else ""))
