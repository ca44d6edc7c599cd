"""AppTest of the Data page: each source kind, label and split rule, and the bad inputs a user can give."""
from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from engine.data.labels import LabelRule
from engine.spec import RunSpec
from ui.draft import widget_key
from ui.state import (CACHE_LIMIT_GB, CLEAN_HEALTH, CLEAN_PENDING, DATA_SUMMARY, DRAFT, FOLDER_TEXT, SCAN_STOPPED,
                      SOURCE_KIND, VIEW_MODE, VIEW_ROWS)

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PATTERN, LABEL, SPLIT_KIND = widget_key("data.label.pattern"), widget_key("data.label"), widget_key("data.split.kind")
SOURCE = widget_key("data.source")
DIGIT_WORDS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}


@pytest.fixture()
def app(home, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(home))
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def keyed_block(node, key: str):
    """The container drawn with st.container(key=key), or None."""
    if getattr(getattr(node, "proto", None), "id", "").endswith("-" + key):
        return node
    return next((b for child in getattr(node, "children", {}).values() if (b := keyed_block(child, key))), None)


def grid_captions(at: AppTest) -> list[str]:
    """Captions of the show_batch grid's images (not the label-level chooser's or the health check's thumbnails)."""
    return [i.caption for image in keyed_block(at._tree, "show_batch").get("image") for i in image.proto.imgs if i.caption]


def no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def make_folder(root, names_and_images):
    root.mkdir(parents=True, exist_ok=True)
    for rel, img in names_and_images:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(img, bytes):
            path.write_bytes(img)
        else:
            img.save(path)
    return root


def test_builtin_names_default_path(app):
    no_exceptions(app)
    assert not app.error
    assert metric(app, "Classes") == "10"
    assert metric(app, "Labelled images") == "1,797"
    assert metric(app, "Training images") == "1,438"
    assert metric(app, "Validation images") == "359"
    captions = grid_captions(app)
    assert len(captions) == 9 and set(captions) <= DIGIT_WORDS
    draft = app.session_state[DRAFT.key]
    assert draft.data.source == "builtin:digits-names" and draft.data.label.pattern == r"^(.+)_\d+\.png$"
    assert draft.data.size is None  # automatic: 28 px for the built-in digits, as the widget shows
    assert app.number_input(key=widget_key("data.size")).value == 28
    assert app.number_input(key=widget_key("data.presize")).value == 58  # fastai's 460/224 ratio
    _, summary = app.session_state[DATA_SUMMARY.key]
    assert (summary.n_train, summary.n_valid, len(summary.classes)) == (1438, 359, 10)


def test_the_widgets_start_from_the_spec_defaults(app):
    """The app's starting values are the run spec's (the one place defaults live), resolved for the source."""
    defaults = RunSpec()
    assert app.number_input(key=widget_key("data.bs")).value == defaults.data.bs
    assert app.selectbox(key=widget_key("data.presize_method")).value == defaults.data.presize_method
    assert app.slider(key=widget_key("augment.max_rotate")).value == 10.0
    assert app.checkbox(key=widget_key("augment.do_flip")).value is False  # never for the built-in digits


def test_size_moves_the_presize_until_the_presize_is_set(app):
    app.number_input(key=widget_key("data.size")).set_value(64).run()
    assert app.number_input(key=widget_key("data.presize")).value == 131
    app.number_input(key=widget_key("data.presize")).set_value(80).run()
    app.number_input(key=widget_key("data.size")).set_value(48).run()
    assert app.number_input(key=widget_key("data.presize")).value == 80
    no_exceptions(app)


def test_a_bad_pattern_gives_a_message_here_and_on_the_train_page(app):
    app.text_input(key=PATTERN).set_value("^(.+_\\d+").run()
    no_exceptions(app)
    assert any("not a valid regular expression" in e.value for e in app.error)
    assert app.session_state[DRAFT.key].data.label.pattern == "^(.+_\\d+"  # the draft keeps what was typed
    app.switch_page("pages/train.py").run()
    assert any("data settings have a problem" in e.value and "regular expression" in e.value for e in app.error)
    app.switch_page("pages/data.py").run()
    app.text_input(key=PATTERN).set_value("^(.+)\\.png$").run()  # no digits: each file its own class… but valid
    no_exceptions(app)
    app.text_input(key=PATTERN).set_value("^zz(.+)$").run()
    assert any("no label to any" in e.value for e in app.error)
    app.text_input(key=PATTERN).set_value("^[a-z]+").run()
    assert any("no group" in e.value for e in app.error)


