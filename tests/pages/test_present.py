"""Present mode: the sidebar's switch brings larger type, folds the technical tables into closed expanders and puts
the demo script's steps in the sidebar; off, the pages are as before."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ui.explain import DEMO_STEPS
from ui.present import FONT_PX, PRESENT

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture(scope="module")
def run_id(digits_run) -> int:
    return digits_run


def open_app(home, monkeypatch, present: bool) -> AppTest:
    """A new window on the Data page, with Present on or off from its first run (AppTest reruns only the page, so
    the app's frame and sidebar are drawn by a window's first run)."""
    monkeypatch.setenv("LOUPE_HOME", str(home))
    monkeypatch.setenv("LOUPE_PAGE_WAIT_S", "300")  # the page waits for the folder's scan and health check, however busy
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state[PRESENT.key] = present
    at.run()
    assert not at.exception, at.exception
    return at


def present_style(at: AppTest) -> list[str]:
    return [h.value for h in at.html if "loupe-present" in h.value]


def folded(at: AppTest) -> dict[str, int]:
    """Label → number of tables inside, for each expander of the page."""
    return {e.label: len(e.dataframe) + len(e.table) for e in at.expander}


def step_buttons(at: AppTest) -> list:
    return [b for b in at.sidebar.button if b.key.startswith("present.step.")]


def test_the_switch_brings_larger_type_folded_tables_and_the_demo_steps(home, monkeypatch):
    normal = open_app(home, monkeypatch, present=False)
    switch = normal.sidebar.toggle(key=PRESENT.key)
    assert switch.value is False and switch.label == "Present"
    assert present_style(normal) == [] and step_buttons(normal) == []
    assert "Images per class, as a table" not in folded(normal)

    present = open_app(home, monkeypatch, present=True)
    assert present.sidebar.toggle(key=PRESENT.key).value is True
    style = present_style(present)
    assert len(style) == 1 and f"font-size: {FONT_PX}px" in style[0]
    assert folded(present)["Images per class, as a table"] == 1  # the health check's counts, out of sight
    assert not next(e for e in present.expander if e.label == "Images per class, as a table").proto.expanded
    # folded, not gone: as many tables as a window with Present off opened now (the Data page's presize cache table
    # shows only once the first window's read has filled the cache)
    assert len(present.main.dataframe) == len(open_app(home, monkeypatch, present=False).main.dataframe)
    steps = step_buttons(present)
    assert [b.label for b in steps] == [label.split(":")[0] for label, _, _ in DEMO_STEPS]
    assert [b.proto.type for b in steps][:2] == ["primary", "secondary"]  # the Data page is step 1

    train = next(i for i, (_, page, _) in enumerate(DEMO_STEPS) if page == "pages/train.py")
    present.sidebar.button(key=f"present.step.{train}").click().run()  # a step's button opens its page
    assert not present.exception, present.exception
    assert [t.value for t in present.title] == ["Train"]


def test_interpret_folds_its_tables_while_presenting(home, monkeypatch, run_id):
    monkeypatch.setenv("LOUPE_HOME", str(home))
    app = AppTest.from_file(APP, default_timeout=300)
    app.switch_page("pages/interpret.py").run()
    assert not app.exception, app.exception
    assert "Per-class scores, as a table" not in folded(app)
    app.session_state[PRESENT.key] = True
    app.run()
    assert not app.exception, app.exception
    tables = folded(app)
    assert tables["Per-class scores, as a table"] == 1
    assert tables.get("Most confused pairs, as a table", 1) == 1  # shown when some pair is confused at all
    assert tables["As a table"] == 1  # the top losses' table, folded as before


def keyed(node, key: str):
    """The container drawn with st.container(key=key), or None."""
    if getattr(getattr(node, "proto", None), "id", "").endswith("-" + key):
        return node
    return next((b for child in getattr(node, "children", {}).values() if (b := keyed(child, key))), None)


def grid(at: AppTest, key: str) -> list[int]:
    """A picture grid's pictures to each row."""
    return [len(row.get("image")) for row in keyed(at._tree, key).children.values()]


def test_picture_grids_have_fewer_pictures_to_a_row_while_presenting(home, monkeypatch, run_id):
    monkeypatch.setenv("LOUPE_HOME", str(home))
    app = AppTest.from_file(APP, default_timeout=300)
    app.switch_page("pages/interpret.py").run()
    assert not app.exception, app.exception
    assert grid(app, "gallery-top_losses") == [5, 4]  # nine top losses
    app.switch_page("pages/learning.py").run()
    assert grid(app, "learning-averages") == [10]  # the digits' class averages

    app.session_state[PRESENT.key] = True  # captions such as "eight/three / 4.21 / 0.93" keep whole words
    app.switch_page("pages/interpret.py").run()
    assert not app.exception, app.exception
    assert grid(app, "gallery-top_losses") == [3, 3, 3]
    app.switch_page("pages/learning.py").run()
    assert not app.exception, app.exception
    shown = keyed(app._tree, "learning-averages").children.values()
    assert [element.type for element in shown] == ["image"] * 10  # a row of its own width each, which wraps
