"""The Runs page's table of runs, whose ticks belong to runs, not to rows."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from ui.present import presenting
from ui.state import RUNS_TABLE
from ui.train_view import format_seconds

COLUMNS = ["id", "date", "source", "data", "images", "arch", "pretrained", "schedule", "epochs", "accuracy", "kept_epoch",
           "status", "seconds"]
PRESENT_COLUMNS = ["id", "date", "data", "arch", "schedule", "epochs", "accuracy", "status"]  # the larger type's fit
PRESENT_WIDTH = 1.35  # column widths grow with Present mode's type


def _rows_of(state) -> list[int]:
    """The ticked rows of a dataframe's selection state (as Streamlit keeps it, or as a test sets it)."""
    try:
        return [int(i) for i in state["selection"]["rows"]]
    except (KeyError, TypeError):
        return []


def runs_table(runs: pd.DataFrame) -> list[int]:
    """The table of runs, newest first; the ids of the runs ticked.

    Streamlit remembers ticks as row numbers. When runs come or go (a run finishes in another window, the command
    line adds one, some are deleted), the same rows are other runs: the table is then drawn afresh, under a new key,
    with the runs ticked before still ticked, wherever their rows now are.
    """
    order = [int(i) for i in runs["id"]]
    generation, drawn, ticked = RUNS_TABLE.get() or (0, order, [])
    key = "runs.table" if generation == 0 else f"runs.table.{generation}"
    if key in st.session_state:  # the ticks as the user left them: rows of the table as it was last drawn
        ticked = [drawn[i] for i in _rows_of(st.session_state[key]) if 0 <= i < len(drawn)]
    if order != drawn:
        generation += 1
        key = f"runs.table.{generation}"
    view = runs[COLUMNS].copy()
    view["seconds"] = view["seconds"].map(lambda s: format_seconds(s) if s == s and s is not None else "")
    view["accuracy"] = view["accuracy"] * 100  # shown as 89.1%, every row alike
    default = {"selection": {"rows": [order.index(i) for i in ticked if i in order], "columns": []}}
    scale = PRESENT_WIDTH if presenting() else 1.0
    config = {  # widths in pixels: the whole table, last column included, fits beside the sidebar at 1400 px
        "id": st.column_config.NumberColumn("run", width=50, format="#%d"),
        "date": st.column_config.DatetimeColumn("date (UTC)", width=95, format="D MMM HH:mm"),
        "source": st.column_config.TextColumn("from", width=45, help="Where the run was started: the app, the "
                                                                      "command line, torchrun"),
        "data": st.column_config.TextColumn("data", width=110),
        "images": st.column_config.TextColumn("images", width=75, help="Training / validation images the run used "
                                                                      "(readable ones, as the Data page counts them)"),
        "arch": st.column_config.TextColumn("model", width=75),
        "pretrained": st.column_config.CheckboxColumn("ImageNet", width=70, help="Started from ImageNet weights"),
        "schedule": st.column_config.TextColumn("schedule", width=80),
        "epochs": st.column_config.NumberColumn("epochs", width=55),
        "accuracy": st.column_config.ProgressColumn("accuracy", format="%.1f%%", min_value=0, max_value=100, width=100,
                                                    help="Validation accuracy of the model the run kept"),
        "kept_epoch": st.column_config.NumberColumn("kept epoch", width=75,
                                                    help="The epoch whose weights the saved model has (lowest "
                                                         "validation loss, or the last), numbered from 0 as in "
                                                         "fastai's table"),
        "status": st.column_config.TextColumn("status", width=65),
        "seconds": st.column_config.TextColumn("time", width=55)}
    for column in config.values():
        column["width"] = round(column["width"] * scale)
    picked = st.dataframe(
        view, hide_index=True, key=key, on_select="rerun", selection_mode="multi-row", selection_default=default,
        column_config=config, column_order=PRESENT_COLUMNS if presenting() else COLUMNS)
    ticked = [order[i] for i in _rows_of(picked) if 0 <= i < len(order)]
    RUNS_TABLE.set((generation, order, ticked))
    return ticked
