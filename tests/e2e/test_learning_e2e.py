"""How learning works in Chromium: a digit as numbers and the baseline drawn, then gradient descent by hand stepped
phase by phase, ten steps at once, and started again."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from browser_steps import nav, wait_idle

pytestmark = pytest.mark.e2e


def press(page, name: str) -> None:
    wait_idle(page)
    page.get_by_role("button", name=name, exact=True).click()


def test_step_the_toy_by_hand(page, loupe_server):
    url, _ = loupe_server
    page.goto(url)
    nav(page, "How learning works")
    expect(page.get_by_role("heading", name="How learning works")).to_be_visible()
    expect(page.get_by_role("heading", name="3 · Gradient descent by hand")).to_be_visible()
    expect(page.locator('[data-testid="stMetric"]', has_text="Closest average · L1")).to_be_visible()
    expect(page.locator(".st-key-learning-averages img")).to_have_count(10)  # one average per digit
    expect(page.locator('[data-testid="stPlotlyChart"]')).to_have_count(2)  # the picture's numbers, the toy

    phases = page.locator(".st-key-learning-phases")
    press(page, "Initialise")
    expect(phases).to_contain_text("a random first guess")
    expect(page.get_by_role("button", name="Loss", exact=True)).to_be_disabled()
    for name, shown in (("Predict", "the curve's speed at each second"), ("Loss", "30,282.7"),
                        ("Gradient", "∂loss/∂a"), ("Step", "Step 1")):
        press(page, name)
        expect(phases).to_contain_text(shown)
    expect(page.locator('[data-testid="stPlotlyChart"]')).to_have_count(3)  # the loss history has its first point
    press(page, "Run 10 steps")
    expect(phases).to_contain_text("Step 11")
    expect(page.get_by_text("The loss has fallen a long way")).to_be_visible()
    press(page, "Initialise")
    expect(phases).to_contain_text("a random first guess")
