"""Hostile names in a real browser, and two windows on one server.

Class folders named like Markdown links, images, maths, colour directives and HTML must show as the text
they are — no link, no image fetched, no formula — on every page and in the charts. A label pattern that
would explode while compiling gets a message. A second window's run waits in line behind the first's, is
told so, and neither window shows the other's run as its own.
"""
from __future__ import annotations

import html

import pytest
from PIL import Image
from playwright.sync_api import expect

from browser_steps import CELLS_JS, nav, new_window, start_one_cycle_run, wait_idle
from engine.data.builtin import digit_images

pytestmark = pytest.mark.e2e

CLASSES = ["[click](evil.html)", "![pic](evil.png)", "$x^2$", ":red[alarm]", "<b>bold"]  # no "/" in a folder name
DATASET = "pets **loud** [home](evil.html)"
BOMB = "((a{1000}){1000}){1000}(x)"


@pytest.fixture()
def hold_file(tmp_path):
    return tmp_path / "let-the-run-go"


@pytest.fixture()
def server_env(hold_file):
    return {"LOUPE_HOLD_AT_BATCH": "0", "LOUPE_HOLD_FILE": str(hold_file)}


@pytest.fixture()
def hostile_folder(tmp_path):
    images, targets = digit_images()
    root = tmp_path / DATASET
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in [int(j) for j in (targets == c).nonzero()[0][:10]]:
            Image.fromarray(images[i], "L").save(root / name / f"digit{i}.png")
    return root


def assert_no_markup(page) -> None:
    """Nothing the names could make: links or images to evil.*, maths, Streamlit colour spans from them."""
    assert page.locator('a[href*="evil"]:not([href^="#"])').count() == 0
    assert page.locator('img[src*="evil"]').count() == 0
    assert page.locator(".katex").count() == 0
    assert page.locator("b", has_text="bold").count() == 0


def test_hostile_names_are_text_and_two_windows_keep_their_own_runs(browser, loupe_server, hostile_folder, hold_file):
    url, _ = loupe_server
    first = new_window(browser)
    first.goto(url)
    first.get_by_role("radio", name="A folder on this computer").click()
    folder = first.get_by_role("textbox", name="Folder path")
    folder.fill(str(hostile_folder))
    folder.press("Enter")
    expect(first.locator(".st-key-show_batch img")).to_have_count(9)
    sidebar = first.locator('[data-testid="stSidebar"]')
    expect(sidebar.get_by_text(DATASET, exact=True)).to_be_visible()
    expect(sidebar.get_by_text(f"Classes: {', '.join(sorted(CLASSES))}")).to_be_visible()
    ticks = first.locator(".st-key-data-class_chart .xtick text").all_text_contents()
    assert sorted(ticks) == sorted(CLASSES)  # chart labels are the names as typed, tags and all
    assert_no_markup(first)

    # a pattern that would explode while compiling: a message, and the page goes on answering
    first.get_by_role("radio", name="Regex on the file name").click()
    pattern = first.get_by_role("textbox", name="Pattern (regular expression; the part in ( ) is the label)")
    pattern.fill(BOMB)
    pattern.press("Enter")
    expect(first.locator('[data-testid="stAlertContentError"]').first).to_be_visible()
    expect(first.locator('[data-testid="stException"]')).to_have_count(0)
    first.get_by_role("radio", name="Parent folder", exact=True).click()
    expect(first.get_by_role("radio", name="Parent folder", exact=True)).to_be_checked()
    wait_idle(first)  # the grid below is this run's, not the one drawn before the pattern
    expect(first.locator(".st-key-show_batch img")).to_have_count(9)

    # a second window on the same server, then the first trains (held at its first batch)
    second = new_window(browser)
    second.goto(url)
    expect(second.locator(".st-key-show_batch img")).to_have_count(9)
    nav(first, "Train")
    start_one_cycle_run(first, epochs=1)
    expect(first.get_by_role("button", name="Pause")).to_be_visible(timeout=120_000)
    expect(first.get_by_role("heading", name=f"{DATASET} · small · 1 epochs")).to_be_visible()
    assert_no_markup(first)

    nav(second, "Train")
    start_one_cycle_run(second, epochs=2)
    expect(second.get_by_text("Another run is training (started by another window); yours is queued "
                              "(number 1 in line)")).to_be_visible()
    expect(second.get_by_role("button", name="Pause")).to_have_count(0)
    expect(first.get_by_text("yours is queued")).to_have_count(0)

    hold_file.write_text("")
    expect(first.get_by_text("Last run:")).to_be_visible(timeout=300_000)
    expect(second.get_by_text("Last run:")).to_be_visible(timeout=300_000)
    expect(first.get_by_role("heading", name=f"Last run: {DATASET} · small · 1 epochs")).to_be_visible()
    expect(second.get_by_role("heading", name=f"Last run: {DATASET} · small · 2 epochs")).to_be_visible()

    for name in ("Interpret", "Clean", "Predict & export", "Runs"):
        nav(first, name)
        expect(first.get_by_role("heading", name=name)).to_be_visible()
        first.wait_for_timeout(500)
        expect(first.locator('[data-testid="stException"]')).to_have_count(0)
        assert_no_markup(first)
    nav(first, "Interpret")
    first.get_by_role("tab", name="Confusion matrix").click()
    matrix_ticks = first.locator(".st-key-interpret-confusion .xtick text")
    expect(matrix_ticks).to_have_count(len(CLASSES))
    assert sorted(matrix_ticks.all_text_contents()) == sorted(CLASSES)
    assert_no_markup(first)

    # with 5 classes, a clicked cell opens that cell's images (by row and column, whatever the names)
    first.wait_for_function(f"({CELLS_JS})() !== null")
    cells = first.evaluate(CELLS_JS)
    assert len(cells["x"]) == len(CLASSES) ** 2
    target = max(range(len(cells["x"])), key=lambda i: (cells["x"][i] != cells["y"][i], cells["counts"][i]))
    actual, predicted = html.unescape(cells["actual"][target]), html.unescape(cells["predicted"][target])
    count = cells["counts"][target]
    first.locator(".st-key-interpret-confusion .scatterlayer .trace .points path").nth(target).click(force=True)
    expect(first.get_by_text(f"{count:,} image(s) of {actual} predicted as {predicted}")).to_be_visible()
    expect(first.locator(".st-key-gallery-cell img")).to_have_count(min(count, 50))
