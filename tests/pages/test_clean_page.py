"""AppTest of the Clean page: choices of images no longer in the data set are dropped."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.builtin import ensure_builtin
from engine.data import PresizeCache
from engine.jobs import Job
from engine.spec import RunSpec, override
from engine.training import train_target
from ui.clean_view import drop_stale_choices
from ui.state import CLEAN_LABEL, CLEAN_PAGE, CLEAN_PENDING, CLEAN_PER_PAGE, clean_choice, run_store

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture(scope="module")
def run_id(fresh_resources) -> int:
    """One epoch of the small model on the built-in digits, recorded in this module's run history."""
    ensure_builtin("digits-names")
    spec = override(RunSpec(), {"data.presize": 32, "train.schedule": "one_cycle", "train.epochs": 1, "train.lr": 3e-3,
                                "train.seed": 0})
    job = Job("train", "clean page", train_target(spec, PresizeCache(), run_store()))
    job.run()
    assert job.state == "done", job.error_detail
    return job.result["run_id"]


@pytest.fixture()
def app(home, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(home))
    return AppTest.from_file(APP, default_timeout=300)


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".loupe-trash" not in p.parts}


def choice_boxes(at) -> dict[str, object]:
    """The choice select box of each image on the page, by its relative path."""
    return {s.key.removeprefix("clean.choice."): s for s in at.selectbox if s.key and s.key.startswith("clean.choice.")}


def apply_label(at) -> str:
    return at.button(key="clean.apply").label


# ---------------------------------------------------------------- stale choices (issue #11, item 9)

def test_drop_stale_choices():
    labels = {"seven_1.png": "seven", "one_2.png": "one", "three_3.png": "three"}
    choices = {"seven_1.png": "one", "one_2.png": "one", "three_3.png": None, "gone.png": "delete",
               "seven_9.png": "two"}
    assert sorted(drop_stale_choices(choices, labels)) == ["gone.png", "one_2.png", "seven_9.png", "three_3.png"]
    assert choices == {"seven_1.png": "one"}


def test_a_choice_for_an_image_that_undo_took_away_is_dropped(app, run_id):
    root = run_store().run(run_id)["spec"].data.root
    before = tree(root)
    app.switch_page("pages/clean.py").run()
    assert not app.exception, app.exception
    app.selectbox(key=CLEAN_LABEL.key).set_value("seven").run()
    seven = next(iter(choice_boxes(app)))
    app.selectbox(key=clean_choice(seven).key).set_value("one").run()
    app.button(key="clean.apply").click().run()
    assert not app.exception, app.exception
    relabelled = seven.replace("seven_", "one_")
    assert (root / relabelled).is_file() and not (root / seven).exists()

    # the relabelled image, now among the ones, is marked for deletion (on whichever page it is)
    app.selectbox(key=CLEAN_LABEL.key).set_value("one").run()
    app.selectbox(key=CLEAN_PER_PAGE.key).set_value(48).run()
    while relabelled not in choice_boxes(app):
        app.number_input(key=CLEAN_PAGE.key).increment().run()
    app.selectbox(key=clean_choice(relabelled).key).set_value("delete").run()
    assert apply_label(app) == "Apply 1 change(s)"

    # undoing the relabel takes that file away: its pending choice goes with it, and nothing fails while browsing
    app.button(key="clean.undo").click().run()
    assert not app.exception, app.exception
    assert apply_label(app) == "Apply 0 change(s)" and app.session_state[CLEAN_PENDING.key]["choices"] == {}
    for label in ("one", "seven"):
        app.selectbox(key=CLEAN_LABEL.key).set_value(label).run()
        app.number_input(key=CLEAN_PAGE.key).set_value(2).run()
        app.number_input(key=CLEAN_PAGE.key).set_value(1).run()
        assert not app.exception, app.exception
    assert choice_boxes(app)[seven].value == "keep"
    assert tree(root) == before


def test_choices_left_by_a_late_widget_or_another_window_are_dropped(app, run_id):
    root = run_store().run(run_id)["spec"].data.root
    existing = sorted(p.name for p in root.glob("seven_*.png"))[0]
    app.switch_page("pages/clean.py").run()
    # what a widget callback arriving after Apply, or another window's Apply, leaves behind
    app.session_state[CLEAN_PENDING.key] = {"root": str(root), "choices": {
        "seven_99999.png": "delete", existing: None, existing.replace("seven", "eight"): "one"}}
    app.run()
    assert not app.exception, app.exception
    assert apply_label(app) == "Apply 0 change(s)" and app.session_state[CLEAN_PENDING.key]["choices"] == {}
