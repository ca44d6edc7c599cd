"""The report buttons of the Runs and Train pages: *Make report* builds a run's report (one HTML file), then
*Download report* gives it.

The file is made in this window's run and held by it while the button shows, so the download cannot miss it.
(Streamlit's made-on-click download keeps the file it makes for no window: the next two script runs of any
window, such as the sidebar's refresh every two seconds, delete it, and a browser slower than that got a 404.)
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from engine.results.report import report_or_message
from ui.shared import presize_cache, run_store
from ui.state import SessionKey

REPORTS = SessionKey[dict]("report.files", factory=dict)  # button key -> (run id, the report's bytes): the newest one per button
HELP = ("One HTML file to share: the data, settings, curves and verdict, confusion matrix, top losses and the replay "
        "command. It opens in any browser, with no network.")


def report_button(run: dict, key: str) -> None:
    """Make, then download, a finished run's report (engine/results/report.py); nothing for a run that kept no model."""
    if not run.get("weights_path"):
        return
    made = REPORTS.get().get(key)
    slot = st.empty()  # the Make button, then in its place the Download button
    if made is None or made[0] != run["id"]:
        if not slot.button("Make report", key=f"{key}.make", icon=":material/summarize:", help=HELP):
            return
        with st.spinner("Making the report: the data, curves, confusion matrix and top losses…"):
            data = report_or_message(Path(run["weights_path"]), run_store(), presize_cache(), run["spec"])
        made = (run["id"], data)
        REPORTS.set({**REPORTS.get(), key: made})
    data = made[1]
    slot.download_button("Download report", data=data, file_name=f"loupe-run-{run['id']}-report.html",
                         mime="text/html", key=key, icon=":material/download:", on_click="ignore", help=HELP)
    st.caption(f"Report of run #{run['id']} ready: one HTML file of {len(data) / 1e6:.1f} MB.")
