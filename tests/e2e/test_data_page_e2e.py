"""The Data page in a real browser: the regex workflow on the built-in digits, and a hostile zip upload."""
from __future__ import annotations

import io
import zipfile

import pytest
from playwright.sync_api import expect

from browser_steps import pick

pytestmark = pytest.mark.e2e


def metric(page, label: str):
    """The value element of the metric with this label."""
    return page.locator('[data-testid="stMetric"]', has_text=label).locator('[data-testid="stMetricValue"]')


def choose(page, select_label: str, option: str) -> None:
    """Pick an option of a Streamlit selectbox by its label."""
    pick(page, page.locator('[data-testid="stSelectbox"]', has_text=select_label), option)


def test_digits_regex_to_show_batch(page, loupe_server):
    url, _ = loupe_server
    page.goto(url)
    page.get_by_role("radio", name="Built-in (offline)").click()
    choose(page, "Built-in data set", "Digits — file names")
    pattern = page.get_by_role("textbox", name="Pattern (regular expression; the part in ( ) is the label)")

    # a broken pattern gets a plain message, not a traceback
    pattern.fill("^(.+_\\d+")
    pattern.press("Enter")
    expect(page.get_by_text("not a valid regular expression").first).to_be_visible()
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)

    pattern.fill("^(.+)_\\d+\\.png$")
    pattern.press("Enter")
    expect(metric(page, "Classes")).to_have_text("10")
    expect(metric(page, "Labelled images")).to_have_text("1,797")

    page.get_by_role("radio", name="Training batch").click()
    grid = page.locator(".st-key-show_batch")
    grid.scroll_into_view_if_needed()
    expect(grid.locator('[data-testid="stImage"] img')).to_have_count(9)
    titles = grid.locator('[data-testid="stImageCaption"]').all_inner_texts()
    assert len(titles) == 9
    assert set(titles) <= {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
    # the sidebar now shows the chosen data set
    expect(page.locator('[data-testid="stSidebar"]').get_by_text("10 classes · 1,438 train · 359 valid")).to_be_visible()


def test_hostile_zip_is_refused_and_nothing_written(page, loupe_server, tmp_path):
    url, home = loupe_server
    evil = tmp_path / "evil.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("cats/cat_1.png", b"not really a png")
        zf.writestr("../evil.txt", b"escaped!")
    evil.write_bytes(buffer.getvalue())

    page.goto(url)
    page.get_by_role("radio", name="Upload a zip").click()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(evil))
    expect(page.get_by_text("../evil.txt").first).to_be_visible()
    expect(page.get_by_text("Nothing was extracted").first).to_be_visible()

    uploads = home / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())
    assert not list(tmp_path.rglob("evil.txt"))
    assert not list(home.parent.parent.rglob("evil.txt"))


def test_good_zip_is_extracted_and_labelled(page, loupe_server, tmp_path):
    from PIL import Image

    url, home = loupe_server
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for cls, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
            for i in range(6):
                png = io.BytesIO()
                Image.new("RGB", (24, 24), colour).save(png, "PNG")
                zf.writestr(f"shapes/{cls}/{cls}_{i}.png", png.getvalue())
    archive = tmp_path / "my shapes.zip"
    archive.write_bytes(buffer.getvalue())

    page.goto(url)
    page.get_by_role("radio", name="Upload a zip").click()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(archive))
    expect(page.get_by_text("Extracted my shapes.zip").first).to_be_visible()
    expect(metric(page, "Classes")).to_have_text("2")
    expect(page.locator(".st-key-show_batch").locator('[data-testid="stImage"] img')).to_have_count(9)
    extracted = home / "uploads" / "my-shapes"
    assert sorted(p.name for p in (extracted / "shapes").iterdir()) == ["blue", "red"]
    assert len(list(extracted.rglob("*.png"))) == 12
