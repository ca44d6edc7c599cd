"""AppTest of the LR finder, Train and Runs pages with real (small, fast) background jobs."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.data.loaders import PresizeCache
from engine.store.drafts import DraftStore
from engine.train.lr_suggest import compare
from engine.spec import RunSpec, override
from engine.train.run import train_run
from ui.draft import widget_key
from ui.shared import job_manager, run_store
from ui.state import DRAFT, DRAFT_ID, LRF_CHOSEN

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def unescape(markdown: str) -> str:
    """The text a reader sees of Markdown whose user parts were escaped (ui.text.md)."""
    return re.sub(r"\\(.)", r"\1", markdown)


@pytest.fixture()
def app(home, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(home))
    at = AppTest.from_file(APP, default_timeout=300)
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


def test_the_train_page_works_from_the_first_visit_and_points_to_the_data_page_when_it_cannot(home, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(home))
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("pages/train.py").run()  # a fresh window: the default spec's built-in digits, never seen on Data
    assert not at.exception and at.button(key="train.start")
    missing = override(RunSpec(), {"data.source": str(home / "gone")})
    DraftStore().save(at.session_state[DRAFT_ID.key], missing)
    again = AppTest.from_file(APP, default_timeout=300)
    again.query_params["draft"] = at.session_state[DRAFT_ID.key]
    again.switch_page("pages/train.py").run()
    assert not again.exception
    assert any("Data page first" in i.value for i in again.info)


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
    valley = job.result.suggestions["valley"].lr
    assert app.session_state[LRF_CHOSEN.key] == valley  # fastai's default suggestion is chosen to start with
    where = compare(job.result.suggestions)  # each suggestion is described by its value on this curve
    assert all(any(where[name] in c.value for c in app.caption) for name in job.result.suggestions)
    app.button(key="lrf.pick.steep").click().run()
    assert app.session_state[LRF_CHOSEN.key] == job.result.suggestions["steep"].lr
    app.button(key="lrf.pick.valley").click().run()
    assert app.session_state[LRF_CHOSEN.key] == valley
    # "Use this LR", and a click that leaves the page (a demo step, a page link) reaching the server in the same run,
    # as two quick clicks on a busy machine do: the rate is taken all the same
    app.button(key="lrf.use").click()
    app.switch_page("pages/data.py").run()
    assert not app.exception
    assert app.session_state[DRAFT.key].train.lr == pytest.approx(valley, rel=1e-2)
    app.switch_page("pages/train.py").run()
    assert app.number_input(key=widget_key("train.lr")).value == pytest.approx(valley, rel=1e-2)

    # another data set: the rate does not silently carry over, and the finder's curve is not shown for it
    app.switch_page("pages/data.py").run()
    app.selectbox(key=widget_key("data.source")).set_value("digits-folders").run()
    assert app.session_state[DRAFT.key].train.lr is None
    app.switch_page("pages/train.py").run()
    assert app.number_input(key=widget_key("train.lr")).value == 2e-3  # fine_tune's default again
    app.switch_page("pages/lr_find.py").run()
    assert any("ran on another data set" in i.value for i in app.info)
    assert not [b for b in app.button if b.key == "lrf.use"]


def test_train_a_short_run_and_find_it_on_the_runs_page(app):
    app.switch_page("pages/train.py").run()
    assert not app.exception
    assert app.number_input(key=widget_key("train.epochs")).value == RunSpec().train.epochs  # the spec's defaults
    assert app.number_input(key=widget_key("train.lr")).value == 2e-3  # fine_tune's base_lr
    app.button_group(key=widget_key("train.schedule")).set_value("one_cycle").run()
    assert app.number_input(key=widget_key("train.lr")).value == 1e-3  # fit_one_cycle's lr_max, until one is set
    app.number_input(key=widget_key("train.epochs")).set_value(1).run()
    app.number_input(key=widget_key("train.lr")).set_value(3e-3).run()
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
    assert any("Model from epoch 0 (lowest validation loss)" in c.value for c in app.caption)
    run = run_store().run(job.result["run_id"])
    assert run["spec"].train.schedule == "one_cycle" and run["spec"].train.epochs == 1 and run["kept_epoch"] == 0
    table = app.table[-1].value
    assert list(table.columns) == ["epoch", "train_loss", "valid_loss", "error_rate", "accuracy", "time"]
    assert len(table) == 1
    runs = run_store().runs()
    assert runs.iloc[0]["status"] == "done" and runs.iloc[0]["epochs"] == 1

    app.switch_page("pages/runs.py").run()
    assert not app.exception
    shown = app.dataframe[0].value
    assert int(job.result["run_id"]) in shown["id"].tolist()
    assert "kept_epoch" in shown.columns and "accuracy" in shown.columns and "best_accuracy" not in shown.columns


def test_a_failed_run_shows_its_error_and_the_app_stays_up(app, monkeypatch):
    from engine.train.learner import Learner

    def broken(self, x, y):
        raise RuntimeError("simulated out-of-memory")

    monkeypatch.setattr(Learner, "train_step", broken)
    app.switch_page("pages/train.py").run()
    app.button(key="train.start").click().run()
    job = wait_for_job("train")
    assert job.state == "failed"
    app.run()
    assert not app.exception
    assert any("simulated out-of-memory" in unescape(e.value) for e in app.error)
    assert app.button(key="train.start")  # the next run can start


def test_discriminative_learning_rates(app):
    app.switch_page("pages/train.py").run()
    app.button_group(key=widget_key("train.schedule")).set_value("one_cycle").run()
    app.toggle(key="train.lr_slice_on").set_value(True).run()
    assert not app.exception
    assert app.session_state[DRAFT.key].train.lr_slice == pytest.approx((1e-5, 1e-3))
    assert any("spread from 1.0e-05" in c.value for c in app.caption)
    app.number_input(key=widget_key("train.lr_slice", "low")).set_value(1e-6).run()
    assert not app.exception
    assert app.session_state[DRAFT.key].train.lr_slice == pytest.approx((1e-6, 1e-3))
    app.toggle(key="train.lr_slice_on").set_value(False).run()
    assert app.session_state[DRAFT.key].train.lr_slice is None


def test_a_reload_or_a_restart_comes_back_to_the_draft_and_windows_keep_their_own(home, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(home))
    first = AppTest.from_file(APP, default_timeout=300)
    first.run()
    first.switch_page("pages/train.py").run()
    first.number_input(key=widget_key("train.epochs")).set_value(7).run()
    draft_id = first.session_state[DRAFT_ID.key]
    assert first.query_params["draft"] in (draft_id, [draft_id])  # the window's draft travels in the page address

    # a reload, a bookmark or a restarted server: a new session with the same address
    again = AppTest.from_file(APP, default_timeout=300)
    again.query_params["draft"] = draft_id
    again.switch_page("pages/train.py").run()
    assert not again.exception
    assert again.number_input(key=widget_key("train.epochs")).value == 7

    # a new window starts from the latest draft, then keeps its own
    other = AppTest.from_file(APP, default_timeout=300)
    other.switch_page("pages/train.py").run()
    assert other.session_state[DRAFT_ID.key] != draft_id
    assert other.number_input(key=widget_key("train.epochs")).value == 7
    other.number_input(key=widget_key("train.epochs")).set_value(2).run()
    again.run()
    assert again.number_input(key=widget_key("train.epochs")).value == 7


def test_the_runs_page_shows_a_cli_run_with_its_settings_and_replay_line(app, home):
    spec = override(RunSpec(), {"train.schedule": "one_cycle", "train.epochs": 1, "train.seed": 3,
                                "train.keep_best": False})
    result = train_run(spec, PresizeCache(), run_store(), source="cli")
    app.switch_page("pages/runs.py").run()
    assert not app.exception
    table = app.dataframe[0]
    row = table.value.set_index("id").loc[result["run_id"]]
    assert row["source"] == "cli" and row["kept_epoch"] == 0
    app.session_state["runs.table"] = {"selection": {"rows": [list(table.value["id"]).index(result["run_id"])],
                                                     "columns": [], "cells": []}}
    app.run()
    assert not app.exception
    settings = next(df.value for df in app.dataframe if "setting" in df.value.columns)
    shown = dict(zip(settings["setting"], settings["value"]))
    assert shown["Schedule"] == "one_cycle" and shown["Seed"] == "3"
    assert shown["Keep the epoch with the lowest validation loss"] == "False"
    assert shown["Label rule"].startswith("regex on file name")
    assert not any("." in name for name in shown)  # human names, never "data.size"
    assert any(f"--spec {home / 'runs' / str(result['run_id']) / 'spec.json'}" in c.value for c in app.code)


def test_two_windows_each_see_their_own_run_and_the_second_waits_in_line(home, monkeypatch, tmp_path):
    """A second window's Train click is queued behind the first window's run and said so; nobody sees another's run."""
    monkeypatch.setenv("LOUPE_HOME", str(home))
    go = tmp_path / "go"
    monkeypatch.setenv("LOUPE_HOLD_AT_BATCH", "1")  # the first run waits after its second batch until `go` exists
    monkeypatch.setenv("LOUPE_HOLD_FILE", str(go))
    windows = []
    for epochs in (1, 2):
        at = AppTest.from_file(APP, default_timeout=300)
        at.switch_page("pages/train.py").run()
        at.button_group(key=widget_key("train.schedule")).set_value("one_cycle").run()
        at.number_input(key=widget_key("train.epochs")).set_value(epochs).run()
        windows.append(at)
    first, second = windows
    first.button(key="train.start").click().run()
    mine = job_manager().latest("train", owner=first.session_state[DRAFT_ID.key])
    deadline = time.monotonic() + 120
    while mine.progress == 0:  # a batch done (then held after batch 1): it is running, whatever the machine's speed
        assert mine.active and time.monotonic() < deadline, mine.error_detail
        time.sleep(0.05)
    second.button(key="train.start").click().run()
    assert not second.exception
    assert any("Another run is training (started by another window); yours is queued (number 1 in line)" in i.value
               for i in second.info)
    theirs = job_manager().latest("train", owner=second.session_state[DRAFT_ID.key])
    assert theirs is not mine and theirs.state == "queued"
    first.run()
    assert not any("queued" in i.value for i in first.info)
    go.write_text("")
    assert job_manager().wait(mine, timeout=300) and job_manager().wait(theirs, timeout=300)
    assert mine.state == theirs.state == "done", (mine.error_detail, theirs.error_detail)
    first.run()
    second.run()
    assert any(c.value.startswith("Last run") or "Last run" in c.value for c in first.subheader)
    first_run, second_run = mine.result["run_id"], theirs.result["run_id"]
    assert first_run != second_run
    assert any(f"{run_store().run(first_run)['spec'].train.epochs} epochs" in h.value for h in first.subheader)
    assert any("2 epochs" in h.value for h in second.subheader) and not any("1 epochs" in h.value for h in second.subheader)


