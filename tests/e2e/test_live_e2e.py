"""Chromium's fake webcam on the Camera page's Live view: the predictions beside the video update while it streams,
That's wrong keeps the frame on screen as a new shot, and Train again opens the Train page on that camera set."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import expect

from browser_steps import nav, wait_idle
from engine.data.builtin import digit_images
from engine.data.camera import add_shot, create_set
from engine.data.loaders import PresizeCache
from engine.data.resolve import resolve
from engine.spec import RunSpec, override
from engine.store.jobs import Job
from engine.store.runs import RunStore
from engine.train.run import train_target

pytestmark = pytest.mark.e2e

COUNT = re.compile(r"(\d+) predictions so far")
COUNT_JS = """([least]) => {
  const box = document.querySelector('.st-key-live-readout');
  const m = box && box.innerText.match(/(\\d+) predictions so far/);
  return m !== null && Number(m[1]) >= least;
}"""


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
    folder = camera_run(home, monkeypatch)
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

    # That's wrong: the frame on screen becomes a new shot of the class chosen under it (the first, left hand)
    shots = folder / "left-hand"
    before = len(list(shots.iterdir()))
    wait_idle(page)
    page.get_by_role("button", name="That's wrong").click()
    expect(page.get_by_text("Saved the frame into “left-hand” of “hands”")).to_be_visible()
    assert len(list(shots.iterdir())) == before + 1

    # Train again: the Train page, on the camera set with its new shot; the video has left with the Camera page
    wait_idle(page)
    page.get_by_role("button", name="Train again").click()
    expect(page.get_by_role("heading", name="Train", exact=True)).to_be_visible()
    expect(page.locator("iframe[title*='webrtc']")).to_have_count(0)
    sidebar = page.locator('[data-testid="stSidebar"]')
    expect(sidebar).to_contain_text(re.compile(r"hands\s*2 classes · \d+ train · \d+ valid"))
    counts = re.search(r"(\d+) train · (\d+) valid", sidebar.inner_text())
    assert int(counts.group(1)) + int(counts.group(2)) == 13  # the 12 shots and the one just saved
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)
