"""Take the README's screenshots of the demo-room pages in the system Chromium (Playwright, headless).

    .venv/bin/python docs/screenshots.py            # writes docs/data-page.png, docs/train-page.png, …

It writes the Data page, show_batch, Explain as I go, How learning works, Compare, a run report, Look inside, Present,
a Train run mid-way, Interpret (top losses, a clicked confusion cell), Clean, Predict, the health check, Camera and
the Live view (on Chromium's fake camera, with the newest run).
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
sys.path.insert(0, str(ROOT / "tests" / "e2e"))  # the browser tests' steps (browser_steps.py)

from bench.ui_latency import start_server  # noqa: E402  (the same server start as the latency benchmark)
from engine.data.builtin import digit_images  # noqa: E402

HOLD_AT = 54  # the Train page's run waits after this batch, mid-way through its third epoch of 22 batches
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


def wrote(path: Path) -> None:
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


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
    wrote(path)


def to_top(locator) -> None:
    """Scroll the main area so that this element is at the top of the window."""
    locator.evaluate("e => e.scrollIntoView()")


def shoot_data(page, data_path: Path, batch_path: Path) -> None:
    """The whole Data page of the built-in digits once its health check is done (its short Duplicates tab shown: the
    health check has a shot of its own); then show_batch's one image, many augmentations, with the aug_transforms
    sliders open."""
    from playwright.sync_api import expect

    expect(page.get_by_text("Images compared")).to_be_visible()  # the health check's result
    page.get_by_role("tab", name="Duplicates").click()
    to_top(page.get_by_role("heading", name="Data", exact=True))
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMainBlockContainer\"]').scrollHeight")
    shoot(page, data_path, height=height)
    page.get_by_text("Augmentation (fastai's aug_transforms)").click()
    page.get_by_role("radio", name="One image, many augmentations").click()
    idle(page)
    expect(page.get_by_role("button", name="Reset to fastai's defaults")).to_be_visible()
    expect(page.locator(".st-key-show_batch img")).to_have_count(9)
    to_top(page.locator('[data-testid="stHeading"]', has_text="6 · show_batch"))
    page.mouse.move(0, 0)  # no image's hover toolbar in the picture
    shoot(page, batch_path, height=1300)


def shoot_train(page, hold: Path, path: Path) -> None:
    """A 4-epoch run on the Train page, held after batch HOLD_AT until `hold` exists again (the browser tests' hook:
    however fast the machine, two epochs are in fastai's table and the sidebar's Running box shows the run); then
    the run's end."""
    from browser_steps import start_one_cycle_run
    from playwright.sync_api import expect

    hold.unlink()
    nav(page, "Train")
    start_one_cycle_run(page, epochs=4)
    page.wait_for_function(f"""() => {{ const plot = document.querySelector('.st-key-train-live_chart .js-plotly-plot');
        return plot && plot._fullData && plot._fullData.length && plot._fullData[0].x.length === {HOLD_AT + 1}; }}""",
                           timeout=600_000)
    expect(page.locator('[data-testid="stTable"] tbody tr')).to_have_count(2)
    page.mouse.move(0, 0)  # no chart toolbar over the legend
    shoot(page, path, height=1050)
    hold.touch()
    expect(page.get_by_text("Last run:")).to_be_visible()


def shoot_interpret(page, top_path: Path, cell_path: Path) -> None:
    """Interpret the newest run: top losses with Grad-CAM; then, Grad-CAM off, the busiest wrong cell clicked."""
    from browser_steps import CELLS_JS
    from playwright.sync_api import expect

    nav(page, "Interpret")
    cam = page.get_by_text("Grad-CAM: colour where the model looked")
    cam.click()
    idle(page)
    expect(page.locator(".st-key-gallery-top_losses img")).to_have_count(9)
    shoot(page, top_path, height=1050)
    cam.click()
    idle(page)
    page.get_by_role("tab", name="Confusion matrix").click()
    page.wait_for_function(f"({CELLS_JS})() !== null", timeout=600_000)
    cells = page.evaluate(CELLS_JS)
    index = max(range(len(cells["x"])), key=lambda i: (cells["x"][i] != cells["y"][i], cells["counts"][i]))
    actual, predicted, count = cells["actual"][index], cells["predicted"][index], cells["counts"][index]
    idle(page)
    page.locator(".st-key-interpret-confusion .scatterlayer .trace .points path").nth(index).click(force=True)
    expect(page.get_by_text(f"{count:,} image(s) of {actual} predicted as {predicted}")).to_be_visible()
    expect(page.locator(".st-key-gallery-cell img")).to_have_count(min(count, 50))
    page.mouse.move(0, 0)
    to_top(page.get_by_role("tablist").first)
    shoot(page, cell_path, height=1240)


def shoot_clean(page, path: Path) -> None:
    """Clean with the newest run: the hardest training eights, each with its keep / delete / relabel choice."""
    from playwright.sync_api import expect

    nav(page, "Clean")
    expect(page.locator(".st-key-gallery-clean img")).to_have_count(12)
    page.wait_for_function("() => [...document.querySelectorAll('.st-key-gallery-clean img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)", timeout=600_000)
    shoot(page, path, height=1650)


def shoot_predict(page, folder: Path, path: Path) -> None:
    """Predict with the newest run: an uploaded digit (a four of the built-in set) and its top-5 classes."""
    from playwright.sync_api import expect

    images, labels = digit_images()
    digit = folder / "my_four.png"
    Image.fromarray(images[list(labels).index(4)], "L").save(digit)
    nav(page, "Predict & export")
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(digit))
    expect(page.locator(".st-key-prediction-0 .js-plotly-plot")).to_be_visible()
    page.mouse.move(0, 0)
    shoot(page, path, height=1000)


def shoot_live(page, path: Path) -> None:
    """The Camera page's Live view on the fake camera, once the readout beside the video has counted predictions
    (the newest run: the Train page's, on the digits)."""
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
    wrote(path)


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
    wrote(path)


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
        hold = Path(tmp) / "train-on"  # the Train page's run goes on past HOLD_AT while this file exists
        hold.touch()
        os.environ.update(LOUPE_HOLD_AT_BATCH=str(HOLD_AT), LOUPE_HOLD_FILE=str(hold))  # for the server
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
                shoot_data(page, args.out / "data-page.png", args.out / "show-batch.png")

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

                # a run of four epochs on the Train page, then its model on Interpret, Clean and Predict
                shoot_train(page, hold, args.out / "train-page.png")
                shoot_interpret(page, args.out / "interpret-page.png", args.out / "confusion.png")
                shoot_clean(page, args.out / "clean-page.png")
                shoot_predict(page, Path(tmp), args.out / "predict-page.png")

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
