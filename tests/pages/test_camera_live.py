"""AppTest of the Camera page's Live view: the run picker, the readout, That's wrong, Train again and the fallback.

The video itself (streamlit-webrtc's component) does not run in AppTest; frames are fed to the window's
LiveStream as the component's frame thread would (the Chromium test test_live_e2e.py runs the real video)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

import ui.live_view
from engine.data.builtin import digit_images
from engine.data.camera import add_shot, class_shots, create_set
from engine.results.live import LiveStream
from ui.live_view import CAMERA_VIEW, LIVE_CLASS, LIVE_RUN, LIVE_STREAM, NO_WEBRTC
from ui.state import CAMERA_SET, DRAFT

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def jpeg(index: int) -> bytes:
    images, _ = digit_images()
    out = io.BytesIO()
    Image.fromarray(images[index], "L").convert("RGB").resize((64, 48)).save(out, format="JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def runs(home, tmp_path_factory, train_now):
    """A run on a camera data set, then a newer one on an ordinary folder."""

    def train(source: Path) -> int:
        return train_now(source.name, {"data.source": str(source), "data.size": 28, "data.bs": 4})

    folder = create_set("hands", ["left", "right"])
    for i in range(12):
        add_shot(folder, ["left", "right"][i % 2], jpeg(i))
    camera_run = train(folder)
    plain = tmp_path_factory.mktemp("plain")
    for i in range(12):
        (plain / ["a", "b"][i % 2]).mkdir(exist_ok=True)
        Image.open(io.BytesIO(jpeg(i))).save(plain / ["a", "b"][i % 2] / f"{i}.png")
    return {"camera": camera_run, "plain": train(plain), "set": folder}


def live_app(monkeypatch, home) -> AppTest:
    monkeypatch.setenv("LOUPE_HOME", str(home))
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page("pages/camera.py").run()
    at.button_group(key=CAMERA_VIEW.key).set_value("live").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_without_a_trained_model_the_live_view_says_how_to_get_one(monkeypatch, tmp_path):
    at = live_app(monkeypatch, tmp_path)
    assert "No trained model yet" in at.info[0].value
    assert not at.get("selectbox")


def test_the_newest_camera_run_is_chosen_and_the_readout_follows_the_frames(monkeypatch, home, runs):
    at = live_app(monkeypatch, home)
    picker = at.selectbox(key=LIVE_RUN.key)
    assert [int(o.split(" · ")[0][1:]) for o in picker.options] == [runs["plain"], runs["camera"]]  # newest first
    assert picker.value == runs["camera"]  # not the newest run: the newest camera run
    assert any("No prediction yet" in c.value for c in at.caption)
    assert at.selectbox(key=CAMERA_SET.key).value == "hands"  # wrong frames go into the run's own data set

    stream = at.session_state[LIVE_STREAM.key]
    assert isinstance(stream, LiveStream)
    stream.frame(np.asarray(Image.open(io.BytesIO(jpeg(30))).convert("RGB")))
    at.run()
    assert not at.exception
    bars = at.get("progress")
    assert len(bars) == 2  # two classes: both shown
    shown = [b.proto.text for b in bars]
    top = stream.reading().top
    assert shown == [f"{name} · {p:.0%}" for name, p in top]
    assert any("1 predictions so far" in c.value for c in at.caption)

    picker.set_value(runs["plain"]).run()  # another model: the same stream, its readings start afresh
    assert at.session_state[LIVE_STREAM.key] is stream and stream.reading() is None
    assert not at.get("progress")


def test_thats_wrong_saves_the_frame_on_screen_and_train_again_opens_train_on_the_set(monkeypatch, home, runs):
    at = live_app(monkeypatch, home)
    before = class_shots(runs["set"])
    at.button(key="live.wrong").click().run()  # no frame yet
    assert any("no frame to save yet" in e.value for e in at.error) and class_shots(runs["set"]) == before

    frame = np.asarray(Image.open(io.BytesIO(jpeg(40))).convert("RGB"))
    at.session_state[LIVE_STREAM.key].frame(frame)
    at.button_group(key=LIVE_CLASS.key).set_value("right").run()
    at.button(key="live.wrong").click().run()
    assert not at.exception
    after = class_shots(runs["set"])
    [new] = set(after["right"]) - set(before["right"])
    assert after["left"] == before["left"] and len(after["right"]) == len(before["right"]) + 1
    with Image.open(new) as img:
        assert img.size == (64, 48)
    assert "Saved the frame into “right” of “hands”" in at.success[0].value

    at.button(key="live.train_again").click().run()
    assert not at.exception
    draft = at.session_state[DRAFT.key]
    assert draft.data.source == str(runs["set"])
    assert draft.train.epochs == 1 and draft.data.size == 28  # the run's settings
    assert at.button(key="train.start").label.startswith("Train (")


def test_train_again_from_another_data_sets_run_guesses_the_sets_own_rules(monkeypatch, home, runs, digits_run):
    at = live_app(monkeypatch, home)
    at.selectbox(key=LIVE_RUN.key).set_value(digits_run).run()  # the built-in digits, labelled by their file names
    at.button(key="live.train_again").click().run()
    assert not at.exception
    draft = at.session_state[DRAFT.key]
    assert draft.data.source == str(runs["set"]) and draft.train.epochs == 1  # the set, with the run's training
    assert draft.data.label is not None and draft.data.label.kind == "folder"  # one folder per class, as guessed
    assert at.button(key="train.start").label.startswith("Train (")  # ready to train: no "choose a data set first"


def test_when_webrtc_cannot_start_it_says_so_and_offers_take_shots(monkeypatch, home, runs):
    monkeypatch.setattr(ui.live_view, "webrtc_streamer", None)
    at = live_app(monkeypatch, home)
    assert NO_WEBRTC in [e.value for e in at.error]
    assert any("use Take shots" in c.value for c in at.caption)
    at.button_group(key=CAMERA_VIEW.key).set_value("shots").run()
    assert not at.exception and len(at.get("camera_input")) == 1  # the shot-by-shot camera
