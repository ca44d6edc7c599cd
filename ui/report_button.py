"""The Download report button of the Runs and Train pages: a run's report as one HTML file, made when clicked."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from engine.results.report import report_or_message
from ui.shared import presize_cache, run_store


def report_button(run: dict, key: str) -> None:
    """Download a finished run's report (engine/results/report.py); nothing for a run that kept no model."""
    if not run.get("weights_path"):
        return
    folder, store, cache = Path(run["weights_path"]), run_store(), presize_cache()
    st.download_button("Download report", data=lambda: report_or_message(folder, store, cache, run["spec"]),
                       file_name=f"loupe-run-{run['id']}-report.html", mime="text/html", key=key,
                       icon=":material/summarize:", on_click="ignore",
                       help="One HTML file to share: the data, settings, curves and verdict, confusion matrix, top "
                            "losses and the replay command. It opens in any browser, with no network.")
