"""The demo in a real browser: LR finder, click a point, train 2 epochs watching the live chart, find the run.

The run is held after its 4th batch (a test hook: LOUPE_HOLD_AT_BATCH / LOUPE_HOLD_FILE) until the test lets it go,
so what the test looks at does not depend on how fast the machine trains.
"""
from __future__ import annotations

import re
import sqlite3
import time

import pytest
from playwright.sync_api import expect

from browser_steps import nav, start_one_cycle_run, wait_idle

pytestmark = pytest.mark.e2e
HOLD_AT = 3  # the run waits after batch 3 (its 4th) until the hold file exists

POINTS_JS = """(key) => {
  const plot = document.querySelector('.st-key-' + key + ' .js-plotly-plot');
  return plot && plot._fullData && plot._fullData.length ? plot._fullData[0].x.length : 0;
}"""


@pytest.fixture()
def hold_file(tmp_path):
    return tmp_path / "let-the-run-go"


@pytest.fixture()
def server_env(hold_file):
    return {"LOUPE_HOLD_AT_BATCH": str(HOLD_AT), "LOUPE_HOLD_FILE": str(hold_file)}


def points(page, key: str) -> int:
    return page.evaluate(POINTS_JS, key)


def test_lr_finder_train_and_runs(page, loupe_server, hold_file, start_server):
    url, home = loupe_server
    page.goto(url)
    expect(page.locator(".st-key-show_batch img")).to_have_count(9)

    nav(page, "LR finder")
    page.get_by_role("button", name="Run the LR finder").click()
    expect(page.get_by_role("button", name="valley:")).to_be_visible(timeout=180_000)
    markers = page.locator('.st-key-lrf-chart .scatterlayer .trace').first.locator(".points path")
    assert markers.count() > 20
    valley = page.get_by_role("button", name="valley:").inner_text().split(":")[1].strip()
    for i in (markers.count() // 2, markers.count() // 2 + 7):
        lr = markers.nth(i).evaluate("(point) => point.__data__.x")  # the learning rate of that point
        markers.nth(i).click(force=True)
        expect(page.get_by_text(f"Chosen learning rate: {lr:.2e}")).to_be_visible()
        if i == markers.count() // 2:  # a suggestion after a click on the chart is taken, and stays
            wait_idle(page)
            page.get_by_role("button", name="valley:").click()
            chosen = page.get_by_text("Chosen learning rate:")
            expect(chosen).not_to_contain_text(f"{lr:.2e}")
            wait_idle(page)
            shown = float(re.search(r"Chosen learning rate: (\S+)", chosen.inner_text()).group(1))
            assert f"{shown:.1e}" == valley  # the button shows one decimal, the choice two
    wait_idle(page)  # the click on the chart has been taken: "Use this LR" is not lost to a later rerun
    page.get_by_role("button", name="Use this LR").click()

    start_one_cycle_run(page, epochs=2)
    # held after batch HOLD_AT: the live chart shows exactly its batches so far, however fast the machine
    page.wait_for_function(f"({POINTS_JS})('train-live_chart') === {HOLD_AT + 1}", timeout=180_000)
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    draft = re.search(r"draft=([0-9a-f]+)", page.url).group(1)

    # a reload re-attaches to the paused run, and the window's settings are still its own
    page.reload()
    expect(page.get_by_text("Training · paused")).to_be_visible()
    assert f"draft={draft}" in page.url
    page.wait_for_function(f"({POINTS_JS})('train-live_chart') === {HOLD_AT + 1}", timeout=60_000)
    hold_file.write_text("")  # let the loop go on: it now waits for Resume at the next batch
    time.sleep(2.5)
    assert points(page, "train-live_chart") == HOLD_AT + 1  # nothing moves while paused
    page.get_by_role("button", name="Resume").click()

    # the run ends: every epoch in the table, every batch on the chart
    expect(page.get_by_text("Last run:")).to_be_visible(timeout=300_000)
    expect(page.locator('[data-testid="stTable"] tbody tr')).to_have_count(2)
    db = sqlite3.connect(home / "runs.sqlite")
    n_batches = db.execute("SELECT COUNT(*) FROM batches WHERE run_id = 1").fetchone()[0]
    kept = db.execute("SELECT kept_epoch FROM runs WHERE id = 1").fetchone()[0]
    db.close()
    assert n_batches == 2 * (1438 // 64)  # the built-in digits: 1,438 training images in batches of 64
    page.wait_for_function(f"({POINTS_JS})('train-final_chart') === {n_batches}", timeout=60_000)
    expect(page.get_by_text(f"Model from epoch {kept} (lowest validation loss)").first).to_be_visible()

    nav(page, "Runs")
    expect(page.get_by_text("latest: #1")).to_be_visible()
    expect(page.get_by_text("· done")).to_be_visible()

    # a restarted server, a bookmark of the Train page: the window's draft comes back
    again = start_server(home)
    page.goto(f"{again.url}/train?draft={draft}")
    expect(page.get_by_role("heading", name="Train")).to_be_visible()
    expect(page.get_by_role("spinbutton", name="Epochs", exact=True)).to_have_value("2")
    expect(page.get_by_role("radio", name="fit_one_cycle (all layers)")).to_be_checked()
