"""AppTest of the Interpret, Clean and Predict & export pages, on a real one-epoch run on the built-in digits."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import onnx
import pytest
from streamlit.testing.v1 import AppTest

from engine.data.resolve import data_root
from engine.data.loaders import PresizeCache
from engine.results.interpret import most_confused, top_losses
from engine.results.review import review_run
from ui.shared import run_store
from ui.state import (CLEAN_LABEL, INTERPRET_ACTUAL, INTERPRET_CAM, INTERPRET_K, INTERPRET_PREDICTED, PREDICT_SOURCE,
                      PREDICT_VALID_ITEMS, REVIEW_RUN, clean_choice)

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture(scope="module")
def run_id(digits_run) -> int:
    return digits_run


@pytest.fixture()
def app(home, monkeypatch, run_id):
    monkeypatch.setenv("LOUPE_HOME", str(home))
    return AppTest.from_file(APP, default_timeout=300)


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".loupe-trash" not in p.parts}


def image_captions(at) -> list[str]:
    """Captions of every image on the page, in order, as a reader sees them (captions are escaped Markdown)."""
    return [re.sub(r"\\(.)", r"\1", img.caption) for element in at.get("image") for img in element.proto.imgs]


def test_interpret_top_losses_confusion_cell_metrics_and_unsure(app, run_id):
    app.switch_page("pages/interpret.py").run()
    assert not app.exception, app.exception
    assert app.selectbox(key=REVIEW_RUN.key).value == run_id
    review = review_run(run_store().run(run_id), PresizeCache())
    expected = top_losses(review.preds, 9)
    titles = image_captions(app)
    wanted = [f"{r.predicted}/{r.actual} / {r.loss:.2f} / {r.probability:.2f}" for r in expected.itertuples()]
    assert titles[:9] == wanted

    app.number_input(key=INTERPRET_K.key).set_value(4).run()
    titles = image_captions(app)
    assert titles[:4] == wanted[:4] and wanted[4] not in titles

    actual, predicted, count = most_confused(review.preds)[0]
    app.selectbox(key=INTERPRET_ACTUAL.key).set_value(actual).run()
    app.selectbox(key=INTERPRET_PREDICTED.key).set_value(predicted).run()
    assert not app.exception
    assert any(f"{count:,} image(s) of {actual} predicted as {predicted}" in m.value for m in app.markdown)
    cell = [c for c in image_captions(app) if c.endswith(".png / " + c.rsplit(" / ", 1)[-1])]
    assert len(cell) == min(count, 50)

    app.toggle(key=INTERPRET_CAM.key).set_value(True).run()
    assert not app.exception
    table = next(d.value for d in app.dataframe if "precision" in d.value.columns)
    assert list(table["class"]) == review.preds.classes
    assert table["support"].sum() == len(review.preds)


def test_predict_validation_images_and_export_buttons(app, run_id):
    app.switch_page("pages/predict.py").run()
    assert not app.exception, app.exception
    review = review_run(run_store().run(run_id), PresizeCache())
    app.segmented_control(key=PREDICT_SOURCE.key).set_value("Validation images").run()
    picks = review.preds.items[:2]
    app.multiselect(key=PREDICT_VALID_ITEMS.key).set_value(picks).run()
    assert not app.exception, app.exception
    tops = [review.preds.classes[i] for i in review.preds.preds[:2].tolist()]
    shown = [m.value for m in app.markdown if m.value.startswith("**")]
    assert [s.split("**")[1] for s in shown[:2]] == tops
    assert [b.label for b in app.get("download_button")] == ["Download model (zip)"]
    app.button(key="export.onnx_make").click().run()
    assert not app.exception, app.exception
    assert [b.label for b in app.get("download_button")] == ["Download model (zip)", "Download ONNX"]
    onnx_path = Path(run_store().run(run_id)["weights_path"]) / "model.onnx"  # kept with the run
    onnx.checker.check_model(onnx.load(str(onnx_path)))


def test_clean_delete_and_relabel_then_undo(app, run_id, home):
    root = data_root(run_store().run(run_id)["spec"].data)
    before = tree(root)
    app.switch_page("pages/clean.py").run()
    assert not app.exception, app.exception
    app.selectbox(key=CLEAN_LABEL.key).set_value("seven").run()
    choices = [s for s in app.selectbox if s.key and s.key.startswith("clean.choice.")]
    assert len(choices) == 12
    first, second = choices[0].key.removeprefix("clean.choice."), choices[1].key.removeprefix("clean.choice.")
    choices[0].set_value("delete").run()
    app.selectbox(key=clean_choice(second).key).set_value("one").run()
    app.button(key="clean.apply").click().run()
    assert not app.exception, app.exception
    assert not (root / first).exists() and not (root / second).exists()
    assert (root / second.replace("seven_", "one_")).exists()
    assert any("Undo" in b.label for b in app.button)

    app.button(key="clean.undo").click().run()
    assert not app.exception, app.exception
    assert tree(root) == before


def test_reset_builtin_from_the_clean_page(app, run_id):
    root = data_root(run_store().run(run_id)["spec"].data)
    victim = sorted(root.glob("three_*.png"))[0]
    victim.unlink()  # as if cleaned outside Loupe
    app.switch_page("pages/clean.py").run()
    app.button(key="clean.reset").click().run()
    app.button(key="clean.reset_yes").click().run()
    assert not app.exception, app.exception
    assert victim.exists() and len(list(root.glob("*.png"))) == 1797
