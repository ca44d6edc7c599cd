"""AppTest of the Camera page (make a set, shoot into each class, delete a shot, use it) and of Predict's camera."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from engine.data.builtin import digit_images
from engine.data.camera import add_shot, class_shots, create_set
from engine.train.export import load_run, predict
from engine.data.images import open_image
from engine.data.labels import LabelRule
from ui.draft import widget_key
from ui.shared import run_store
from ui.state import (CAMERA_ADD_CLASS, CAMERA_CLASS, CAMERA_NEW_CLASSES, CAMERA_NEW_NAME, CAMERA_SET, DRAFT,
                      PREDICT_CAMERA, PREDICT_SOURCE, SOURCE_KIND, camera_shot)

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture()
def app(home, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(home))
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page("pages/camera.py").run()
    return at


def jpeg(index: int) -> bytes:
    """A real handwritten digit, enlarged, as the browser's camera widget sends a photo."""
    images, _ = digit_images()
    out = io.BytesIO()
    Image.fromarray(images[index], "L").convert("RGB").resize((64, 48)).save(out, format="JPEG")
    return out.getvalue()


def no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def shoot(at: AppTest, n: int, data: bytes) -> None:
    """The n-th shot of this window (each shot gets a fresh camera widget)."""
    at.camera_input(key=camera_shot(n).key).set_value(("image.jpg", data, "image/jpeg")).run()
    no_exceptions(at)


def test_make_a_set_shoot_into_each_class_delete_one_and_use_it(app, home):
    no_exceptions(app)
    assert "No camera data sets yet" in app.info[0].value
    app.text_input(key=CAMERA_NEW_NAME.key).set_value("hands")
    app.text_area(key=CAMERA_NEW_CLASSES.key).set_value("thumbs up\n\nthumbs down\n")
    app.button(key="camera.create").click().run()
    no_exceptions(app)
    folder = home / "camera" / "hands"
    assert class_shots(folder) == {"thumbs-down": [], "thumbs-up": []}
    assert app.selectbox(key=CAMERA_SET.key).value == "hands"
    assert app.button(key="camera.use").disabled  # no shots yet

    assert app.button_group(key=CAMERA_CLASS.key).value == "thumbs-down"
    for n in range(3):
        shoot(app, n, jpeg(n))
    app.button_group(key=CAMERA_CLASS.key).set_value("thumbs-up").run()
    for n in range(3, 6):
        shoot(app, n, jpeg(n))
    shots = class_shots(folder)
    assert [[p.read_bytes() for p in shots[c]] for c in ("thumbs-down", "thumbs-up")] == [
        [jpeg(0), jpeg(1), jpeg(2)], [jpeg(3), jpeg(4), jpeg(5)]]
    assert len(app.get("camera_input")) == 1 and app.camera_input(key=camera_shot(6).key).value is None
    assert [m.value for m in app.markdown if "shot" in m.value] == ["**thumbs\\-down** · 3 shots",
                                                                     "**thumbs\\-up** · 3 shots"]

    bad = shots["thumbs-up"][1]
    app.button(key=f"camera.delete.thumbs-up/{bad.name}").click().run()
    no_exceptions(app)
    assert class_shots(folder)["thumbs-up"] == [shots["thumbs-up"][0], shots["thumbs-up"][2]]
    trashed = list((home / "trash").rglob(bad.name))
    assert len(trashed) == 1 and trashed[0].read_bytes() == jpeg(4)
    assert "Moved the shot to Loupe's trash" in app.success[0].value

    app.button(key="camera.use").click().run()  # to the Data page, with the set as the draft's source
    no_exceptions(app)
    draft = app.session_state[DRAFT.key]
    assert draft.data.source == str(folder)
    assert draft.data.label == LabelRule(kind="folder")  # guessed by the Data page: one folder per class
    assert app.button_group(key=SOURCE_KIND.key).value == "camera"
    assert app.selectbox(key=widget_key("data.source")).value == "hands"
    assert next(m.value for m in app.metric if m.label == "Classes") == "2"
    assert next(m.value for m in app.metric if m.label == "Labelled images") == "5"


