"""AppTest of the Data page's level chooser: each folder level with its classes and pictures, one click to use it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from ui.draft import widget_key
from ui.label_levels import FRAME, GAP_PX, PAD_PX, THUMB_PX, strip
from ui.state import DRAFT, FOLDER_TEXT, SOURCE_KIND

APP = str(Path(__file__).resolve().parents[2] / "app.py")
LABEL, PATTERN = widget_key("data.label"), widget_key("data.label.pattern")
COLOURS = ("red", "blue", "green", "black", "white", "yellow")


@pytest.fixture()
def app(home, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(home))
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    return at


def make_tree(root: Path, rels: list[str]) -> Path:
    for i, rel in enumerate(rels):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGBA" if i % 2 else "P", (8 + i % 3, 8), COLOURS[i % len(COLOURS)]).save(root / rel)
    return root


def open_folder(at: AppTest, root: Path) -> None:
    at.button_group(key=SOURCE_KIND.key).set_value("folder").run()
    at.text_input(key=FOLDER_TEXT.key).set_value(str(root)).run()
    assert not at.exception, [e.value for e in at.exception]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def level_button(at: AppTest, title: str):
    return at.button(key="data.level." + title.lower().replace(" ", "-"))


def keyed_block(node, key: str):
    """The container drawn with st.container(key=key), or None."""
    if getattr(getattr(node, "proto", None), "id", "").endswith("-" + key):
        return node
    return next((b for child in getattr(node, "children", {}).values() if (b := keyed_block(child, key))), None)


def captions(at: AppTest) -> list[str]:
    """Captions of the level chooser's thumbnails."""
    return [i.caption for image in keyed_block(at._tree, "data.levels").get("image") for i in image.proto.imgs if i.caption]


CLIPART = ([f"{top}/{i}.png" for top in ("animals", "food") for i in range(2)]
           + [f"animals/{sub}/{i}.png" for sub in ("birds", "cats") for i in range(4)]
           + [f"food/{sub}/{i}.png" for sub in ("fruit", "drinks") for i in range(4)])
TANGO = [f"{size}/{cat}/{name}.png" for size in ("16x16", "32x32") for cat in ("actions", "apps", "places")
         for name in ("home", "copy")]


def test_a_mixed_depth_folder_starts_on_its_top_level_and_the_parent_is_one_click(app, tmp_path):
    open_folder(app, make_tree(tmp_path / "clipart", CLIPART))
    assert app.button_group(key=LABEL).value == "top-folder" and metric(app, "Classes") == "2"
    top, parent = level_button(app, "Top-level folder"), level_button(app, "Parent folder")
    assert top.label == "In use" and top.disabled and parent.label == "Use this" and not parent.disabled
    assert any("birds" in w.value and "inside" in w.value for w in app.warning)  # the parent level nests classes
    assert any("Loupe's guess" in m.value for m in app.markdown if m.value.startswith("**Top-level folder**"))
    shown = captions(app)
    assert {"animals", "food", "birds", "cats"} <= set(shown)  # example pictures per class, for each level
    parent.click().run()
    assert not app.exception
    assert app.button_group(key=LABEL).value == "folder" and metric(app, "Classes") == "6"
    assert app.session_state[DRAFT.key].data.label.kind == "folder"
    assert level_button(app, "Parent folder").disabled and not level_button(app, "Top-level folder").disabled


def test_a_tango_like_folder_starts_on_the_parent_and_the_sizes_are_one_click(app, tmp_path):
    open_folder(app, make_tree(tmp_path / "tango", TANGO))
    assert app.button_group(key=LABEL).value == "folder" and metric(app, "Classes") == "3"
    assert any("named like sizes" in c.value for c in app.caption)  # why the top level is not the guess
    assert any("Reads every picture as the top-level folder does" in c.value for c in app.caption)  # grandparent
    assert sorted(captions(app)) == ["16x16", "32x32", "actions", "apps", "places"]  # a class once, under its pictures
    level_button(app, "Top-level folder").click().run()
    assert app.button_group(key=LABEL).value == "top-folder" and metric(app, "Classes") == "2"


def test_a_class_s_examples_lie_side_by_side_on_white_under_one_caption():
    wide = np.zeros((THUMB_PX // 2, THUMB_PX, 3), np.uint8)  # a landscape picture, fitted to the box
    tall = np.full((THUMB_PX, 10, 3), 7, np.uint8)
    out = strip([wide, tall])
    assert out.shape == (THUMB_PX + 2 * PAD_PX, 2 * THUMB_PX + GAP_PX + 2 * PAD_PX, 3)
    assert (out[0] == FRAME).all() and (out[-1] == FRAME).all() and (out[:, 0] == FRAME).all()  # framed
    inside = out[PAD_PX:-PAD_PX, PAD_PX:-PAD_PX]
    assert (inside[THUMB_PX // 4:THUMB_PX * 3 // 4, :THUMB_PX] == 0).all()  # centred in its square
    assert (inside[:THUMB_PX // 4, :THUMB_PX] == 255).all() and (inside[:, THUMB_PX:THUMB_PX + GAP_PX] == 255).all()
    left = THUMB_PX + GAP_PX + (THUMB_PX - 10) // 2
    assert (inside[:, left:left + 10] == 7).all() and (inside[:, THUMB_PX + GAP_PX:left] == 255).all()


def test_a_level_under_a_wrapping_folder_is_a_path_regex(app, tmp_path):
    rels = [f"photos/{c}/{i}.png" for c in ("cats", "dogs") for i in range(3)] + ["photos/cats/indoor/9.png"]
    open_folder(app, make_tree(tmp_path / "wrapped", rels))
    assert app.button_group(key=LABEL).value == "path" and app.text_input(key=PATTERN).value == "^[^/]+/([^/]+)/"
    assert metric(app, "Classes") == "2"
    assert level_button(app, "Folder 2 levels down").disabled


def test_folder_names_in_the_chooser_are_text(app, tmp_path):
    rels = [f"{name}/{sub}/{i}.png" for name in ("**bold**", "[x](http:__e)") for sub in ("a", "b") for i in range(2)]
    open_folder(app, make_tree(tmp_path / "hostile", rels))
    shown = captions(app)
    assert r"\*\*bold\*\*" in shown and r"\[x\]\(http\:\_\_e\)" in shown  # escaped: shown as typed
    assert "**bold**" not in shown and "[x](http:__e)" not in shown


def test_the_name_regex_is_offered_beside_the_levels(app, tmp_path):
    rels = [f"{folder}/{breed}_{i}.png" for folder, breed in (("one", "tabby"), ("one", "beagle"), ("two", "pug"))
            for i in range(3)]
    open_folder(app, make_tree(tmp_path / "named", rels))
    assert app.button_group(key=LABEL).value == "name"  # suggest_rules: names like beagle_12 win
    regex = level_button(app, "Regex on the file name")
    assert regex.label == "In use" and level_button(app, "Parent folder").label == "Use this"
    assert {"tabby", "beagle", "pug"} <= set(captions(app))
    level_button(app, "Parent folder").click().run()
    assert app.button_group(key=LABEL).value == "folder" and metric(app, "Classes") == "2"
