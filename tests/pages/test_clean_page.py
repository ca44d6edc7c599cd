"""AppTest of the Clean page: stale choices dropped, and the health check's list applied and undone without a run."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from engine.builtin import DIGIT_WORDS, digit_images, ensure_builtin
from engine.data import PresizeCache
from engine.drafts import DraftStore, new_draft_id
from engine.jobs import Job
from engine.labels import LabelRule
from engine.spec import DataSpec, RunSpec, override
from engine.split import SplitRule
from engine.training import train_target
from ui.clean_view import HEALTH, drop_stale_choices
from ui.state import (CLEAN_HEALTH_PAGE, CLEAN_LABEL, CLEAN_PAGE, CLEAN_PENDING, CLEAN_PER_PAGE, CLEAN_VIEW,
                      clean_choice, run_store)
from ui.text import md

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


def with_draft(spec: RunSpec) -> None:
    """The next window starts from this spec (the newest saved draft)."""
    DraftStore().save(new_draft_id(), spec)


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".loupe-trash" not in p.parts}


def choice_boxes(at) -> dict[str, object]:
    """The choice select box of each image on the page, by its relative path."""
    return {s.key.removeprefix("clean.choice."): s for s in at.selectbox if s.key and s.key.startswith("clean.choice.")}


def image_captions(at) -> list[str]:
    return [img.caption for element in at.get("image") for img in element.proto.imgs]


def apply_label(at) -> str:
    return at.button(key="clean.apply").label


def in_trash(root: Path, name: str) -> list[Path]:
    return [p for p in (root / ".loupe-trash").rglob(name) if p.is_file()]


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


# ---------------------------------------------------------------- from the health check

def test_health_list_on_the_builtin_digits_applies_and_undoes(app):
    root = ensure_builtin("digits-names")
    before = tree(root)
    names = sorted(p.name for p in root.glob("*.png"))
    seven, three, two = (next(n for n in names if n.startswith(f"{d}_")) for d in ("seven", "three", "two"))
    app.session_state[CLEAN_PENDING.key] = {"root": str(root), "source": "health",
                                            "choices": {seven: "one", three: "delete", two: "keep"}}
    app.switch_page("pages/clean.py").run()
    assert not app.exception, app.exception
    assert app.segmented_control(key=CLEAN_VIEW.key).value == HEALTH
    boxes = choice_boxes(app)
    assert {rel: box.value for rel, box in boxes.items()} == {seven: "one", three: "delete", two: "keep"}
    assert image_captions(app) == [md(f"{seven} · seven"), md(f"{three} · three"), md(f"{two} · two")]
    assert apply_label(app) == "Apply 2 change(s)"

    app.button(key="clean.apply").click().run()
    assert not app.exception, app.exception
    relabelled = root / seven.replace("seven_", "one_")
    assert not (root / seven).exists() and not (root / three).exists()
    assert hashlib.sha256(relabelled.read_bytes()).hexdigest() == before[seven]
    [trashed] = in_trash(root, three)
    assert hashlib.sha256(trashed.read_bytes()).hexdigest() == before[three]
    assert list(choice_boxes(app)) == [two]  # the others are no longer in the data set under those names
    assert any("2 listed image(s) are no longer in the data set" in c.value for c in app.caption)

    app.button(key="clean.undo").click().run()
    assert not app.exception, app.exception
    assert tree(root) == before


@pytest.fixture()
def same_names(tmp_path) -> Path:
    """Digits in class folders where one/a.png and seven/a.png share a name: 7 images a class, in three classes."""
    images, targets = digit_images()
    root = tmp_path / "same names"
    for digit in (1, 3, 7):
        folder = root / DIGIT_WORDS[digit]
        folder.mkdir(parents=True)
        for j, i in enumerate((targets == digit).nonzero()[0][:7]):
            Image.fromarray(images[int(i)], "L").save(folder / ("a.png" if j == 0 else f"{digit}_{j}.png"))
    return root


def test_two_images_of_the_same_name_on_different_pages(app, same_names):
    root = same_names
    with_draft(RunSpec(data=DataSpec(source=str(root), label=LabelRule(kind="folder"), split=SplitRule(kind="random"),
                                     size=28, presize=32)))
    before = tree(root)
    rels = sorted(before)
    listed = ["one/a.png"] + [r for r in rels if not r.endswith("/a.png")][:12] + ["seven/a.png"]
    app.session_state[CLEAN_PENDING.key] = {"root": str(root), "source": "health",
                                            "choices": dict.fromkeys(listed, "keep")}
    app.switch_page("pages/clean.py").run()
    assert not app.exception, app.exception
    assert list(choice_boxes(app)) == listed[:12]
    app.selectbox(key=clean_choice("one/a.png").key).set_value("delete").run()
    app.number_input(key=CLEAN_HEALTH_PAGE.key).set_value(2).run()
    assert list(choice_boxes(app)) == listed[12:]
    app.selectbox(key=clean_choice("seven/a.png").key).set_value("one").run()
    assert apply_label(app) == "Apply 2 change(s)"

    app.button(key="clean.apply").click().run()
    assert not app.exception, app.exception
    assert not (root / "seven" / "a.png").exists()
    now = tree(root)
    assert [rel for rel, digest in now.items() if digest == before["seven/a.png"]][0].startswith("one/")
    [trashed] = in_trash(root, "a.png")
    assert hashlib.sha256(trashed.read_bytes()).hexdigest() == before["one/a.png"]
    assert list(choice_boxes(app)) == listed[1:13]  # 12 left: one page
    assert apply_label(app) == "Apply 0 change(s)"

    app.button(key="clean.undo").click().run()
    assert not app.exception, app.exception
    assert tree(root) == before