def test_a_regex_that_explodes_while_compiling_is_refused(app):
    app.text_input(key=PATTERN).set_value("((a{1000}){1000}){1000}(x)").run()
    no_exceptions(app)
    assert app.error


def test_regex_on_path_and_grid_modes(app):
    app.button_group(key=LABEL).set_value("path").run()
    app.text_input(key=PATTERN).set_value(r"(?P<label>[a-z]+)_\d+").run()
    no_exceptions(app)
    assert metric(app, "Classes") == "10"
    assert app.session_state[DRAFT.key].data.label == LabelRule(kind="regex", pattern=r"(?P<label>[a-z]+)_\d+", on="path")
    app.button_group(key=VIEW_MODE.key).set_value("unique").run()
    captions = grid_captions(app)
    assert len(captions) == 9 and len(set(captions)) == 1
    app.selectbox(key=VIEW_ROWS.key).set_value(2).run()
    app.button_group(key=VIEW_MODE.key).set_value("valid").run()
    assert len(grid_captions(app)) == 6


def test_builtin_folders_with_folder_and_csv_split(app):
    app.selectbox(key=SOURCE).set_value("digits-folders").run()
    no_exceptions(app)
    assert app.button_group(key=LABEL).value == "folder"
    assert app.button_group(key=SPLIT_KIND).value == "folder"
    assert metric(app, "Classes") == "10"
    assert set(grid_captions(app)) <= {str(d) for d in range(10)}
    folder_valid = metric(app, "Validation images")
    app.button_group(key=SPLIT_KIND).set_value("csv").run()
    no_exceptions(app)
    assert app.selectbox(key=widget_key("data.split.valid_col")).value == "is_valid"
    assert metric(app, "Validation images") == folder_valid
    app.button_group(key=LABEL).set_value("csv").run()
    no_exceptions(app)
    assert app.selectbox(key=widget_key("data.label.file_col")).value == "name"
    assert app.selectbox(key=widget_key("data.label.label_col")).value == "label"
    assert metric(app, "Classes") == "10"


def test_folder_with_bad_and_odd_images(app, tmp_path):
    rng = np.random.default_rng(0)

    def photo(mode):
        rgb = Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8), "RGB")
        return rgb.convert(mode)

    files = [(f"cats/cat_{i}.png", photo("RGBA")) for i in range(6)]
    files += [(f"dogs/dog_{i}.jpg", photo("CMYK")) for i in range(6)]
    files += [(f"dogs/dog_p{i}.png", photo("P")) for i in range(3)]
    files += [("cats/broken.png", b"\x89PNG\r\n\x1a\n garbage"), ("notes.txt", b"hello"), ("meta.mat", b"\x00")]
    root = make_folder(tmp_path / "pets", files)
    app.button_group(key=SOURCE_KIND.key).set_value("folder").run()
    app.text_input(key=FOLDER_TEXT.key).set_value(str(tmp_path / "missing")).run()
    assert any("does not exist" in e.value for e in app.error)
    app.text_input(key=FOLDER_TEXT.key).set_value(str(root)).run()
    no_exceptions(app)
    assert not app.error
    assert app.button_group(key=LABEL).value == "folder"  # suggested from the layout
    assert metric(app, "Classes") == "2"
    assert any("2 other files ignored" in c.value for c in app.caption)
    unreadable = [df for df in app.dataframe if "reason" in df.value.columns]
    assert len(unreadable) == 1 and unreadable[0].value["file"].tolist() == ["cats/broken.png"]
    assert any("CMYK" in c.value and "RGBA" in c.value and "P ×" in c.value for c in app.caption)
    assert len(grid_captions(app)) == 9


def test_single_class_and_empty_folder_are_refused(app, tmp_path):
    one = make_folder(tmp_path / "one", [(f"cats/cat_{i}.png", Image.new("RGB", (8, 8))) for i in range(5)])
    app.button_group(key=SOURCE_KIND.key).set_value("folder").run()
    app.text_input(key=FOLDER_TEXT.key).set_value(str(one)).run()
    assert any("only one class" in e.value for e in app.error)
    empty = make_folder(tmp_path / "empty", [("readme.txt", b"no images here")])
    app.text_input(key=FOLDER_TEXT.key).set_value(str(empty)).run()
    assert any("holds no images" in e.value for e in app.error)
    no_exceptions(app)


