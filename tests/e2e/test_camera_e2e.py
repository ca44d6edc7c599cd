"""Chromium's fake webcam: a two-class camera data set, used on the Data page, trained one epoch, then a camera prediction."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from browser_steps import nav, start_one_cycle_run

pytestmark = pytest.mark.e2e

SHOTS_PER_CLASS = 6


VIDEO_PLAYING = """() => {
  const video = document.querySelector('[data-testid="stCameraInput"] video');
  return video !== null && video.readyState >= 2 && video.videoWidth > 0;
}"""


def take_shot(page) -> None:
    """Take a photo once the camera widget shows live video (a click before that captures nothing)."""
    page.wait_for_function(VIDEO_PLAYING)
    page.locator('[data-testid="stCameraInput"]').get_by_role("button", name="Take Photo").click()


def test_make_a_camera_data_set_train_on_it_and_predict_a_camera_shot(camera_page, loupe_server):
    page = camera_page
    url, home = loupe_server
    page.goto(url)
    nav(page, "Camera")
    expect(page.get_by_role("heading", name="Camera", exact=True)).to_be_visible()

    # a set with two classes, six shots each
    page.get_by_role("textbox", name="Data set name").fill("hands")
    page.get_by_role("textbox", name="Classes, one per line (two or more)").fill("left hand\nright hand")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_text("Made “hands”")).to_be_visible()
    for i, name in enumerate(["left-hand", "right-hand"]):
        page.get_by_role("radio", name=name).click()
        expect(page.locator('[data-testid="stCameraInput"]')).to_contain_text(f"Take a shot of “{name}”")
        thumbs = page.locator(f".st-key-camera-class-{i} img")
        for n in range(1, SHOTS_PER_CLASS + 1):
            take_shot(page)
            expect(thumbs).to_have_count(n)  # saved, shown, and a fresh camera is ready
    for i, name in enumerate(["left-hand", "right-hand"]):
        expect(page.locator(f".st-key-camera-class-{i}")).to_contain_text(f"{name} · {SHOTS_PER_CLASS} shots")
    shots = {c.name: sorted(p.suffix for p in c.iterdir()) for c in (home / "camera" / "hands").iterdir()}
    assert shots == {"left-hand": [".jpg"] * SHOTS_PER_CLASS, "right-hand": [".jpg"] * SHOTS_PER_CLASS}

    # the set on the Data page, labelled by folder
    page.get_by_role("button", name="Use this data set").click()
    expect(page.get_by_role("heading", name="Data", exact=True)).to_be_visible()
    metric = page.locator('[data-testid="stMetric"]', has_text="Classes").locator('[data-testid="stMetricValue"]')
    expect(metric).to_have_text("2")
    labelled = page.locator('[data-testid="stMetric"]', has_text="Labelled images").locator('[data-testid="stMetricValue"]')
    expect(labelled).to_have_text(str(2 * SHOTS_PER_CLASS))
    expect(page.get_by_role("radio", name="Camera data sets")).to_be_checked()
    expect(page.locator(".st-key-show_batch img").first).to_be_visible()

    nav(page, "Train")
    start_one_cycle_run(page, epochs=1)
    expect(page.get_by_text("Last run:")).to_be_visible(timeout=240_000)

    # a camera shot on the Predict page gets its top-k chart at once
    nav(page, "Predict & export")
    expect(page.get_by_role("heading", name="Predict & export")).to_be_visible()
    page.get_by_role("radio", name="Camera").click()
    take_shot(page)
    expect(page.locator(".st-key-prediction-0 .js-plotly-plot")).to_be_visible(timeout=60_000)
    expect(page.locator(".st-key-prediction-0").get_by_text("camera shot")).to_be_visible()
    bars = page.evaluate("() => document.querySelector('.st-key-prediction-0 .js-plotly-plot')._fullData[0].y")
    assert sorted(bars) == ["left-hand", "right-hand"]
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)
