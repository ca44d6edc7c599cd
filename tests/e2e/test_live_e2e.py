"""Chromium's fake webcam on the Camera page's Live view: the predictions beside the video update while it streams."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import expect

from browser_steps import nav, new_window, wait_idle
from engine.data.builtin import digit_images
from engine.data.camera import add_shot, create_set
from engine.data.loaders import PresizeCache
from engine.data.resolve import resolve
from engine.spec import RunSpec, override
from engine.store.jobs import Job
from engine.store.runs import RunStore
from engine.train.run import train_target

pytestmark = pytest.mark.e2e

FAKE_CAMERA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]  # a moving test pattern
COUNT = re.compile(r"(\d+) predictions so far")
COUNT_JS = """([least]) => {
  const box = document.querySelector('.st-key-live-readout');
  const m = box && box.innerText.match(/(\\d+) predictions so far/);
  return m !== null && Number(m[1]) >= least;
}"""


@pytest.fixture(scope="module")
def camera_browser(pytestconfig, browser):
    """A second Chromium with the fake camera, from the session's Playwright (one Playwright per process)."""
    e2e = pytestconfig.pluginmanager.get_plugin(str(Path(__file__).with_name("conftest.py")))
    camera = browser.browser_type.launch(executable_path=e2e.chromium_path(), headless=True,
                                         args=e2e.CHROMIUM_ARGS + FAKE_CAMERA)
    yield camera
    camera.close()


@pytest.fixture()
def camera_page(camera_browser, loupe_server):
    page = new_window(camera_browser, permissions=["camera"])
    yield page
    page.context.close()


def jpeg(index: int) -> bytes:
    images, _ = digit_images()
    out = io.BytesIO()
    Image.fromarray(images[index], "L").convert("RGB").resize((64, 48)).save(out, format="JPEG")
    return out.getvalue()


def camera_run(home: Path, monkeypatch) -> Path:
    """A camera data set "hands" of two classes and a small model trained on it, in the server's LOUPE_HOME."""
    monkeypatch.setenv("LOUPE_HOME", str(home))
    folder = create_set("hands", ["left hand", "right hand"])
    for i in range(12):
        add_shot(folder, ["left-hand", "right-hand"][i % 2], jpeg(i))
    spec = override(RunSpec(), {"data.source": str(folder), "data.size": 28, "data.presize": 32, "data.bs": 4,
                                "train.schedule": "one_cycle", "train.epochs": 1, "train.lr": 3e-3, "train.seed": 0})
    job = Job("train", "hands", train_target(resolve(spec), PresizeCache(), RunStore()))
    job.run()
    assert job.state == "done", job.error_detail
    return folder


def prediction_count(page) -> int:
    return int(COUNT.search(page.locator(".st-key-live-readout").inner_text()).group(1))


def open_live(page) -> None:
    nav(page, "Camera")
    expect(page.get_by_role("heading", name="Camera", exact=True)).to_be_visible()
    wait_idle(page)
    page.get_by_role("radio", name="Live").click()
    expect(page.get_by_text("Model of run")).to_be_visible()


def test_live_predictions_update_while_the_fake_camera_streams(camera_page, loupe_server, monkeypatch):
    page = camera_page
    url, home = loupe_server
    camera_run(home, monkeypatch)
    page.goto(url)
    open_live(page)
    expect(page.locator(".st-key-live-readout")).to_contain_text("No prediction yet")

    video = page.frame_locator("iframe[title*='webrtc']")
    video.get_by_role("button", name="Start").click()
    readout = page.locator(".st-key-live-readout")
    expect(readout).to_contain_text("predictions so far", timeout=240_000)
    first = prediction_count(page)
    page.wait_for_function(COUNT_JS, arg=[first + 3], timeout=240_000)  # the readout follows the stream
    expect(readout).to_contain_text(re.compile(r"(left|right)-hand · \d+%"))
    expect(video.locator("video")).to_be_visible()

    expect(page.locator('[data-testid="stException"]')).to_have_count(0)
    # That's wrong, Train again and leaving the page are checked by tests/pages/test_camera_live.py: here, on this
    # shared machine, the stream stops by itself within a minute and the next script run then hangs (see the README)