def test_pathological_pattern_answers_quickly(app, tmp_path):
    files = [(f"{'a' * 30}{i % 2}_{i}!.png", Image.new("L", (8, 8))) for i in range(40)]
    root = make_folder(tmp_path / "aaa", files)
    app.button_group(key=SOURCE_KIND.key).set_value("folder").run()
    app.text_input(key=FOLDER_TEXT.key).set_value(str(root)).run()
    app.button_group(key=LABEL).set_value("name").run()
    app.text_input(key=PATTERN).set_value(r"^((a|aa)+)$").run()  # alone, it would run for minutes
    assert any("takes too long" in e.value for e in app.error)
    no_exceptions(app)


def test_download_offline_says_so(app, home, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on: the "internet" is unreachable
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("LOUPE_DATASETS_URL", f"http://127.0.0.1:{port}")
    app.button_group(key=SOURCE_KIND.key).set_value("download").run()
    app.selectbox(key=SOURCE).set_value("MNIST_TINY").run()
    app.button(key="data.download").click().run()
    no_exceptions(app)
    assert any("offline" in e.value for e in app.error)
    assert not (home / "datasets" / "mnist_tiny").exists()


@pytest.mark.parametrize("path, message", [("/", "top folder"), ("/proc", "system folder")])
def test_system_folders_get_a_message(app, path, message):
    app.button_group(key=SOURCE_KIND.key).set_value("folder").run()
    app.text_input(key=FOLDER_TEXT.key).set_value(path).run()
    no_exceptions(app)
    assert app.error and not app.get("image")


def test_a_stopped_scan_is_not_started_again_until_asked(app, tmp_path):
    root = make_folder(tmp_path / "pets", [(f"{c}/{c}{i}.png", Image.new("RGB", (8, 8))) for c in "ab" for i in range(5)])
    app.button_group(key=SOURCE_KIND.key).set_value("folder").run()
    app.text_input(key=FOLDER_TEXT.key).set_value(str(root)).run()
    assert metric(app, "Classes") == "2"
    app.session_state[SCAN_STOPPED.key] = str(root.resolve())  # what the Stop button's click leaves
    app.run()
    no_exceptions(app)
    assert any("You stopped reading" in w.value for w in app.warning) and not app.metric
    app.button(key="data.rescan").click().run()
    assert metric(app, "Classes") == "2"


def test_unreadable_folders_broken_links_and_duplicate_csv_rows_are_said(app, tmp_path):
    files = [(f"{c}/{c}{i}.png", Image.new("RGB", (8, 8), (40 * i, 10, 10))) for c in ("cats", "dogs") for i in range(6)]
    root = make_folder(tmp_path / "pets", files)
    (root / "cats" / "gone.png").symlink_to(root / "nowhere.png")
    app.button_group(key=SOURCE_KIND.key).set_value("folder").run()
    app.text_input(key=FOLDER_TEXT.key).set_value(str(root)).run()
    no_exceptions(app)
    assert any("Broken links (1)" in t.label for t in app.tabs)
    assert any("cats/gone.png" in str(df.value.values) for df in app.dataframe)
    (root / "labels.csv").write_text("name,label\ncats0.png,cats\ncats0.png,dogs\n" +
                                     "".join(f"{c}{i}.png,{c}\n" for c in ("cats", "dogs") for i in range(6)))
    app.button_group(key=LABEL).set_value("csv").run()
    no_exceptions(app)
    assert any("more than one row" in w.value and "first row" in w.value for w in app.warning)


def test_copies_and_leaks_are_shown_and_sent_to_the_cleaner(app, tmp_path):
    rng = np.random.default_rng(1)
    pictures = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), "RGB") for _ in range(12)]
    files = [(f"train/{c}/{c}{i}.png", pictures[6 * k + i]) for k, c in enumerate(("cats", "dogs")) for i in range(5)]
    files += [("valid/cats/cats9.png", pictures[5]), ("valid/dogs/dogs9.png", pictures[11])]
    files += [("valid/cats/copy_of_cat0.png", pictures[0])]  # a train picture again, in valid: a leak
    files += [("train/dogs/cat_as_dog.png", pictures[1])]  # a cat picture under the dog label
    root = make_folder(tmp_path / "pets", files)
    app.button_group(key=SOURCE_KIND.key).set_value("folder").run()
    app.text_input(key=FOLDER_TEXT.key).set_value(str(root)).run()
    no_exceptions(app)
    tabs = {t.label for t in app.tabs}
    assert "Train/valid leaks (1)" in tabs and "Two labels (1)" in tabs and "Duplicates (2)" in tabs
    assert any("both the training and the validation" in w.value or "leak" in w.value.lower() for w in app.warning)
    app.button(key="health.send.leaks").click().run()  # the Clean page opens on the health check's list
    no_exceptions(app)
    handed = app.session_state[CLEAN_HEALTH.key]
    assert handed["root"] == str(root.resolve())
    assert handed["choices"] == {"train/cats/cats0.png": "keep", "valid/cats/copy_of_cat0.png": "delete"}  # exact copies
    assert app.session_state[CLEAN_PENDING.key]["choices"] == {"valid/cats/copy_of_cat0.png": "delete"}


