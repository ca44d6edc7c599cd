"""After a short training run in the browser: Interpret (top losses, a confusion cell), Predict an upload, download the export."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from browser_steps import CELLS_JS, nav, start_one_cycle_run, wait_idle
from engine.data.builtin import digit_images

pytestmark = pytest.mark.e2e

def test_train_interpret_predict_export(page, loupe_server, tmp_path):
    url, _ = loupe_server
    page.goto(url)
    expect(page.locator(".st-key-show_batch img")).to_have_count(9)

    nav(page, "Train")
    start_one_cycle_run(page, epochs=1)
    expect(page.get_by_text("Last run:")).to_be_visible(timeout=240_000)

    # Interpret: nine top-loss images, then a confusion-matrix cell clicked shows exactly its images
    page.get_by_role("link", name="Interpret this model").click()
    expect(page.get_by_role("heading", name="Interpret")).to_be_visible()
    expect(page.locator(".st-key-gallery-top_losses img")).to_have_count(9, timeout=120_000)
    page.get_by_role("tab", name="Confusion matrix").click()
    page.wait_for_function(f"({CELLS_JS})() !== null", timeout=60_000)
    cells = page.evaluate(CELLS_JS)
    n = int(round(len(cells["x"]) ** 0.5))
    # the busiest cell off the diagonal (else the busiest on it)
    order = sorted(range(len(cells["x"])), key=lambda i: (cells["x"][i] == cells["y"][i], -cells["counts"][i]))
    target = order[0] if cells["counts"][order[0]] > 0 else max(range(len(cells["x"])), key=lambda i: cells["counts"][i])
    actual, predicted, count = cells["actual"][target], cells["predicted"][target], cells["counts"][target]
    assert n == 10
    point = page.locator(".st-key-interpret-confusion .scatterlayer .trace .points path").nth(target)
    point.click(force=True)
    expect(page.get_by_text(f"{count:,} image(s) of {actual} predicted as {predicted}")).to_be_visible(timeout=60_000)
    expect(page.locator(".st-key-gallery-cell img")).to_have_count(min(count, 50), timeout=60_000)

    # Predict: an uploaded PNG gets a top-5 chart; a file that is not an image gets a plain message
    images, targets = digit_images()
    png = tmp_path / "my_digit.png"
    Image.fromarray(images[int(np.flatnonzero(targets == 3)[0])], "L").save(png)
    notes = tmp_path / "notes.png"
    notes.write_text("this is not a picture")
    wide, tiny = tmp_path / "wide.png", tmp_path / "tiny.png"  # extreme shapes get a prediction too
    Image.new("RGB", (20000, 100), (200, 30, 30)).save(wide)
    Image.new("RGB", (1, 1), (255, 255, 255)).save(tiny)
    nav(page, "Predict & export")
    expect(page.get_by_role("heading", name="Predict & export")).to_be_visible()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
        [str(png), str(notes), str(wide), str(tiny)])
    expect(page.locator(".st-key-prediction-0 .js-plotly-plot")).to_be_visible(timeout=60_000)
    expect(page.locator(".st-key-prediction-1").get_by_text("wide.png")).to_be_visible()
    expect(page.locator(".st-key-prediction-2").get_by_text("tiny.png")).to_be_visible()
    expect(page.locator(".st-key-prediction-2 .js-plotly-plot")).to_be_visible()
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)
    expect(page.locator(".st-key-prediction-0").get_by_text("my_digit.png")).to_be_visible()
    bars = page.evaluate("() => document.querySelector('.st-key-prediction-0 .js-plotly-plot')._fullData[0].y.length")
    assert bars == 5
    expect(page.get_by_text("“notes.png” is not an image Loupe can read")).to_be_visible()

    # Export: the zip downloads with the model, its labels and the standalone scripts. Clicked once the page's run
    # is over: a run that redraws the button gives it a new download id, and a click still holding the old one
    # downloads nothing (Streamlit's deferred downloads; seen once in a busy run)
    wait_idle(page)
    with page.expect_download(timeout=180_000) as info:
        page.get_by_role("button", name="Download model (zip)").click()
    saved = tmp_path / "export.zip"
    info.value.save_as(saved)
    names = zipfile.ZipFile(io.BytesIO(saved.read_bytes())).namelist()
    assert {n.split("/", 1)[1] for n in names} >= {"model.pt", "labels.json", "preprocessing.json", "predict.py",
                                                   "train.py", "spec.json"}


RAW_NAV_JS = """
window.__rawNav = [];
new MutationObserver(() => {
  const raw = document.querySelector('[data-testid="stSidebarNav"]');
  if (raw && !window.__rawNav.includes(raw.innerText)) window.__rawNav.push(raw.innerText);
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def test_a_page_opened_by_its_address_on_a_fresh_server_keeps_the_app_frame(page, loupe_server):
    url, _ = loupe_server
    page.add_init_script(RAW_NAV_JS)  # watches every change of the page from its very first moment
    page.goto(f"{url}/predict")  # the first visit of a just-started server (a bookmark, a restored tab)
    expect(page.get_by_role("heading", name="Predict & export")).to_be_visible()
    nav = page.locator(".st-key-loupe-nav")
    expect(nav.get_by_text("Predict & export", exact=True)).to_be_visible()
    expect(nav.get_by_text("LR finder", exact=True)).to_be_visible()
    expect(page.get_by_text("No trained model yet")).to_be_visible()
    # Streamlit's own navigation, which shows the pages/ folder's raw file names ("lr find") before the app's
    # names on a first load, never appeared
    assert page.evaluate("window.__rawNav") == []
