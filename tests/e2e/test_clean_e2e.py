"""The Clean page in a real browser: the image grid fits a narrow window, and choices survive Apply and browsing."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from engine.data.builtin import ensure_builtin
from engine.data.loaders import PresizeCache
from engine.store.jobs import Job
from engine.store.runs import RunStore
from engine.spec import RunSpec, override
from engine.train.run import train_target

from browser_steps import new_window, pick, wait_idle

pytestmark = pytest.mark.e2e

GRID = ".st-key-gallery-clean"
LAYOUT_JS = """(grid) => {
  const area = document.querySelector('[data-testid="stMainBlockContainer"]').getBoundingClientRect();
  const box = (e) => { const r = e.getBoundingClientRect(); return {left: r.left, right: r.right}; };
  const tiles = [...document.querySelectorAll(grid + ' img')].map((img) => ({
    image: box(img),
    tile: box(img.closest('[data-testid="stVerticalBlock"]')),
    choice: box(img.closest('[data-testid="stVerticalBlock"]').querySelector('[data-testid="stSelectbox"]')),
  }));
  return {scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
          area: {left: area.left, right: area.right}, tiles};
}"""


@pytest.fixture()
def trained(loupe_server, monkeypatch) -> str:
    """One epoch of the small model on the built-in digits, trained here into the server's home; the server's URL."""
    url, home = loupe_server
    monkeypatch.setenv("LOUPE_HOME", str(home))
    ensure_builtin("digits-names")
    spec = override(RunSpec(), {"data.presize": 32, "train.schedule": "one_cycle", "train.epochs": 1, "train.seed": 0})
    job = Job("train", "clean e2e", train_target(spec, PresizeCache(), RunStore()))
    job.run()
    assert job.state == "done", job.error_detail
    return url


def wait_for_choices(page, count: int, value: str) -> None:
    """Wait until exactly `count` choice boxes of the grid show `value` (the value is the combo box input's)."""
    page.wait_for_function(f"[...document.querySelectorAll('{GRID} input[role=combobox]')]"
                           f".filter(i => i.value === {value!r}).length === {count}")


def inside(inner: dict, outer: dict) -> bool:
    return inner["left"] >= outer["left"] - 0.5 and inner["right"] <= outer["right"] + 0.5


def test_the_clean_grid_fits_a_narrow_window(browser, trained):
    page = new_window(browser, 700, 900)
    page.goto(f"{trained}/clean")
    expect(page.get_by_role("heading", name="Clean")).to_be_visible()
    images = page.locator(f"{GRID} img")
    expect(images).to_have_count(12)
    page.wait_for_function(f"[...document.querySelectorAll('{GRID} img')].every(i => i.complete && i.naturalWidth > 0)")
    layout = page.evaluate(LAYOUT_JS, GRID)
    assert layout["scrollWidth"] <= layout["innerWidth"], layout
    for tile in layout["tiles"]:
        assert inside(tile["image"], tile["tile"]) and inside(tile["choice"], tile["tile"]), tile
        assert inside(tile["tile"], layout["area"]), (tile, layout["area"])
    assert len({round(t["tile"]["left"]) for t in layout["tiles"]}) < 6  # fewer than six a row: the tiles wrapped
    page.context.close()


def test_choices_after_apply_and_browsing(page, trained):
    page.goto(f"{trained}/clean")
    expect(page.locator(f"{GRID} img")).to_have_count(12)
    choices = page.locator(f'{GRID} [data-testid="stSelectbox"]')
    for i, option in ((0, "delete"), (1, "relabel → one")):
        pick(page, choices.nth(i), option)
        expect(page.get_by_role("button", name=f"Apply {i + 1} change(s)")).to_be_visible()
    page.get_by_role("button", name="Apply 2 change(s)").click()
    expect(page.get_by_text("Moved 1 image to the trash, relabelled 1")).to_be_visible()
    expect(page.get_by_role("button", name="Apply 0 change(s)")).to_be_visible()
    wait_for_choices(page, 0, "delete")

    pick(page, choices.nth(0), "delete")  # a choice on the first page, then the second page and back: it is kept
    expect(page.get_by_role("button", name="Apply 1 change(s)")).to_be_visible()
    number = page.get_by_role("spinbutton", name="Page (of")
    for to, marked in (("2", 0), ("1", 1)):
        wait_idle(page)  # typed into the box of the page on screen, not one a run is replacing
        number.fill(to)
        number.press("Enter")
        wait_for_choices(page, marked, "delete")  # that page is drawn: the first page's choice shows only there
        expect(number).to_have_value(to)
        expect(page.get_by_role("button", name="Apply 1 change(s)")).to_be_visible()  # the choice is kept
    page.get_by_role("button", name="Discard choices").click()
    expect(page.get_by_role("button", name="Apply 0 change(s)")).to_be_visible()
    page.get_by_role("button", name="Undo: Moved 1 image to the trash, relabelled 1").click()
    expect(page.get_by_text("Undone: Moved 1 image")).to_be_visible()
    assert page.locator('[data-testid="stException"]').count() == 0