def smooth_pictures(n: int, seed: int) -> list[Image.Image]:
    """Different pictures that stay the same when re-saved or resized: 6×6 random colours blown up to 48×48."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8), "RGB").resize((48, 48), Image.BICUBIC)
            for _ in range(n)]


def marked(at: AppTest) -> dict[str, str]:
    """The Clean page's choice of each image it shows, by relative path."""
    return {s.key.removeprefix("clean.choice."): s.value for s in at.selectbox
            if s.key and s.key.startswith("clean.choice.")}


def test_send_to_the_cleaner_sends_what_its_label_says(app, tmp_path):
    """Each tab's button counts what it sends and marks; only exact extra copies arrive marked, near copies do not."""
    from io import BytesIO

    from ui.text import md

    pictures = smooth_pictures(12, 5)
    files = [(f"train/cats/c{i}.png", pictures[i]) for i in range(5)] + [("valid/cats/v.png", pictures[5])]
    files += [(f"train/dogs/d{i}.png", pictures[6 + i]) for i in range(5)] + [("valid/dogs/v.png", pictures[11])]
    files += [("train/cats/end_daul.png", pictures[1]), ("valid/cats/end_daul.png", pictures[1])]  # exact, one a leak
    files += [("train/dogs/d2_copy.png", pictures[8])]  # an exact copy of d2
    resaved = BytesIO()
    pictures[8].resize((40, 40)).save(resaved, "JPEG", quality=85)
    files += [("train/dogs/d2_resaved.jpg", resaved.getvalue())]  # a near copy of d2
    root = make_folder(tmp_path / "pets", files)
    app.button_group(key=SOURCE_KIND.key).set_value("folder").run()
    app.text_input(key=FOLDER_TEXT.key).set_value(str(root)).run()
    no_exceptions(app)
    captions = [i.caption for image in app.get("image") for i in image.proto.imgs if i.caption]
    # two end_daul.png told apart by their paths, escaped as every file name is
    assert md("train/cats/end_daul.png · cats · train · extra copy") in captions
    assert md("valid/cats/end_daul.png · cats · valid · extra copy") in captions
    assert md("train/dogs/d2_resaved.jpg · dogs · train") in captions
    assert any("near copies: at least" in c.value and "of their content matches" in c.value for c in app.caption)
    assert any("the first by path among the training images is kept" in c.value for c in app.caption)
    expected = {  # tab: (label, the choices sent)
        "duplicates": ("Send 5 pictures to the cleaner: 3 extra exact copies marked for deletion, 2 unmarked",
                       {"train/cats/c1.png": "keep", "train/cats/end_daul.png": "delete",
                        "valid/cats/end_daul.png": "delete", "train/dogs/d2.png": "keep",
                        "train/dogs/d2_copy.png": "delete"}),
        "near_duplicates": ("Send 3 pictures to the cleaner: 1 extra exact copy marked for deletion, 2 unmarked",
                            {"train/dogs/d2.png": "keep", "train/dogs/d2_copy.png": "delete",
                             "train/dogs/d2_resaved.jpg": "keep"}),
        "leaks": ("Send 3 pictures to the cleaner: 2 extra exact copies marked for deletion, 1 unmarked",
                  {"train/cats/c1.png": "keep", "train/cats/end_daul.png": "delete",
                   "valid/cats/end_daul.png": "delete"}),
    }
    for kind, (label, choices) in expected.items():
        assert app.button(key=f"health.send.{kind}").label == label
        app.button(key=f"health.send.{kind}").click().run()  # the Clean page opens on the list
        no_exceptions(app)
        assert app.session_state[CLEAN_HEALTH.key]["choices"] == choices
        shown = marked(app)
        assert shown == choices  # every picture sent is on the page, with the choice the label promised
        n_marked = sum(v == "delete" for v in shown.values())
        assert f"{n_marked} extra exact cop" in label and f"Send {len(shown)} pictures" in label
        assert app.button(key="clean.apply").label == f"Apply {n_marked} change(s)"
        assert any(f"{n_marked:,} marked for deletion (exact extra copies)" in c.value for c in app.caption)
        app.switch_page("pages/data.py").run()
        no_exceptions(app)


