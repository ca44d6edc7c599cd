"""The demo room in a real browser: Explain as I go shows and hides its notes (terms open the glossary), and the
Data page's health check finds a set's planted duplicates, a train/valid leak and a picture under two labels."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from browser_steps import nav

pytestmark = pytest.mark.e2e


def test_explain_as_i_go_shows_and_hides_notes(page, loupe_server):
    url, _ = loupe_server
    page.goto(url)
    expect(page.locator(".st-key-show_batch img")).to_have_count(9)
    notes = page.locator('[class*="st-key-explain-"]')
    expect(notes).to_have_count(0)
    switch = page.locator('[data-testid="stSidebar"]').get_by_text("Explain as I go")
    switch.click()
    expect(page.locator(".st-key-explain-data")).to_be_visible()
    expect(page.locator(".st-key-explain-show_batch")).to_be_visible()
    link = page.locator(".st-key-explain-show_batch").get_by_role("link", name="augmentation")
    href = link.get_attribute("href")
    assert href.startswith("/glossary?draft=") and href.endswith("#augmentation")
    with page.context.expect_page() as opened:  # the glossary opens in a new tab: this one keeps its place
        link.click()
    glossary = opened.value
    expect(glossary.get_by_role("heading", name="Augmentation")).to_be_visible()
    glossary.close()
    nav(page, "LR finder")
    expect(page.locator(".st-key-explain-lr_find")).to_be_visible()
    switch.click()
    expect(page.locator('[class*="st-key-explain-"]')).to_have_count(0)


def test_the_health_check_finds_planted_copies_and_a_leak(page, loupe_server, tmp_path):
    url, _ = loupe_server
    rng = np.random.default_rng(7)
    # smooth random pictures (6×6 colours blown up), so a re-saved, resized copy still looks the same
    pictures = [Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8), "RGB").resize((48, 48),
                                                                                                Image.BICUBIC)
                for _ in range(16)]
    root = tmp_path / "planted"
    files = {f"train/{c}/{c}{i}.png": pictures[8 * k + i] for k, c in enumerate(("cats", "dogs")) for i in range(6)}
    files |= {f"valid/{c}/{c}9.png": pictures[8 * k + 7] for k, c in enumerate(("cats", "dogs"))}
    files["valid/cats/leaked.png"] = pictures[0]  # a training cat again, in validation
    files["train/dogs/resaved.jpg"] = pictures[9].resize((40, 40))  # a near copy of a dog, re-saved smaller
    files["train/dogs/cat_or_dog.png"] = pictures[2]  # a training cat, labelled dog
    for rel, img in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(root / rel, quality=85) if rel.endswith(".jpg") else img.save(root / rel)
    page.goto(url)
    page.get_by_role("radio", name="A folder on this computer").click()
    folder = page.get_by_role("textbox", name="Folder path")
    folder.fill(str(root))
    folder.press("Enter")
    expect(page.get_by_role("tab", name="Train/valid leaks (1)")).to_be_visible()
    expect(page.get_by_role("tab", name="Two labels (1)")).to_be_visible()
    expect(page.get_by_role("tab", name="Near copies (1)")).to_be_visible()
    page.get_by_role("tab", name="Train/valid leaks (1)").click()
    expect(page.locator(".st-key-health-leaks-0 img")).to_have_count(2)
    expect(page.locator(".st-key-health-leaks-0").get_by_text("leaked.png · cats · valid")).to_be_visible()
    expect(page.locator(".st-key-health-leaks-0").get_by_text("valid/cats/leaked.png")).to_be_visible()  # its path
    page.get_by_role("button", name="Send 2 pictures to the cleaner: 1 extra exact copy marked for deletion, "
                                    "1 unmarked").click()
    expect(page.get_by_role("heading", name="Clean")).to_be_visible()
    expect(page.get_by_text("leaked.png").first).to_be_visible()
