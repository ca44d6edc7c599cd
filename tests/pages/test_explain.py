"""The guided demo mode: notes on each page only while "Explain as I go" is on, terms linked to one glossary,
and the demo script's buttons open their pages."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ui.explain import DEMO_STEPS, GLOSSARY, NOTES, slug
from ui.state import DRAFT, DRAFT_ID, EXPLAIN, VIEW_MODE

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PAGES = {"pages/data.py": ["data", "show_batch"], "pages/lr_find.py": ["lr_find"], "pages/camera.py": ["camera"]}


@pytest.fixture()
def app(home, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(home))
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    return at


def notes(at: AppTest) -> list[str]:
    return [i.value for i in at.info if i.icon == ":material/school:"]


def test_notes_show_only_while_explaining(app):
    assert notes(app) == []
    assert app.sidebar.toggle(key=EXPLAIN.key).value is False  # the sidebar's switch (clicked in the browser test)
    app.session_state[EXPLAIN.key] = True
    app.run()
    assert len(notes(app)) == 2  # the data set, then the batch
    app.session_state[EXPLAIN.key] = False
    app.run()
    assert notes(app) == []
    for page in PAGES:
        app.switch_page(page).run()
        assert not app.exception and notes(app) == []
    app.session_state[EXPLAIN.key] = True  # AppTest draws a switched-to page without the app's sidebar
    for page, keys in PAGES.items():
        app.switch_page(page).run()
        assert not app.exception
        shown = notes(app)
        assert len(shown) == len(keys), page
        for text, key in zip(shown, keys):
            plain = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)
            assert plain == re.sub(r"\[\[([^\]]+)\]\]", r"\1", NOTES[key]).replace("{thing}", "digit")  # the digits
    app.session_state[EXPLAIN.key] = False
    app.run()
    assert notes(app) == []


def test_terms_link_to_the_glossary_with_this_windows_settings(app):
    app.session_state[EXPLAIN.key] = True
    app.run()
    draft = app.session_state[DRAFT_ID.key]
    links = re.findall(r"\]\(([^)]+)\)", " ".join(notes(app)))
    assert links and all(link.startswith(f"/glossary?draft={draft}#") for link in links)
    anchors = {link.split("#", 1)[1] for link in links}
    assert anchors <= {slug(term) for term in GLOSSARY}
    app.switch_page("pages/glossary.py").run()
    assert not app.exception
    shown = {h.value.lower() for h in app.subheader}
    assert shown == set(GLOSSARY)


def test_every_note_is_shown_by_a_page():
    root = Path(__file__).resolve().parents[2]
    code = " ".join(p.read_text() for folder in ("pages", "ui") for p in (root / folder).glob("*.py"))
    shown = set(re.findall(r"""\b(?:explain|note)\(["']([a-z_]+)["']""", code))
    assert set(NOTES) <= shown, set(NOTES) - shown


def test_every_note_term_is_in_the_glossary():
    for key, text in NOTES.items():
        for term in re.findall(r"\[\[([^\]]+)\]\]", text):
            assert term.lower() in GLOSSARY or term.lower().rstrip("s") in GLOSSARY, (key, term)


def test_the_demo_script_opens_each_step_with_its_settings(app):
    steps = [b for b in app.button if b.key and b.key.startswith("demo.step.")]
    assert len(steps) == len(DEMO_STEPS) and 6 <= len(DEMO_STEPS) <= 10
    root = Path(__file__).resolve().parents[2]
    assert all((root / page).is_file() for _, page, _ in DEMO_STEPS)  # every step opens a page that is there
    app.button(key="demo.step.0").click().run()
    assert not app.exception
    assert app.session_state[EXPLAIN.key] is True and app.session_state[VIEW_MODE.key] == "unique"
    assert app.session_state[DRAFT.key].data.source == "builtin:digits-names"
    lr_find = next(i for i, (_, page, _) in enumerate(DEMO_STEPS) if page == "pages/lr_find.py")
    app.button(key=f"demo.step.{lr_find}").click().run()
    assert not app.exception
    assert any(t.value == "Learning rate finder" for t in app.title)
