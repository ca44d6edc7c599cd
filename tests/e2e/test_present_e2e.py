"""Present mode and legible charts in Chromium: the switch makes the type larger, and on the Data page's and the
per-class chart plotly's toolbar (with its PNG download) lies clear of the legend, in both modes and at two sizes."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from browser_steps import nav, new_window, train_digits, wait_idle
from ui.explain import DEMO_STEPS

pytestmark = pytest.mark.e2e

FONT_JS = """() => parseFloat(getComputedStyle(document.querySelector(
  '[data-testid="stMain"] [data-testid="stCaptionContainer"]')).fontSize)"""


def boxes_apart(a: dict, b: dict) -> bool:
    """Whether two bounding boxes do not overlap."""
    return (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
            or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


def check_chart(page, chart, entries: int) -> None:
    """The chart's toolbar, shown by a hover, has the PNG download and lies clear of its legend (and title); each
    legend entry is the topmost thing at its centre, so nothing covers it."""
    chart.scroll_into_view_if_needed()
    chart.hover()
    modebar = chart.locator(".modebar")
    expect(modebar).to_be_visible()
    expect(chart.locator('.modebar-btn[data-title="Download plot as a PNG"]')).to_be_visible()
    bar = modebar.bounding_box()
    legend = chart.locator("g.legend")
    assert legend.locator(".traces").count() == entries
    assert boxes_apart(bar, legend.bounding_box()), (bar, legend.bounding_box())
    for title in chart.locator(".gtitle").all():
        assert boxes_apart(bar, title.bounding_box())
    for entry in legend.locator(".traces").all():
        box = entry.bounding_box()
        assert page.evaluate("""([x, y]) => !!document.elementFromPoint(x, y).closest('g.legend')""",
                             [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2])


# buttons of the main area whose label does not fit inside them (cut off with "…", or running over the edge)
OVERFLOWING_JS = """() => Array.from(document.querySelectorAll('[data-testid="stMain"] button')).filter(b => {
  const box = b.getBoundingClientRect(), text = b.querySelector('p');
  if (!text || !box.width) return false;
  const t = text.getBoundingClientRect();
  return t.right > box.right + 1 || t.left < box.left - 1 || text.scrollWidth > text.clientWidth + 1;
}).map(b => b.innerText)"""


@pytest.fixture()
def trained(loupe_server):
    """One epoch of the small model on the built-in digits in the server's Loupe folder (as the command line does)."""
    url, home = loupe_server
    train_digits(home)
    return url


@pytest.mark.parametrize("size", [(1400, 1000), (1024, 768)])
def test_present_makes_the_type_larger_and_no_toolbar_covers_a_legend(browser, trained, size):
    page = new_window(browser, *size)
    try:
        page.goto(trained)
        counts = page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').first
        expect(counts.locator("g.legend .traces")).to_have_count(2)  # train and valid
        normal = page.evaluate(FONT_JS)
        check_chart(page, counts, 2)
        nav(page, "Interpret")
        expect(page.get_by_role("heading", name="Interpret")).to_be_visible()
        page.get_by_role("tab", name="Per class", exact=True).click()
        per_class = page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot:visible').first
        check_chart(page, per_class, 3)  # precision, recall, f1: the legend the toolbar used to hide

        page.locator('[data-testid="stSidebar"]').get_by_text("Present", exact=True).click()
        wait_idle(page)
        expect(page.get_by_text("Per-class scores, as a table")).to_be_visible()  # folded away
        assert page.evaluate(FONT_JS) >= 1.25 * normal
        interpret = next(label for label, page_file, _ in DEMO_STEPS if page_file == "pages/interpret.py")
        expect(page.locator('[data-testid="stSidebar"]').get_by_role("button", name=interpret)).to_be_visible()
        page.get_by_role("tab", name="Per class", exact=True).click()
        check_chart(page, page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot:visible').first, 3)
        page.locator('[data-testid="stSidebar"]').get_by_role("button", name=DEMO_STEPS[0][0].split(":")[0]).click()
        expect(page.get_by_role("heading", name="Data", exact=True)).to_be_visible()
        wait_idle(page)
        check_chart(page, page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').first, 2)
        # the demo script's long step names wrap inside their buttons in the larger type
        main = page.locator('[data-testid="stMain"]')
        main.get_by_text("Ten-minute demo script").click()
        expect(main.get_by_role("button", name=DEMO_STEPS[-1][0])).to_be_visible()
        assert page.evaluate(OVERFLOWING_JS) == []
    finally:
        page.context.close()
