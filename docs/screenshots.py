"""Take the README's screenshots of the demo-room pages in the system Chromium (Playwright, headless).

    .venv/bin/python docs/screenshots.py            # writes docs/compare-page.png, docs/health-check.png, …

The Live view's shot uses the Compare page's middle run on Chromium's fake camera.
A Loupe server runs on a free localhost port with a fresh LOUPE_HOME; the built-in digits are the data, and
the health check's folder is made of digits with planted copies. Nothing here is needed to run Loupe.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ui_latency import start_server  # noqa: E402  (the same server start as the latency benchmark)
from engine.data.builtin import digit_images  # noqa: E402

FAKE_CAMERA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
IDLE_JS = """() => {
  const root = document.querySelector('[data-test-script-state]');
  return root !== null && root.getAttribute('data-test-script-state') === 'notRunning';
}"""


def chromium() -> str:
    for name in (os.environ.get("LOUPE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    sys.exit("Chromium not found: apt-get install chromium")


def planted_digits(root: Path) -> Path:
    """Digits in train/valid class folders, with a training image copied into valid and one re-saved smaller."""
    images, labels = digit_images()
    names = ["zero", "one", "two", "three"]
    count = {}
    for img, label in zip(images, labels):
        if label >= len(names):
            continue
        n = count[label] = count.get(label, 0) + 1
        if n > 12:
            continue
        split = "valid" if n > 9 else "train"
        folder = root / split / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(folder / f"{names[label]}_{n}.png")
    shutil.copy(root / "train/two/two_3.png", root / "valid/two/two_copy.png")  # a leak
    Image.open(root / "train/three/three_2.png").resize((24, 24)).convert("RGB").save(
        root / "train/three/three_resaved.jpg", quality=80)  # a near copy
    return root


def idle(page) -> None:
    page.wait_for_function(IDLE_JS, timeout=600_000)


def nav(page, name: str) -> None:
    page.locator(".st-key-loupe-nav").get_by_text(name, exact=True).click()
    idle(page)


def shoot(page, path: Path, height: int = 900) -> None:
    """The window at this height (Streamlit scrolls inside its main area, so a taller window shows more)."""
    page.set_viewport_size({"width": 1280, "height": height})
    idle(page)
    page.wait_for_timeout(1500)  # charts finish their entry transition
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": 1280, "height": 900})
    print(f"wrote {path.relative_to(ROOT)}")


def shoot_live(page, path: Path) -> None:
    """The Camera page's Live view on the fake camera, once the readout beside the video has counted predictions
    (the newest run: the last of the Compare page's, trained on the digits)."""
    from playwright.sync_api import expect

    page.get_by_role("radio", name="Live").click()
    idle(page)
    page.frame_locator("iframe[title*='webrtc']").get_by_role("button", name="Start").click()
    expect(page.locator(".st-key-live-readout")).to_contain_text("predictions so far")
    page.wait_for_function("""() => { const m = document.querySelector('.st-key-live-readout')?.innerText
        .match(/(\\d+) predictions so far/); return m !== null && Number(m[1]) >= 3; }""", timeout=600_000)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.wait_for_timeout(1500)  # the readout's next redraw
    page.screenshot(path=str(path))
    print(f"wrote {path.relative_to(ROOT)}")


def shoot_report(browser, home: Path, run_id: int, path: Path) -> None:
    """The top of a run's report (engine/results/report.py), opened from its file with every network request refused."""
    from engine.results.report import write_report
    from engine.store.runs import RunStore

    store = RunStore(home / "runs.sqlite")
    try:
        report = write_report(home / "runs" / str(run_id), home / "report.html", store=store)
    finally:
        store.close()
    context = browser.new_context(viewport={"width": 1100, "height": 1500})
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:"))
                  else route.abort())
    page = context.new_page()
    page.goto(report.as_uri())
    page.locator("#chart-curves svg.main-svg").first.wait_for()
    page.evaluate("() => [...document.querySelectorAll('h2')].find(h => h.textContent === 'Training').scrollIntoView()")
    page.wait_for_timeout(500)
    page.screenshot(path=str(path))
    context.close()
    print(f"wrote {path.relative_to(ROOT)}")


def shoot_learning(page, path: Path) -> None:
    """How learning works on the digits: a digit as numbers, the class averages, the toy after 11 steps at 1e-05."""
    nav(page, "How learning works")
    page.get_by_role("heading", name="3 · Gradient descent by hand").wait_for()
    for name in ("Initialise", "Predict", "Loss", "Gradient", "Step", "Run 10 steps", "Predict"):
        idle(page)
        page.get_by_role("button", name=name, exact=True).click()
    page.locator(".st-key-learning-phases").get_by_text("after 11 steps").wait_for()
    page.get_by_role("heading", name="How learning works").scroll_into_view_if_needed()
    shoot(page, path, height=2600)


