"""Compare in a real browser: an experiment of two learning rates on the built-in digits, both curves on one chart,
a verdict for each, and the experiment opened again from the Runs page."""
from __future__ import annotations

import re
import sqlite3

import pytest
from playwright.sync_api import expect

from browser_steps import nav, pick, wait_idle

pytestmark = pytest.mark.e2e
VERDICT = re.compile(r"(Diverged|Too low|Overfitting|Unstable|Underfitting|Good): ")

LEGEND_JS = """(key) => {
  const plot = document.querySelector('.st-key-' + key + ' .js-plotly-plot');
  return plot && plot._fullData ? plot._fullData.filter(t => t.showlegend !== false).map(t => t.name) : [];
}"""


def legend(page, key: str) -> list[str]:
    return page.evaluate(LEGEND_JS, key)


def test_an_experiment_of_two_learning_rates_on_one_chart(page, loupe_server):
    url, home = loupe_server
    page.goto(url)
    expect(page.locator(".st-key-show_batch img")).to_have_count(9)

    # short runs: one epoch of one cycle (fit_one_cycle's default LR, 1e-3)
    nav(page, "Train")
    expect(page.get_by_role("heading", name="Train")).to_be_visible()
    page.get_by_role("radio", name="fit_one_cycle (all layers)").click()
    # the LR field shows one_cycle's default before the next edit: no stale value goes back to the draft
    expect(page.get_by_role("spinbutton", name="Learning rate")).to_have_value("1.0e-3")
    epochs = page.get_by_role("spinbutton", name="Epochs", exact=True)
    epochs.fill("1")
    epochs.press("Enter")
    expect(page.get_by_role("button", name="Train (1 epoch)")).to_be_visible()

    nav(page, "Compare")
    expect(page.get_by_role("heading", name="Compare")).to_be_visible()
    expect(page.get_by_text("Prefilled from the learning rate on the Train page (1e-3)")).to_be_visible()
    page.get_by_role("radio", name="2", exact=True).click()  # values 1e-4 and 1e-3: ÷10 and ×1
    expect(page.get_by_role("spinbutton", name="Value 3")).to_have_count(0)
    expect(page.get_by_text("in all on this computer")).to_be_visible()
    page.get_by_role("button", name="Start 2 runs").click()

    expect(page.get_by_text("Last experiment:")).to_be_visible(timeout=300_000)
    page.wait_for_function(f"({LEGEND_JS})('experiment-final_chart').length === 2", timeout=60_000)
    assert legend(page, "experiment-final_chart") == ["lr 1e-4", "lr 1e-3"]
    # the setting and values are still there for the next experiment
    wait_idle(page)
    expect(page.get_by_role("radio", name="learning rate")).to_be_checked()
    expect(page.get_by_role("radio", name="2", exact=True)).to_be_checked()
    expect(page.get_by_role("spinbutton", name="Value 1")).to_have_value("1.0e-4")
    expect(page.get_by_role("spinbutton", name="Value 2")).to_have_value("1.0e-3")
    rows = page.locator('[data-testid="stTable"] tbody tr')
    expect(rows).to_have_count(2)
    for i in range(2):  # a verdict in words, whichever the machine's numbers give
        expect(rows.nth(i)).to_contain_text(VERDICT)
    db = sqlite3.connect(home / "runs.sqlite")
    tagged = db.execute("SELECT experiment, COUNT(*), COUNT(DISTINCT spec) FROM runs GROUP BY experiment").fetchall()
    db.close()
    assert len(tagged) == 1 and tagged[0][0].startswith("lr-") and tagged[0][1:] == (2, 2)

    nav(page, "Runs")
    pick(page, page.locator('[data-testid="stSelectbox"]', has_text="Open an experiment"),
         re.compile(f"^{tagged[0][0]}: learning rate, 2 runs"))
    page.wait_for_function(f"({LEGEND_JS})('runs-experiment_chart').length === 2", timeout=60_000)
    assert legend(page, "runs-experiment_chart") == ["lr 1e-4", "lr 1e-3"]