def test_an_upload_can_be_deleted_to_the_trash_after_a_confirmation(app, home):
    upload = make_folder(home / "uploads" / "my pets", [(f"{c}/{c}{i}.png", Image.new("RGB", (8, 8))) for c in "ab"
                                                         for i in range(5)])
    app.button_group(key=SOURCE_KIND.key).set_value("zip").run()
    no_exceptions(app)
    assert app.selectbox(key=SOURCE).value == "my pets"
    app.button(key="data.delete_upload").click().run()
    assert any("Move “my pets” to Loupe's trash?" in w.value for w in app.warning) and upload.exists()
    app.button(key="data.delete_upload_yes").click().run()
    no_exceptions(app)
    assert not upload.exists()
    trashed = list((home / "trash").rglob("my pets/a/a0.png"))
    assert len(trashed) == 1
    assert any("is in Loupe's trash" in s.value for s in app.success)


def test_a_restarted_server_removes_what_a_crashed_unpacking_left(home, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(home))
    stale = home / "uploads" / ".loupe-extract-crashed"
    (stale / "cats").mkdir(parents=True)
    st.cache_resource.clear()  # a new server process
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    no_exceptions(at)
    assert not stale.exists()


def test_a_label_kind_can_be_chosen_back_after_another(app, tmp_path):
    """Choosing a rule the page showed before (folder → regex → folder) is the user's choice, not a stale echo."""
    root = make_folder(tmp_path / "pets", [(f"{c}/{c}{i}.png", Image.new("RGB", (8, 8))) for c in "ab" for i in range(5)])
    app.button_group(key=SOURCE_KIND.key).set_value("folder").run()
    app.text_input(key=FOLDER_TEXT.key).set_value(str(root)).run()
    assert app.button_group(key=LABEL).value == "folder"
    app.button_group(key=LABEL).set_value("name").run()
    assert app.button_group(key=LABEL).value == "name"
    app.button_group(key=LABEL).set_value("folder").run()
    no_exceptions(app)
    assert app.button_group(key=LABEL).value == "folder" and metric(app, "Classes") == "2"


def test_a_label_kind_clicked_while_the_pattern_change_is_on_its_way_is_taken(app, tmp_path):
    """A quick user: a new pattern and, before the page has answered, a click back on "Parent folder". Both arrive
    in one rerun; the click is the user's choice (the page never moved the label kind itself), not a stale echo."""
    root = make_folder(tmp_path / "pets", [(f"{c}/{c}{i}.png", Image.new("RGB", (8, 8))) for c in "ab" for i in range(5)])
    app.button_group(key=SOURCE_KIND.key).set_value("folder").run()
    app.text_input(key=FOLDER_TEXT.key).set_value(str(root)).run()
    app.button_group(key=LABEL).set_value("name").run()
    app.text_input(key=PATTERN).set_value("((a{1000}){1000}){1000}(x)")
    app.button_group(key=LABEL).set_value("folder").run()
    no_exceptions(app)
    assert app.button_group(key=LABEL).value == "folder" and metric(app, "Classes") == "2"
    assert app.session_state[DRAFT.key].data.label.kind == "folder"