def shoot_inside(page, path: Path) -> None:
    """Look inside the newest run: the first validation picture's stages, a feature map of block 2 clicked."""
    from playwright.sync_api import expect

    nav(page, "Look inside")
    expect(page.locator(".st-key-inside-stage-5")).to_be_visible()
    page.locator(".st-key-inside-maps-block-2").get_by_role("button", name="#").first.click()
    expect(page.locator(".st-key-gallery-inside-responds img")).to_have_count(8)
    page.mouse.move(0, 0)  # no image's hover toolbar in the picture
    page.locator(".st-key-inside-stage-1").scroll_into_view_if_needed()
    shoot(page, path, height=1500)


def shoot_present(page, path: Path) -> None:
    """Present mode on the Interpret page's per-class chart, its toolbar shown by a hover; Present off again after."""
    switch = page.locator('[data-testid="stSidebar"]').get_by_text("Present", exact=True)
    switch.click()
    idle(page)
    nav(page, "Interpret")
    page.get_by_role("tab", name="Per class", exact=True).click()
    chart = page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot:visible').first
    chart.scroll_into_view_if_needed()
    page.mouse.wheel(0, -200)
    chart.hover()
    shoot(page, path, height=1000)
    switch.click()
    idle(page)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=600_000)
    with tempfile.TemporaryDirectory(prefix="loupe-shots-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        proc, url = start_server(home)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium(), headless=True,
                                            args=["--no-sandbox", "--disable-gpu"] + FAKE_CAMERA)
                context = browser.new_context(viewport={"width": 1280, "height": 900}, permissions=["camera"])
                page = context.new_page()
                page.set_default_timeout(600_000)

                # Explain as I go, on the Data page of the built-in digits
                page.goto(url)
                expect(page.locator(".st-key-show_batch img")).to_have_count(9)
                page.locator('[data-testid="stSidebar"]').get_by_text("Explain as I go").click()
                expect(page.locator(".st-key-explain-show_batch")).to_be_visible()
                page.locator(".st-key-explain-show_batch").scroll_into_view_if_needed()
                shoot(page, args.out / "explain-mode.png")
                page.locator('[data-testid="stSidebar"]').get_by_text("Explain as I go").click()
                expect(page.locator('[class*="st-key-explain-"]')).to_have_count(0)

                shoot_learning(page, args.out / "learning-page.png")

                # Compare: two learning rates, one epoch each
                nav(page, "Train")
                page.get_by_role("radio", name="fit_one_cycle (all layers)").click()
                epochs = page.get_by_role("spinbutton", name="Epochs", exact=True)
                epochs.fill("2")
                epochs.press("Enter")
                expect(page.get_by_role("button", name="Train (2 epochs)")).to_be_visible()
                nav(page, "Compare")
                page.get_by_role("radio", name="3", exact=True).click()
                idle(page)
                page.get_by_role("button", name="Start 3 runs").click()
                expect(page.get_by_text("Last experiment:")).to_be_visible()
                shoot(page, args.out / "compare-page.png", height=1900)
                shoot_report(browser, home, 2, args.out / "run-report.png")  # its middle learning rate
                shoot_inside(page, args.out / "inside-page.png")  # the newest of those runs
                shoot_present(page, args.out / "present-mode.png")

                # the health check of a folder with a planted leak and a near copy
                folder = planted_digits(Path(tmp) / "planted")
                nav(page, "Data")
                page.get_by_role("radio", name="A folder on this computer").click()
                box = page.get_by_role("textbox", name="Folder path")
                box.fill(str(folder))
                box.press("Enter")
                tab = page.get_by_role("tab", name="Train/valid leaks (1)")
                expect(tab).to_be_visible()
                tab.click()
                tab.scroll_into_view_if_needed()
                page.mouse.wheel(0, -120)
                shoot(page, args.out / "health-check.png", height=1100)

                # the Camera page with Chromium's fake camera: a set of two classes, three shots each
                nav(page, "Camera")
                page.get_by_role("textbox", name="Data set name").fill("hands")
                page.get_by_role("textbox", name="Classes, one per line (two or more)").fill("open hand\nfist")
                page.get_by_role("button", name="Create").click()
                for i, name in enumerate(["fist", "open-hand"]):
                    page.get_by_role("radio", name=name).click()
                    idle(page)
                    for n in range(1, 4):
                        page.wait_for_function("""() => { const v = document.querySelector(
                            '[data-testid="stCameraInput"] video'); return v && v.readyState >= 2; }""")
                        page.locator('[data-testid="stCameraInput"]').get_by_role("button", name="Take Photo").click()
                        expect(page.locator(f".st-key-camera-class-{i} img")).to_have_count(n)
                page.wait_for_function("""() => { const v = document.querySelector(
                    '[data-testid="stCameraInput"] video'); return v && v.readyState >= 2; }""")
                shoot(page, args.out / "camera-page.png", height=1300)
                shoot_live(page, args.out / "live-view.png")
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
