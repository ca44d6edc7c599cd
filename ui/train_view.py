"""Small pieces of the Train and Runs pages: fastai's epoch table, final metrics, durations."""
from __future__ import annotations

import pandas as pd
import streamlit as st


def format_seconds(seconds: float) -> str:
    """62 → '1:02', 3725 → '1:02:05'."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def epoch_table(epochs: pd.DataFrame) -> pd.DataFrame:
    """fastai's table: epoch, train_loss, valid_loss, error_rate, accuracy, time (mm:ss)."""
    table = epochs[["epoch", "train_loss", "valid_loss", "error_rate", "accuracy", "time"]].copy()
    for col in ("train_loss", "valid_loss", "error_rate", "accuracy"):
        table[col] = table[col].map(lambda v: f"{v:.6f}")
    table["time"] = table["time"].map(lambda t: f"{int(t) // 60:02d}:{int(t) % 60:02d}")
    return table


def final_metrics(epochs: pd.DataFrame, best_epoch: int | None) -> None:
    """The metrics the run ends with: the best epoch's if its weights were kept, else the last one's."""
    if not len(epochs):
        return
    row = epochs[epochs["epoch"] == best_epoch].iloc[0] if best_epoch is not None else epochs.iloc[-1]
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Accuracy", f"{row['accuracy']:.1%}")
    c2.metric("Error rate", f"{row['error_rate']:.1%}")
    c3.metric("Validation loss", f"{row['valid_loss']:.4f}")
    c4.metric("Epochs", len(epochs), help=f"Best epoch: {best_epoch}" if best_epoch is not None else None)
    if best_epoch is not None:
        st.caption(f"The model keeps the weights of epoch {best_epoch}, the one with the lowest validation loss (★ on the chart).")
