"""A click or a typed value is never lost, even when Streamlit delivers it without calling its `on_change`.

On a busy machine a change can reach the server while a run is being replaced, and Streamlit then hands the page
the widget's new value without calling the widget's callback (seen in the browser tests with every core busy: a
click on "A folder on this computer" right after the first load, an Epochs value typed in a second window). The
page used to draw the draft's old value over it. Here the callbacks of one run are dropped on purpose, so the order
is forced and each case is reproduced deterministically.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from PIL import Image
from streamlit.runtime.state.session_state import SessionState
from streamlit.testing.v1 import AppTest

from ui.draft import widget_key
from ui.state import DRAFT, FOLDER_TEXT, SOURCE_KIND

APP = str(Path(__file__).resolve().parents[2] / "app.py")
LABEL = widget_key("data.label")


@pytest.fixture()
def app(home, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(home))
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    assert not at.exception
    return at


@pytest.fixture()
def callbacks_lost(monkeypatch):
    """A context in which Streamlit hands the page the browser's values but calls no widget callback."""
    @contextlib.contextmanager
    def lost():
        with monkeypatch.context() as m:
            m.setattr(SessionState, "_call_callbacks", lambda self, **kwargs: None)
            yield
    return lost


def folder(tmp_path: Path) -> Path:
    root = tmp_path / "pets"
    for c in "ab":
        (root / c).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / c / f"{c}{i}.png")
    return root


def test_a_source_click_that_arrives_without_its_callback_is_taken(app, callbacks_lost, tmp_path):
    with callbacks_lost():
        app.button_group(key=SOURCE_KIND.key).set_value("folder").run()
    assert not app.exception
    assert app.button_group(key=SOURCE_KIND.key).value == "folder"
    assert app.text_input(key=FOLDER_TEXT.key)  # the folder field is there to type into
    assert app.session_state[DRAFT.key].data.source == ""  # the built-in set is no longer chosen

    with callbacks_lost():
        app.text_input(key=FOLDER_TEXT.key).set_value(str(folder(tmp_path))).run()
    assert not app.exception
    assert app.session_state[DRAFT.key].data.source == str((tmp_path / "pets").resolve())
    assert next(m.value for m in app.metric if m.label == "Classes") == "2"


def test_a_number_typed_without_its_callback_is_taken(app, callbacks_lost):
    app.switch_page("pages/train.py").run()
    epochs = widget_key("train.epochs")
    app.button_group(key=widget_key("train.schedule")).set_value("one_cycle").run()
    assert app.number_input(key=epochs).value == 3
    with callbacks_lost():
        app.number_input(key=epochs).set_value(2).run()
    assert not app.exception
    assert app.session_state[DRAFT.key].train.epochs == 2
    assert app.number_input(key=epochs).value == 2
    assert app.button(key="train.start").label.startswith("Train (2 epochs")
    app.run()  # and it stays
    assert app.number_input(key=epochs).value == 2 and app.session_state[DRAFT.key].train.epochs == 2


def test_a_zoom_range_moved_without_its_callback_is_taken(app, callbacks_lost):
    zoom = widget_key("augment")
    low, high = app.slider(key=zoom).value
    with callbacks_lost():
        app.slider(key=zoom).set_value((1.0, 1.5)).run()
    assert not app.exception
    aug = app.session_state[DRAFT.key].augment
    assert (aug.min_zoom, aug.max_zoom) == (1.0, 1.5) and (low, high) != (1.0, 1.5)


def test_the_value_a_page_replaced_is_not_taken_back_when_it_arrives_without_a_callback(app, callbacks_lost):
    """The page moves a widget (the automatic learning rate follows the schedule: fastai's 2e-3 for fine_tune, 1e-3
    for one cycle); the browser, not yet told, sends the old rate back with no callback: that echo is not a choice."""
    app.switch_page("pages/train.py").run()
    lr, schedule = widget_key("train.lr"), widget_key("train.schedule")
    assert app.number_input(key=lr).value == pytest.approx(2e-3)
    app.button_group(key=schedule).set_value("one_cycle").run()
    assert app.number_input(key=lr).value == pytest.approx(1e-3)
    with callbacks_lost():
        app.session_state[lr] = 2e-3  # the echo of the replaced value
        app.run()
    assert not app.exception
    assert app.session_state[DRAFT.key].train.lr is None  # still automatic
    assert app.number_input(key=lr).value == pytest.approx(1e-3)
