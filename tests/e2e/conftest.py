"""Browser tests: a real Loupe server on localhost driven by Playwright in the system Chromium."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from browser_steps import new_window

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
FAKE_CAMERA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]  # a moving test pattern


def chromium_path() -> str | None:
    for candidate in (os.environ.get("LOUPE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (shutil.which(candidate) or Path(candidate).is_file()):
            return shutil.which(candidate) or candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def browser():
    path = chromium_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is required for the browser tests in CI (apt-get install chromium).")
        pytest.skip("Chromium not found: install it (apt-get install chromium) to run the browser tests.")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=180_000)  # a safety net only: first loads write the built-in data and decode it
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def camera_browser(browser):
    """A second Chromium with the fake camera, from the session's Playwright (one Playwright per process)."""
    camera = browser.browser_type.launch(executable_path=chromium_path(), headless=True,
                                         args=CHROMIUM_ARGS + FAKE_CAMERA)
    yield camera
    camera.close()


class Server:
    """A Loupe server process on a free localhost port with a given LOUPE_HOME."""

    def __init__(self, home: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.home, self.log_path, self.port = home, log_path, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_path.open("a")
        full_env = {**os.environ, "LOUPE_HOME": str(home), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(self.port), "--server.headless",
             "true", "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120  # a safety net: a busy machine starts slowly
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail("Loupe did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture()
def server_env() -> dict[str, str]:
    """Extra environment for the server (a test module overrides this fixture)."""
    return {}


@pytest.fixture()
def loupe_server(tmp_path, server_env):
    """A Loupe server on a free localhost port with its own LOUPE_HOME; yields (url, home)."""
    home = tmp_path / "loupe-home"
    home.mkdir()
    server = Server(home, tmp_path / "server.log", server_env)
    yield server.url, home
    server.stop()


@pytest.fixture()
def start_server(tmp_path):
    """Start another server (e.g. a restart on the same LOUPE_HOME); each is stopped at the end of the test."""
    servers = []

    def start(home: Path, env: dict[str, str] | None = None) -> Server:
        servers.append(Server(home, tmp_path / f"server-{len(servers) + 2}.log", env))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture()
def page(browser, loupe_server):
    page = new_window(browser)
    yield page
    page.context.close()


@pytest.fixture()
def camera_page(camera_browser, loupe_server):
    """A window of the fake-camera Chromium, allowed the camera."""
    page = new_window(camera_browser, permissions=["camera"])
    yield page
    page.context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """When a browser test fails, keep a picture of every page still open (in the test's tmp_path) and put its text
in the report with the end of each server's log, so a failure on another machine says what the pages showed."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    tmp = item.funcargs.get("tmp_path")
    for log in sorted(tmp.glob("server*.log")) if tmp is not None else []:  # what the server said, warnings included
        report.sections.append((log.name, log.read_text(errors="replace")[-6000:]))
    browsers = [b for b in (item.funcargs.get("browser"), item.funcargs.get("camera_browser")) if b is not None]
    pages = [p for b in browsers for c in b.contexts for p in c.pages]
    pages += [p for p in (item.funcargs.get("page"), item.funcargs.get("camera_page")) if p is not None and p not in pages]
    if tmp is None or not pages:
        return
    for i, open_page in enumerate(pages):
        path = tmp / f"failure-{i}.png"
        try:
            open_page.screenshot(path=str(path), full_page=True)
            text = open_page.locator("body").inner_text(timeout=5_000)
            report.sections.append((f"page {i}", f"{open_page.url}\nscreenshot: {path}\n{text[:4000]}"))
        except Exception as e:  # a page that has crashed or closed: nothing to keep
            report.sections.append(("screenshots", f"{open_page.url}: none ({e})"))
