"""How learning works: a digit as numbers, the closest-average baseline beside a trained run on the same split, and
gradient descent by hand stepping phase by phase at the learning rate the slider gives."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.data.split import SplitRule
from engine.results.learning import gradient, initialise, speed_data
from engine.data.resolve import resolve
from engine.spec import RunSpec, override
from ui.learning_view import LEARN_CLASS, LEARN_DESCENT, LEARN_INDEX, LEARN_LR
from ui.shared import run_store
from ui.state import EXPLAIN

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PAGE = "pages/learning.py"


@pytest.fixture()
def app(home, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(home))
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def phases(at: AppTest) -> str:
    return " ".join(m.value for m in at.markdown if m.value.startswith(("**", "Next")))


def click(at: AppTest, name: str) -> None:
    at.button(key=f"learning.{name}").click().run()
    assert not at.exception


def test_a_digit_as_numbers_and_the_baseline_far_above_chance(app):
    assert [h.value for h in app.header] == ["1 · A picture is numbers", "2 · The simplest baseline",
                                             "3 · Gradient descent by hand"]
    assert app.selectbox(key=LEARN_CLASS.key).options == ["eight", "five", "four", "nine", "one", "seven", "six",
                                                          "three", "two", "zero"]
    app.selectbox(key=LEARN_CLASS.key).select("seven").run()
    box = app.number_input(key=LEARN_INDEX.key)
    assert box.label.startswith("Picture (of ") and box.max == int(box.label.split("of ")[1].rstrip(")"))
    box.set_value(3).run()
    assert not app.exception and app.session_state[LEARN_INDEX.key] == 3
    shown = metrics(app)
    l1, l2 = (float(shown[f"Closest average · {n}"].rstrip("%")) for n in ("L1", "L2"))
    assert l1 > 70 and l2 > 70  # chance is 10 %
    assert float(shown["Always the largest class"].rstrip("%")) < 15
    assert shown["Trained model"] == "—"


def test_a_finished_run_on_the_same_split_is_set_beside_the_baseline(app):
    store = run_store()
    same = resolve(RunSpec(), guess_rules=False)
    ours = store.create_run(same, {"arch": "small", "pretrained": False})
    store.finish(ours, "done", accuracy=0.97)
    other = store.create_run(override(same, {"data.split": SplitRule(kind="random", valid_pct=0.2, seed=7)}),
                             {"arch": "small", "pretrained": False})
    store.finish(other, "done", accuracy=0.5)  # newer, but another validation set: not comparable
    app.run()
    assert metrics(app)[f"Trained model (run #{ours})"] == "97.0%"


def test_the_buttons_step_through_initialise_predict_loss_gradient_step(app):
    assert any("Click **Initialise**" in i.value for i in app.info)
    assert app.button(key="learning.predict").disabled
    click(app, "initialise")
    state = app.session_state[LEARN_DESCENT.key]
    assert state == initialise() and "a random first guess" in phases(app)
    for phase in ("predict", "loss", "gradient", "step"):
        assert [b.key for b in app.button if b.key and b.key.startswith("learning.") and not b.disabled] == \
            ["learning.initialise", f"learning.{phase}", "learning.run"]  # only the phase that comes next
        click(app, phase)
        assert app.session_state[LEARN_DESCENT.key].done == phase
    assert "Step 1" in phases(app) and app.session_state[LEARN_DESCENT.key].steps == 1
    assert app.session_state[LEARN_DESCENT.key].losses[0] == pytest.approx(30282.712188374084, rel=1e-9)
    click(app, "run")
    state = app.session_state[LEARN_DESCENT.key]
    assert state.steps == 11 and len(state.losses) == 11 and state.losses[-1] < 0.1 * state.losses[0]
    assert any("a good learning rate" in i.value for i in app.info)
    click(app, "initialise")
    assert app.session_state[LEARN_DESCENT.key] == initialise()


@pytest.mark.parametrize("lr", [1e-6, 3e-5])
def test_the_learning_rate_slider_sets_the_size_of_the_step(app, lr):
    assert app.select_slider(key=LEARN_LR.key).value == 1e-5  # the book's rate to start
    app.select_slider(key=LEARN_LR.key).set_value(lr).run()
    for phase in ("initialise", "predict", "loss", "gradient", "step"):
        click(app, phase)
    state, start = app.session_state[LEARN_DESCENT.key], gradient(initialise(), speed_data())
    assert state.lr == lr
    assert state.params == pytest.approx([p - lr * g for p, g in zip(start.params, start.grad)], rel=1e-12)
    assert f"− {lr:g} × (" in phases(app)


def test_too_large_a_rate_says_so_and_too_small_a_rate_says_so(app):
    app.select_slider(key=LEARN_LR.key).set_value(1e-4).run()
    click(app, "run")
    assert any("too large" in w.value for w in app.warning)
    app.select_slider(key=LEARN_LR.key).set_value(1e-8).run()
    click(app, "initialise")
    click(app, "run")
    assert any("barely moves" in i.value for i in app.info) and not app.warning


def test_explain_as_i_go_adds_a_note_to_each_section(app):
    assert not [i for i in app.info if i.icon == ":material/school:"]
    app.session_state[EXPLAIN.key] = True
    app.run()
    notes = [i.value for i in app.info if i.icon == ":material/school:"]
    assert len(notes) == 3 and "only numbers" in notes[0] and "average" in notes[1] and "gradient" in notes[2]
    assert "one ideal digit" in notes[1]  # the digits' note speaks of digits
