"""The run report in Chromium with every network request blocked: its charts are drawn, its pictures shown, and the
charts answer a hover; the Train page's Make report, then Download report, give that file."""
from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from browser_steps import start_one_cycle_run, train_digits, wait_idle
from engine.results.report import write_report

pytestmark = pytest.mark.e2e
CHARTS = ("counts", "curves", "confusion", "per-class")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The report of one epoch of the small model on the built-in digits, written to a file."""
    home = tmp_path_factory.mktemp("report-e2e-home")
    result = train_digits(home)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOUPE_HOME", str(home))  # the report's example grid reads the built-in data there
        return write_report(result["out"], home / "share" / "report.html")


def check_offline(browser, report: Path) -> None:
    """Open the report with every request but the file's own blocked; its charts are drawn and answer a hover."""
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    asked = []

    def only_the_file(route):
        url = route.request.url
        if url.startswith(("file://", "data:")):
            route.continue_()
        else:
            asked.append(url)
            route.abort()

    context.route("**/*", only_the_file)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(report.as_uri())
    for chart in CHARTS:  # plotly has drawn each chart: its div became a plot holding svg layers
        expect(page.locator(f"#chart-{chart}.js-plotly-plot svg.main-svg").first).to_be_visible()
    assert page.locator("#chart-per-class .bars path").count() >= 10  # a bar per class and metric
    assert page.locator("#chart-curves .scatterlayer .trace").count() >= 2  # training and validation loss
    # every picture is a data URI that the browser decoded
    sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.src.slice(0, 11), i.naturalWidth])")
    assert len(sizes) >= 22 and all(src == "data:image/" and width > 0 for src, width in sizes)
    # interactive: a hover over a cell of the confusion matrix shows what it counts
    page.locator("#chart-confusion .nsewdrag").first.hover(position={"x": 20, "y": 20})
    expect(page.locator("#chart-confusion .hoverlayer .hovertext")).to_contain_text("actual")
    assert asked == []  # nothing was even asked of the network
    context.close()


def test_the_report_draws_its_charts_with_the_network_blocked(browser, report):
    check_offline(browser, report)


def test_the_train_pages_download_report_gives_the_runs_report(page, loupe_server, browser, tmp_path):
    url, _ = loupe_server
    page.goto(f"{url}/train")
    start_one_cycle_run(page, epochs=1)
    expect(page.get_by_text("Last run:")).to_be_visible(timeout=300_000)
    wait_idle(page)
    page.get_by_role("button", name="Make report").click()
    expect(page.get_by_text("Report of run #1 ready")).to_be_visible()
    wait_idle(page)
    with page.expect_download(timeout=120_000) as info:
        page.get_by_role("button", name="Download report").click()
    assert info.value.suggested_filename == "loupe-run-1-report.html"
    saved = tmp_path / "report.html"
    info.value.save_as(saved)
    text = saved.read_text(encoding="utf-8")
    assert "<h1>Loupe run report · Run #1</h1>" in text and "<h2>Top losses</h2>" in text
    check_offline(browser, saved)