def test_a_stale_value_from_the_browser_does_not_overwrite_an_automatic_setting(app):
    """The schedule moves the automatic LR (2e-3 → 1e-3); a browser that sends the old 2e-3 back with its next
    change (the user clicked on before the new value arrived) does not make 2e-3 the draft's LR."""
    app.switch_page("pages/train.py").run()
    lr = app.number_input(key=widget_key("train.lr"))
    assert lr.value == 2e-3
    app.button_group(key=widget_key("train.schedule")).set_value("one_cycle").run()
    assert app.number_input(key=widget_key("train.lr")).value == 1e-3
    stale = app.number_input(key=widget_key("train.lr"))
    stale.set_value(2e-3)  # what the browser still showed
    app.number_input(key=widget_key("train.epochs")).set_value(2).run()
    assert app.session_state[DRAFT.key].train.lr is None and app.session_state[DRAFT.key].train.epochs == 2
    assert app.number_input(key=widget_key("train.lr")).value == 1e-3
    app.number_input(key=widget_key("train.lr")).set_value(2e-3).run()  # typed on purpose: taken
    assert app.session_state[DRAFT.key].train.lr == 2e-3


def test_the_model_choice_says_before_the_run_whether_imagenet_weights_can_be_had(app, monkeypatch):
    monkeypatch.setenv("LOUPE_WEIGHTS_URL", "http://127.0.0.1:9/models")  # nothing listens: offline
    app.switch_page("pages/train.py").run()
    app.selectbox(key=widget_key("model.arch")).set_value("resnet18").run()
    assert not app.exception
    assert any("cannot be had here" in w.value and "from scratch" in w.value for w in app.warning)


def test_the_precision_setting_says_what_this_computer_will_use(app):
    app.switch_page("pages/train.py").run()
    assert app.selectbox(key=widget_key("device.precision")).value == "auto"
    assert any("This computer will train in fp32" in c.value for c in app.caption)  # auto on a CPU: fp32
    app.selectbox(key=widget_key("device.precision")).set_value("fp32").run()
    assert not app.exception and app.session_state[DRAFT.key].device.precision == "fp32"
