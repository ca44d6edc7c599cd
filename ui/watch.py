"""Runs in progress that this server is not training: from the command line, torchrun, another server or machine.

Every run writes its batches and epochs to LOUPE_HOME/runs.sqlite as it goes, so any dashboard on that folder
(on a shared disk, any machine's) can draw them live by reading the database again every few seconds.
"""
from __future__ import annotations

import streamlit as st

from engine.spec import total_epochs
from ui.charts_show import show_chart
from ui.charts_train import training_figure
from ui.present import technical
from ui.shared import job_manager, run_store
from ui.state import SessionKey
from ui.text import md
from ui.train_view import epoch_table

WATCH_SECONDS = 2.0
WATCHED = SessionKey[tuple]("watch.run_ids", ())  # the runs shown last time: when one ends, the page reruns
SOURCE_WORDS = {"app": "another Loupe server", "cli": "the command line", "torchrun": "torchrun"}


def local_run_ids() -> set[int]:
    """The runs this server's jobs train (or trained)."""
    events = (job.last("run") for job in job_manager().jobs())
    return {int(e.data["run_id"]) for e in events if e is not None}


def runs_elsewhere() -> list[dict]:
    """Runs in progress in the runs database that this server is not training, oldest first."""
    mine = local_run_ids()
    return [run for run in run_store().active_runs() if run["id"] not in mine]


def run_heading(run: dict) -> str:
    """'#7 Digits · small · torchrun, 2 processes, on gpu-box · running' (user text escaped)."""
    processes = f", {run['world_size']} processes" if (run.get("world_size") or 1) > 1 else ""
    host = f", on {md(run['host'])}" if run.get("host") else ""
    source = SOURCE_WORDS.get(run.get("source") or "app", "elsewhere")
    return (f"**#{run['id']} {md(run['name'])} · {md(run['model'].get('arch', '?'))}** · "
            f"started from {source}{processes}{host} · {run['status']}")


@st.fragment(run_every=WATCH_SECONDS)
def watch_runs_elsewhere(where: str) -> None:
    """Runs in progress started elsewhere, each with its live curves and epoch table, redrawn every few seconds."""
    store = run_store()
    runs = runs_elsewhere()
    ids = tuple(run["id"] for run in runs)
    ended = set(WATCHED.get()) - set(ids)
    WATCHED.set(ids)
    if ended:
        st.rerun()  # the whole page, which lists the runs that ended with the others
    if not runs:
        return
    st.subheader("In progress elsewhere", anchor=False)
    st.caption("Runs that this app did not start — from the command line, torchrun, or another computer sharing "
               "this Loupe folder — drawn live from the runs database.")
    for run in runs:
        batches, epochs = store.batches(run["id"]), store.epochs(run["id"])
        planned = total_epochs(run["spec"])
        st.markdown(run_heading(run))
        st.progress(min(len(epochs) / planned, 1.0),
                    text=f"{len(epochs)} of {planned} epoch(s) done · {len(batches)} batch(es) so far")
        show_chart(training_figure(batches, epochs), key=f"{where}.watch.chart.{run['id']}")
        if len(epochs):
            with technical("Epoch table"):
                st.table(epoch_table(epochs), hide_index=True)