def test_the_presize_cache_can_be_limited_and_cleared(app, home):
    from engine.data.cache import cache_size, disk_limit_bytes

    no_exceptions(app)
    assert cache_size() > 0  # the built-in digits, presized once, on disk
    assert any(e.label.startswith("Presize cache:") for e in app.expander)
    app.number_input(key=CACHE_LIMIT_GB.key).set_value(2.0).run()
    assert disk_limit_bytes() == 2 * 1024**3 and any("Limit set to 2 GB" in s.value for s in app.success)
    app.button(key="data.clear_cache").click().run()
    no_exceptions(app)
    assert any("Cache cleared" in s.value for s in app.success)


def sidebar_counts() -> str:
    """The sidebar's line '<n> classes · <n> train · <n> valid', as a new window (same server, same draft) shows it."""
    window = AppTest.from_file(APP, default_timeout=300)
    window.run()
    return next(c.value for c in window.sidebar.caption if " train · " in c.value)


def test_sidebar_and_page_show_one_count_that_follows_the_cleaner(app, tmp_path):
    """Unreadable files are left out of the counts everywhere; a clean (from any window) changes them everywhere."""
    from engine.data.clean import DELETE, Change, apply_changes

    rng = np.random.default_rng(1)
    files = [(f"{animal}/{animal}_{i}.png", Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)))
             for animal in ("cats", "dogs") for i in range(12)]
    files += [(f"cats/broken_{i}.png", b"\x89PNG\r\n\x1a\n not a picture") for i in range(3)]
    root = make_folder(tmp_path / "pets", files)
    app.button_group(key=SOURCE_KIND.key).set_value("folder").run()
    app.text_input(key=FOLDER_TEXT.key).set_value(str(root)).run()
    no_exceptions(app)
    train, valid = int(metric(app, "Training images")), int(metric(app, "Validation images"))
    assert train + valid == 24  # 27 labelled, 3 cannot be read
    classes = metric(app, "Classes")
    assert sidebar_counts() == f"{classes} classes · {train} train · {valid} valid"

    rule = app.session_state[DRAFT.key].data.label
    apply_changes(root, rule, [Change("dogs/dogs_0.png", DELETE), Change("dogs/dogs_1.png", DELETE)])
    app.run()
    no_exceptions(app)
    after = int(metric(app, "Training images")), int(metric(app, "Validation images"))
    assert sum(after) == 22
    _, summary = app.session_state[DATA_SUMMARY.key]
    assert (summary.n_train, summary.n_valid, summary.n_unreadable) == (*after, 3)  # what this window's sidebar shows
    assert sidebar_counts() == f"{classes} classes · {after[0]} train · {after[1]} valid"


def test_the_health_check_runs_in_the_background_with_a_progress_bar(app, tmp_path, monkeypatch):
    """With no time to wait, the page draws at once: the counts and batches are there, the health check shows its
    progress until it ends, then the panel."""
    import threading

    import engine.data.data_prep as data_prep

    held, original = threading.Event(), data_prep.health_check

    def held_check(*args, **kwargs):
        held.wait(120)  # the check holds here until the test lets it go
        return original(*args, **kwargs)

    monkeypatch.setattr(data_prep, "health_check", held_check)
    rng = np.random.default_rng(2)
    root = make_folder(tmp_path / "shapes", [(f"{kind}/{kind}_{i}.png",
                                              Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)))
                                             for kind in ("round", "square") for i in range(8)])
    app.button_group(key=SOURCE_KIND.key).set_value("folder").run()
    monkeypatch.setenv("LOUPE_PAGE_WAIT_S", "0")
    app.text_input(key=FOLDER_TEXT.key).set_value(str(root)).run()
    for _ in range(100):  # the read is quick but not instant: a rerun, as the progress bar's own timer does
        if any(m.label == "Training images" for m in app.metric):
            break
        held.wait(0.05)
        app.run()
    no_exceptions(app)
    assert int(metric(app, "Training images")) + int(metric(app, "Validation images")) == 16
    assert any("for copies and leaks" in p.proto.text for p in app.get("progress"))
    assert not any(m.label == "Extra copies" for m in app.metric)
    assert len(grid_captions(app)) == 9  # show_batch below is not held
    held.set()
    monkeypatch.setenv("LOUPE_PAGE_WAIT_S", "300")
    app.run()
    assert any(m.label == "Extra copies" for m in app.metric)
    assert not any("for copies and leaks" in p.proto.text for p in app.get("progress"))