@pytest.mark.parametrize("name, classes, message", [
    ("..", "a\nb", "cannot be a data set name"),
    ("pets", "cat", "at least two classes"),
    ("pets", "cat\nCat", "would be the same class"),
])
def test_bad_names_are_refused_with_a_message(app, home, name, classes, message):
    app.text_input(key=CAMERA_NEW_NAME.key).set_value(name)
    app.text_area(key=CAMERA_NEW_CLASSES.key).set_value(classes)
    app.button(key="camera.create").click().run()
    no_exceptions(app)
    assert message in app.error[0].value
    assert app.text_input(key=CAMERA_NEW_NAME.key).value == name  # kept, to be corrected


def test_a_class_added_later_and_names_shown_as_text(app, home):
    create_set("signs", ["stop", "go"])
    app.run()
    app.selectbox(key=CAMERA_SET.key).set_value("signs").run()
    app.text_input(key=CAMERA_ADD_CLASS.key).set_value("a*b")
    app.button(key="camera.add_class_button").click().run()
    no_exceptions(app)
    assert app.button_group(key=CAMERA_CLASS.key).options == ["a\\-b", "go", "stop"]  # as shown
    assert "Added the class “a\\-b”" in app.success[0].value
    app.text_input(key=CAMERA_ADD_CLASS.key).set_value("GO").run()
    app.button(key="camera.add_class_button").click().run()
    assert "already has a class called “GO”" in app.error[0].value
    app.button_group(key=CAMERA_CLASS.key).set_value("a-b").run()
    assert "“a\\-b”" in app.get("camera_input")[0].label


def test_predict_takes_a_camera_shot_and_shows_its_top_k_at_once(app, home, train_now):
    folder = create_set("digits", ["zero", "one"])
    for i in range(12):
        add_shot(folder, ["zero", "one"][i % 2], jpeg(i))
    run_id = train_now("camera set", {"data.source": str(folder), "data.size": 28, "data.bs": 4})
    app.switch_page("pages/predict.py").run()
    app.segmented_control(key=PREDICT_SOURCE.key).set_value("Camera").run()
    no_exceptions(app)
    assert "No photo yet." in [c.value for c in app.caption]
    app.camera_input(key=PREDICT_CAMERA.key).set_value(("image.jpg", jpeg(20), "image/jpeg")).run()
    no_exceptions(app)
    exported = load_run(Path(run_store().run(run_id)["weights_path"]))
    [top] = predict(exported, [open_image(io.BytesIO(jpeg(20)))])
    assert [m.value for m in app.markdown if m.value.startswith("**")][0] == f"**{top[0][0]}** · {top[0][1]:.1%}"
    assert len(app.get("plotly_chart")) == 1
    assert [i.caption for image in app.get("image") for i in image.proto.imgs] == ["camera shot"]


def test_a_shot_the_browser_sends_again_is_saved_once(app, home):
    """A browser that has not yet dropped the last shot's camera sends its photo again with the next click: one file."""
    create_set("waves", ["left", "right"])
    app.run()
    app.selectbox(key=CAMERA_SET.key).set_value("waves").run()
    app.button_group(key=CAMERA_CLASS.key).set_value("left").run()
    camera = app.camera_input(key=camera_shot(0).key).set_value(("image.jpg", jpeg(0), "image/jpeg"))
    stale = camera._widget_state  # what the browser keeps sending until it has removed the old camera
    app.run()
    assert [p.read_bytes() for p in class_shots(home / "camera" / "waves")["left"]] == [jpeg(0)]
    states = app._tree.get_widget_states()
    states.widgets.append(stale)
    app._run(states)  # e.g. the click on "Use this data set" right after a shot
    no_exceptions(app)
    assert [p.read_bytes() for p in class_shots(home / "camera" / "waves")["left"]] == [jpeg(0)]
    shoot(app, 1, jpeg(1))  # the next shot is saved as usual
    assert [p.read_bytes() for p in class_shots(home / "camera" / "waves")["left"]] == [jpeg(0), jpeg(1)]
