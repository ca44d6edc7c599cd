"""AppTest of the LR finder, Train and Runs pages with real (small, fast) background jobs."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ui.state import job_manager, run_store

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture()
def app(home, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(home))
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()  # the Data page picks the built-in digits
    assert not at.exception
    return at


def wait_for_job(kind: str, timeout: float = 180):
    job = job_manager().latest(kind)
    assert job is not None, f"no {kind} job was started"
    deadline = time.monotonic() + timeout
    while job.active:
        assert time.monotonic() < deadline, f"{kind} job did not finish"
        time.sleep(0.1)
    return job


def test_pages_without_data_point_to_the_data_page(home, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(home))
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("pages/train.py").run()
    assert not at.exception
    assert any("Data page first" in i.value for i in at.info)


def test_lr_finder_then_use_the_lr_on_the_train_page(app):
    app.switch_page("pages/lr_find.py").run()
    assert not app.exception
    app.button(key="lrf.run").click().run()
    job = wait_for_job("lr_find")
    assert job.state == "done", job.error_detail
    app.run()
    assert not app.exception
    suggestion_buttons = [b for b in app.button if b.key and b.key.startswith("lrf.pick.")]
    assert {b.key for b in suggestion_buttons} >= {"lrf.pick.valley", "lrf.pick.minimum", "lrf.pick.steep"}
    app.button(key="lrf.pick.valley").click().run()
    valley = job.result.suggestions["valley"].lr
    assert app.session_state["lrf.chosen"] == valley
    app.button(key="lrf.use").click().run()
    assert not app.exception
    assert app.session_state["train.lr"] == pytest.approx(valley, rel=1e-2)
    assert app.number_input(key="train.lr").value == pytest.approx(valley, rel=1e-2)


def test_train_a_short_run_and_find_it_on_the_runs_page(app):
    app.switch_page("pages/train.py").run()
    assert not app.exception
    app.button_group(key="train.method").set_value("one_cycle").run()
    app.number_input(key="train.epochs").set_value(1).run()
    app.number_input(key="train.lr").set_value(3e-3).run()
    app.button(key="train.estimate_button").click().run()
    assert any("About" in c.value and "1 epoch" in c.value for c in app.caption)
    app.button(key="train.start").click().run()
    assert not app.exception
    job = wait_for_job("train")
    assert job.state == "done", job.error_detail
    app.run()
    assert not app.exception
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Epochs"] == "1" and float(metrics["Accuracy"].rstrip("%")) > 50
    table = app.table[-1].value
    assert list(table.columns) == ["epoch", "train_loss", "valid_loss", "error_rate", "accuracy", "time"]
    assert len(table) == 1
    runs = run_store().runs()
    assert runs.iloc[0]["status"] == "done" and runs.iloc[0]["epochs"] == 1

    app.switch_page("pages/runs.py").run()
    assert not app.exception
    shown = app.dataframe[0].value
    assert int(job.result["run_id"]) in shown["id"].tolist()


def test_a_failed_run_shows_its_error_and_the_app_stays_up(app, monkeypatch):
    from engine.learner import Learner

    def broken(self, x, y):
        raise RuntimeError("simulated out-of-memory")

    monkeypatch.setattr(Learner, "train_step", broken)
    app.switch_page("pages/train.py").run()
    app.button(key="train.start").click().run()
    job = wait_for_job("train")
    assert job.state == "failed"
    app.run()
    assert not app.exception
    assert any("simulated out-of-memory" in e.value for e in app.error)
    assert app.button(key="train.start")  # the next run can start
