"""AppTest: the Runs page offers a finished run's report (engine/results/report.py) as a download."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from engine.data.builtin import ensure_builtin
from engine.data.loaders import PresizeCache
from engine.results.report import build_report
from engine.spec import RunSpec, override
from engine.train.run import train_run
from ui.shared import run_store

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def test_the_runs_page_offers_a_finished_runs_report(home, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(home))
    ensure_builtin("digits-names")
    spec = override(RunSpec(), {"data.presize": 32, "train.schedule": "one_cycle", "train.epochs": 1, "train.seed": 0})
    result = train_run(spec, PresizeCache(), run_store(), source="cli")
    app = AppTest.from_file(APP, default_timeout=300)
    app.switch_page("pages/runs.py").run()
    assert not app.exception, app.exception
    assert not [b for b in app.get("download_button") if b.label == "Download report"]  # no run ticked yet
    table = app.dataframe[0]
    app.session_state["runs.table"] = {"selection": {"rows": [list(table.value["id"]).index(result["run_id"])],
                                                     "columns": [], "cells": []}}
    app.run()
    assert not app.exception, app.exception
    buttons = [b for b in app.get("download_button") if b.label == "Download report"]
    assert len(buttons) == 1
    assert buttons[0].proto.id.endswith(f"runs.report.{result['run_id']}")
    # what the button gives: the report of the run's folder
    assert "<h2>Top losses</h2>" in build_report(Path(result["out"]), run_store(), PresizeCache())
