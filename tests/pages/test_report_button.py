"""AppTest: the Runs page makes a finished run's report (engine/results/report.py), then offers it as a download held
by the window (not a file made on click, which Streamlit may delete before a slow browser fetches it)."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from engine.data.builtin import ensure_builtin
from engine.data.loaders import PresizeCache
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
    assert not [b for b in app.button if b.label == "Make report"]  # no run ticked yet
    table = app.dataframe[0]
    app.session_state["runs.table"] = {"selection": {"rows": [list(table.value["id"]).index(result["run_id"])],
                                                     "columns": [], "cells": []}}
    app.run()
    assert not app.exception, app.exception
    assert not [b for b in app.get("download_button") if b.label == "Download report"]  # nothing made yet
    [make] = [b for b in app.button if b.label == "Make report"]
    make.click().run()
    assert not app.exception, app.exception
    buttons = [b for b in app.get("download_button") if b.label == "Download report"]
    assert len(buttons) == 1
    assert buttons[0].proto.id.endswith(f"runs.report.{result['run_id']}")
    assert not [b for b in app.button if b.label == "Make report"]
    assert any(c.value.startswith(f"Report of run #{result['run_id']} ready: one HTML file of") for c in app.caption)
    # what the button gives: the report of the run's folder, held by the window until it is downloaded
    held = app.session_state["report.files"][f"runs.report.{result['run_id']}"]
    assert held[0] == result["run_id"] and b"<h2>Top losses</h2>" in held[1]
    app.run()  # a later run (the sidebar's refresh, another window's) still offers the same file
    assert [b.label for b in app.get("download_button") if b.label == "Download report"] == ["Download report"]
