"""AppTest of the Look inside page, on a real one-epoch run on digits: the stages from input to head, a feature map
clicked shows what its channel responds to, and a picture from an upload or the camera."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from engine.data.builtin import digit_images
from engine.data.images import open_image
from engine.data.labels import LabelRule
from engine.data.loaders import PresizeCache
from engine.results.inside import channel_index, look_inside, look_inside_image
from engine.results.review import review_run
from engine.train.export import load_run
from ui.inside_view import INSIDE_CAMERA, INSIDE_CHANNEL, INSIDE_ITEM, INSIDE_SOURCE, INSIDE_UPLOAD
from ui.shared import run_store
from ui.state import EXPLAIN, REVIEW_RUN
from ui.text import md

APP = str(Path(__file__).resolve().parents[2] / "app.py")
ODD = "*seven* [x](y)"  # a class name Markdown would read


@pytest.fixture(scope="module")
def run_id(train_now, tmp_path_factory) -> int:
    """One epoch of the small model on 300 real digits, the sevens under a class name Markdown would read."""
    data = tmp_path_factory.mktemp("inside-page-digits")
    images, targets = digit_images()
    names = ["zero", "one", "two", "three", "four", "five", "six", ODD, "eight", "nine"]
    for i, (im, t) in enumerate(zip(images[:300], targets[:300])):
        Image.fromarray(im, "L").save(data / f"{names[t]}_{i}.png")
    return train_now("inside page", {"data.source": str(data), "data.size": 28, "model.pretrained": False,
                                      "data.label": LabelRule(kind="regex", pattern=r"^(.+)_\d+\.png$")})


@pytest.fixture()
def app(home, monkeypatch, run_id):
    monkeypatch.setenv("LOUPE_HOME", str(home))
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("pages/inside.py").run()
    assert not at.exception, at.exception
    return at


def stage_lines(at) -> list[str]:
    return [m.value for m in at.markdown if re.match(r"\*\*\d\. ", m.value)]


def captions(at) -> list[str]:
    """Captions of every image on the page, as a reader sees them (captions are escaped Markdown)."""
    return [re.sub(r"\\(.)", r"\1", img.caption) for element in at.get("image") for img in element.proto.imgs]


def test_the_stages_from_input_to_head_and_a_clicked_map(app, run_id):
    assert app.selectbox(key=REVIEW_RUN.key).value == run_id
    assert stage_lines(app) == ["**0. Input** · 3 channels of 28 × 28", "**1. Block 1** · 32 feature maps of 14 × 14",
                                "**2. Block 2** · 64 feature maps of 7 × 7", "**3. Block 3** · 128 feature maps of 4 × 4",
                                "**4. Block 4** · 256 feature maps of 2 × 2", "**5. Head** · 10 scores, one per class"]
    run = run_store().run(run_id)
    review = review_run(run, PresizeCache())
    pos = app.selectbox(key=INSIDE_ITEM.key).value
    assert pos == int(review.valid_pos[0])  # the first validation picture, to begin with
    inside = look_inside(review.exported, review.model_input([pos]))
    buttons = {b.key for b in app.button if b.key and b.key.startswith("inside.map.")}
    expected = {f"inside.map.{v.name}.{ch}" for v in inside.layers[:-1] for ch in v.top_channels}
    assert buttons == expected  # the top channels of every stage, in the engine's order
    assert [b.label for b in app.button if b.key and b.key.startswith("inside.map.input.")] == [
        ("red", "green", "blue")[c] for c in inside.layers[0].top_channels]
    assert any(m.value.startswith("Prediction: **") for m in app.markdown)
    assert len(app.get("plotly_chart")) == 1  # the head's probabilities

    # a feature map clicked: the validation pictures its channel responds to, most first
    channel = inside.layers[2].top_channels[0]
    app.button(key=f"inside.map.block 2.{channel}").click().run()
    assert not app.exception, app.exception
    assert INSIDE_CHANNEL.key in app.session_state and app.session_state[INSIDE_CHANNEL.key] == (run_id, "block 2", channel)
    assert any(m.value.startswith(f"**What channel #{channel} of block 2 responds to:**") for m in app.markdown)
    top = channel_index(review).top_pictures("block 2", channel)
    wanted = [f"{label} / {a:.3g}" for label, a in zip(top["label"], top["activation"])]
    assert [c for c in captions(app) if c in wanted] == wanted

    # another picture: its own stages, the clicked channel's pictures still shown
    other = int(review.valid_pos[5])
    app.selectbox(key=INSIDE_ITEM.key).set_value(other).run()
    assert not app.exception, app.exception
    inside = look_inside(review.exported, review.model_input([other]))
    assert {b.key for b in app.button if b.key and b.key.startswith("inside.map.block 4.")} == {
        f"inside.map.block 4.{ch}" for ch in inside.layers[4].top_channels}
    assert any(m.value.startswith(f"**What channel #{channel} of block 2 responds to:**") for m in app.markdown)


def test_class_names_are_shown_escaped(app, run_id):
    review = review_run(run_store().run(run_id), PresizeCache())
    sevens = [int(p) for p in review.valid_pos if review.dls.items.labels[int(p)] == ODD]
    app.selectbox(key=INSIDE_ITEM.key).set_value(sevens[0]).run()
    inside = look_inside(review.exported, review.model_input(sevens[:1]))
    predicted = inside.classes[inside.predicted]
    line = next(m.value for m in app.markdown if m.value.startswith("Prediction: **"))
    assert line == f"Prediction: **{md(predicted)}** · {float(inside.probs.max()):.1%}"
    assert r"\*seven\* \[x\]\(y\)" in " ".join(c.value for c in app.caption)  # the picture's name, escaped
    assert r"[x](y)" not in " ".join(c.value for c in app.caption)


def test_an_upload_and_a_camera_shot(app, run_id):
    exported = load_run(Path(run_store().run(run_id)["weights_path"]))
    images, targets = digit_images()
    out = io.BytesIO()
    Image.fromarray(images[int((targets == 3).nonzero()[0][0])], "L").resize((40, 40)).save(out, format="PNG")
    app.segmented_control(key=INSIDE_SOURCE.key).set_value("Upload").run()
    assert "No picture yet." in [c.value for c in app.caption]
    app.file_uploader(key=INSIDE_UPLOAD.key).set_value(("my_three.png", out.getvalue(), "image/png")).run()
    assert not app.exception, app.exception
    assert len(stage_lines(app)) == 6
    inside = look_inside_image(exported, open_image(io.BytesIO(out.getvalue())))
    line = next(m.value for m in app.markdown if m.value.startswith("Prediction: **"))
    assert f"{float(inside.probs.max()):.1%}" in line

    app.file_uploader(key=INSIDE_UPLOAD.key).set_value(("notes.png", b"not a picture", "image/png")).run()
    assert not app.exception
    assert any("is not a picture Loupe can read" in e.value for e in app.error)
    assert stage_lines(app) == []

    app.segmented_control(key=INSIDE_SOURCE.key).set_value("Camera").run()
    app.camera_input(key=INSIDE_CAMERA.key).set_value(("image.jpg", out.getvalue(), "image/jpeg")).run()
    assert not app.exception, app.exception
    assert len(stage_lines(app)) == 6


def test_the_plain_language_note(app):
    app.session_state[EXPLAIN.key] = True
    app.run()
    note = next(i.value for i in app.info if "feature map" in i.value)
    assert "smaller" in note and "more numerous" in note
    assert "/glossary?draft=" in note
