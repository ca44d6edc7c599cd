"""Steps the browser tests share: the sidebar navigation, waiting for a script run to end, picking from a selectbox,
starting a one-cycle run on the Train page, a small run trained as the command line does, and reading the confusion
matrix's cells."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from engine.data.builtin import ensure_builtin
from engine.data.loaders import PresizeCache
from engine.spec import RunSpec, override
from engine.store.runs import RunStore
from engine.train.run import train_run

# the app's root says whether a script run is under way ("running", "rerunRequested", …) or over ("notRunning")
IDLE_JS = """() => {
  const root = document.querySelector('[data-test-script-state]');
  return root !== null && root.getAttribute('data-test-script-state') === 'notRunning';
}"""

# the confusion matrix's cells as plotly drew them (the heatmap's second trace carries actual, predicted, count)
CELLS_JS = """() => {
  const plot = document.querySelector('.st-key-interpret-confusion .js-plotly-plot');
  if (!plot || !plot._fullData || plot._fullData.length < 2) return null;
  const cells = plot._fullData[1];
  return {x: Array.from(cells.x), y: Array.from(cells.y), actual: cells.customdata.map(c => c[0]),
          predicted: cells.customdata.map(c => c[1]), counts: cells.customdata.map(c => c[2])};
}"""


def new_window(browser, width: int = 1400, height: int = 1000, **options):
    """A page in a new browser context (a window of its own: its own session), with the suite's patient timeouts: a
    first load on a busy machine writes and decodes the built-in data before anything can be clicked."""
    page = browser.new_context(viewport={"width": width, "height": height}, **options).new_page()
    page.set_default_timeout(180_000)
    return page


def nav(page, name: str) -> None:
    """Click a page in the sidebar navigation, once the current page's run is over (a click on a link while the
    server is busy with an earlier rerun can be lost)."""
    wait_idle(page)
    page.locator(".st-key-loupe-nav").get_by_text(name, exact=True).click()


def wait_idle(page) -> None:
    """Wait until the server has finished the script run, so the page shows that run's elements, not the last ones."""
    page.wait_for_function(IDLE_JS)


def pick(page, box, option: str | re.Pattern) -> None:
    """Open a selectbox and pick an option, once the run is over: while it runs, the box on screen may be the last
    run's, which the new run then replaces (closing its list before the option can be clicked)."""
    wanted = page.get_by_role("option", name=option, exact=isinstance(option, str))
    for wait_s in (10, 30, 90):  # on a busy machine a list can close again as it opens: open it again
        wait_idle(page)
        box.click()
        try:
            wanted.wait_for(state="visible", timeout=wait_s * 1000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    wanted.click()


def start_one_cycle_run(page, epochs: int) -> None:
    """On the Train page: fit_one_cycle for `epochs` epochs, then Train."""
    expect(page.get_by_role("heading", name="Train")).to_be_visible()
    wait_idle(page)
    page.get_by_role("radio", name="fit_one_cycle (all layers)").click()
    # the server has the schedule (its caption is drawn) before the epochs change: two quick changes in a row
    # on a busy machine are two settings, not one race
    expect(page.get_by_text("Every layer trains with one cycle")).to_be_visible()
    wait_idle(page)
    field = page.get_by_role("spinbutton", name="Epochs", exact=True)
    field.fill(str(epochs))
    field.press("Enter")
    # the button names the epochs once the server has them: no racing the number to the server
    expect(page.get_by_role("button", name=f"Train ({epochs} epoch{'s' if epochs != 1 else ''})")).to_be_visible()
    wait_idle(page)
    page.get_by_role("button", name=f"Train ({epochs} epoch{'s' if epochs != 1 else ''})").click()


def train_digits(home: Path) -> dict:
    """One epoch of the small model on the built-in digits in the Loupe folder `home`, as the command line trains it;
    returns the run's result (its folder is result["out"])."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOUPE_HOME", str(home))
        ensure_builtin("digits-names")
        spec = override(RunSpec(), {"data.presize": 32, "train.schedule": "one_cycle", "train.epochs": 1,
                                    "train.lr": 3e-3, "train.seed": 0, "device.threads": 1})
        store = RunStore()
        try:
            result = train_run(spec, PresizeCache(max_entries=1), store, source="cli")
        finally:
            store.close()
    assert result["status"] == "done", result
    return result
