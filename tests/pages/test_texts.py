"""What the pages say is true: the Runs page's ticks, the Train page offline, a learning rate kept to its data set,
and notes that speak of the user's pictures (AppTest)."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.store.jobs import Job
from engine.train.learner import LRFinderResult
from engine.train.lr_suggest import Suggestion
from engine.spec import RunSpec
from ui.draft import widget_key
from ui.shared import job_manager, run_store
from ui.state import DRAFT, DRAFT_ID, LR_FOUND_FOR, LR_SOURCE

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture()
def app(home, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(home))
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    assert not at.exception
    return at


def finished_run(name: str) -> int:
    """A run recorded as done (no training: the Runs page only lists it)."""
    store = run_store()
    run_id = store.create_run(RunSpec(), {"arch": "small", "pretrained": False, "classes": ["a", "b"]})
    store.finish(run_id, "done")
    return run_id


def shown_runs(at: AppTest) -> list[int]:
    return sorted(int(e.label.split("#", 1)[1].split(" ", 1)[0]) for e in at.expander if e.label.startswith("Run #"))


def test_ticks_stay_on_the_runs_ticked_when_a_new_run_appears(app):
    older, newer = finished_run("a"), finished_run("b")
    app.switch_page("pages/runs.py").run()
    table = app.dataframe[0]
    ids = [int(i) for i in table.value["id"]]
    assert ids[:2] == [newer, older]  # newest first
    app.session_state["runs.table"] = {"selection": {"rows": [ids.index(older)], "columns": [], "cells": []}}
    app.run()
    assert shown_runs(app) == [older]
    latest = finished_run("c")  # a run from another window or the command line lands on top: the rows move down
    app.run()
    assert not app.exception
    assert shown_runs(app) == [older], "the tick moved to another run"
    assert app.button(key="runs.delete").label.startswith("Delete 1 selected")
    app.button(key="runs.delete").click().run()
    assert any(f"#{older}?" in w.value and f"#{latest}" not in w.value and f"#{newer}" not in w.value
               for w in app.warning)
    app.button(key="runs.delete_yes").click().run()
    assert not app.exception
    assert run_store().run(older) is None and run_store().run(newer) is not None and run_store().run(latest)
    app.run()
    assert shown_runs(app) == []  # the deleted run's tick went with it; no other run was ticked in its place


def test_offline_resnet18_trains_from_scratch_and_the_schedule_says_so(app, monkeypatch):
    monkeypatch.setenv("LOUPE_WEIGHTS_URL", "http://127.0.0.1:9/models")  # nothing listens: offline
    app.switch_page("pages/train.py").run()
    app.selectbox(key=widget_key("model.arch")).set_value("resnet18").run()
    assert not app.exception
    assert app.session_state[DRAFT.key].model.pretrained  # the toggle still says ImageNet…
    warning = next(w.value for w in app.warning if "cannot be had here" in w.value)
    assert "from scratch" in warning and "Errno" not in warning and "Error" not in warning
    captions = [c.value for c in app.caption]
    assert any(c.startswith("From scratch there is nothing to keep frozen: every layer trains") for c in captions)
    assert not any(c.startswith("Head only") for c in captions)  # …but no head-only phase is promised


def test_a_learning_rate_found_for_another_data_set_is_not_offered(app):
    """The demo script switches to the digits after the LR finder ran on the user's folder: that rate is dropped."""
    app.switch_page("pages/train.py").run()
    app.number_input(key=widget_key("train.lr")).set_value(6.3e-4).run()
    app.session_state[LR_FOUND_FOR.key] = ('{"data": "another data set"}', 6.3e-4)
    app.session_state[LR_SOURCE.key] = "from the LR finder (6.3e-04) on this data set"
    app.run()
    assert not app.exception
    assert any("came from the LR finder on other data" in i.value for i in app.info)
    assert app.session_state[DRAFT.key].train.lr is None
    assert app.number_input(key=widget_key("train.lr")).value == 2e-3  # fastai's fine_tune default
    assert LR_FOUND_FOR.key not in app.session_state


def test_the_compare_page_prefills_from_a_valley_of_these_data_only(app):
    owner = app.session_state[DRAFT_ID.key]
    found = LRFinderResult(lrs=[1e-4, 1e-3], losses=[2.0, 1.0], stopped_early=False,
                           suggestions={"valley": Suggestion("valley", 4.2e-4, 1.5, "")})
    job = job_manager().submit(Job("lr_find", "finder elsewhere", lambda job: found,
                                   meta={"data": '{"data": "another data set"}'}, owner=owner))
    assert job_manager().wait(job, timeout=60) and job.state == "done"
    app.switch_page("pages/experiment.py").run()
    assert not app.exception
    assert not any("valley" in c.value for c in app.caption)
    assert any("Prefilled from the learning rate on the Train page" in c.value for c in app.caption)


def test_notes_speak_of_digits_only_on_the_digits():
    def script():
        import streamlit as st

        from engine.spec import RunSpec, override
        from ui.explain import note
        from ui.state import DRAFT

        DRAFT.set(override(RunSpec(), {"data.source": "/home/me/holiday photos"}))
        st.markdown(note("show_batch"))
        DRAFT.set(RunSpec())
        st.markdown(note("show_batch"))

    at = AppTest.from_function(script).run()
    assert not at.exception
    photos, digits = (m.value for m in at.markdown)
    assert "digit" not in photos and "the same picture never looks quite the same twice" in photos
    assert "the same digit never looks quite the same twice" in digits


def test_the_small_model_shows_imagenet_weights_off(app):
    app.switch_page("pages/train.py").run()
    app.selectbox(key=widget_key("model.arch")).set_value("small").run()
    assert not app.exception
    toggles = [t for t in app.toggle if t.label == "Start from ImageNet weights"]
    assert [(t.value, t.disabled) for t in toggles] == [(False, True)]  # off, as it is for the small model
    assert app.session_state[DRAFT.key].model.pretrained  # the setting is kept for a model that has weights
    app.selectbox(key=widget_key("model.arch")).set_value("resnet18").run()
    toggles = [t for t in app.toggle if t.label == "Start from ImageNet weights"]
    assert [(t.value, t.disabled) for t in toggles] == [(True, False)]
