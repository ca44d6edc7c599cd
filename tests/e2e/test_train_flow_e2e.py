"""The demo in a real browser: LR finder, click a point, train 2 epochs watching the live chart, find the run."""
from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from browser_steps import nav, start_one_cycle_run

pytestmark = pytest.mark.e2e

POINTS_JS = """() => {
  const plot = document.querySelector('.st-key-train-live_chart .js-plotly-plot');
  return plot && plot._fullData && plot._fullData.length ? plot._fullData[0].x.length : 0;
}"""


def test_lr_finder_train_and_runs(page, loupe_server):
    url, _ = loupe_server
    page.goto(url)
    expect(page.locator(".st-key-show_batch img")).to_have_count(9)
    # a smaller batch: more batches per epoch, so the live chart has time to move
    batch = page.get_by_role("spinbutton", name="Batch size")
    batch.fill("16")
    batch.press("Enter")
    expect(page.locator('[data-testid="stSidebar"]').get_by_text("batch size 16")).to_be_visible()

    nav(page, "LR finder")
    page.get_by_role("button", name="Run the LR finder").click()
    expect(page.get_by_role("button", name="valley:")).to_be_visible(timeout=120_000)
    points = page.locator('.st-key-lrf-chart .scatterlayer .trace').first.locator(".points path")
    assert points.count() > 20
    points.nth(points.count() // 2).click(force=True)
    expect(page.get_by_text("Chosen learning rate")).to_be_visible(timeout=30_000)
    page.get_by_role("button", name="Use this LR").click()

    start_one_cycle_run(page, epochs=2)

    # the live chart gains points while the run goes on
    page.wait_for_function(f"({POINTS_JS})() > 0", timeout=120_000)
    first = page.evaluate(POINTS_JS)
    page.wait_for_function(f"({POINTS_JS})() > {first}", timeout=60_000)
    # pause, reload the browser: the page re-attaches to the paused run; resume it
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    page.reload()
    expect(page.get_by_text("Training · paused")).to_be_visible()
    page.wait_for_function(f"({POINTS_JS})() > {first}", timeout=60_000)
    paused_points = page.evaluate(POINTS_JS)
    time.sleep(2.5)
    assert page.evaluate(POINTS_JS) == paused_points  # nothing moves while paused
    page.get_by_role("button", name="Resume").click()
    # the epoch table reaches two rows (live, or in the finished view)
    expect(page.locator('[data-testid="stTable"] tbody tr')).to_have_count(2, timeout=180_000)
    expect(page.get_by_text("Last run:")).to_be_visible(timeout=120_000)

    nav(page, "Runs")
    expect(page.get_by_text("latest: #1")).to_be_visible()
    expect(page.get_by_text("· done")).to_be_visible()
