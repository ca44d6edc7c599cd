"""Look inside in Chromium: a trained run's stages from input to head; a feature map clicked shows the validation
pictures its channel responds to."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from browser_steps import new_window, train_digits, wait_idle

pytestmark = pytest.mark.e2e
STAGES = ["0. Input", "1. Block 1", "2. Block 2", "3. Block 3", "4. Block 4", "5. Head"]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A LOUPE_HOME holding one epoch of the small model on the built-in digits."""
    home = tmp_path_factory.mktemp("inside-e2e-home")
    train_digits(home)
    return home


def test_look_inside_a_trained_run_and_click_a_feature_map(browser, home, start_server):
    server = start_server(home)
    page = new_window(browser)
    try:
        page.goto(f"{server.url}/inside")
        expect(page.get_by_role("heading", name="Look inside")).to_be_visible()
        for i, name in enumerate(STAGES):
            expect(page.locator(f".st-key-inside-stage-{i}")).to_contain_text(name)
        expect(page.locator(".st-key-inside-stage-2")).to_contain_text("64 feature maps of 7 × 7")
        expect(page.locator(".st-key-inside-stage-5")).to_contain_text("Prediction:")
        expect(page.locator(".st-key-inside-maps-block-2 img")).to_have_count(8)  # the top 8 of 64
        expect(page.locator(".st-key-inside-stage-5 .js-plotly-plot")).to_be_visible()  # the probabilities

        wait_idle(page)
        button = page.locator(".st-key-inside-maps-block-2").get_by_role("button", name=re.compile(r"^#\d+$")).first
        channel = button.inner_text().strip()
        button.click()
        responds = page.locator(".st-key-inside-responds")
        expect(responds).to_contain_text(f"What channel {channel} of block 2 responds to")
        expect(responds.locator(".st-key-gallery-inside-responds img")).to_have_count(8)
        captions = responds.locator('[data-testid="stImageCaption"]').all_inner_texts()
        activations = [float(c.rsplit(" / ", 1)[1]) for c in captions]
        assert len(activations) == 8 and activations == sorted(activations, reverse=True)  # the most active first
    finally:
        page.context.close()
