"""Steps the browser tests share: the sidebar navigation, and starting a one-cycle run on the Train page."""
from __future__ import annotations

from playwright.sync_api import expect


def nav(page, name: str) -> None:
    """Click a page in the sidebar navigation."""
    page.locator(".st-key-loupe-nav").get_by_text(name, exact=True).click()


def start_one_cycle_run(page, epochs: int) -> None:
    """On the Train page: fit_one_cycle for `epochs` epochs, then Train."""
    expect(page.get_by_role("heading", name="Train")).to_be_visible()
    page.get_by_role("radio", name="fit_one_cycle (all layers)").click()
    field = page.get_by_role("spinbutton", name="Epochs", exact=True)
    field.fill(str(epochs))
    field.press("Enter")
    # the button names the epochs once the server has them: no racing the number to the server
    page.get_by_role("button", name=f"Train ({epochs} epoch{'s' if epochs != 1 else ''})").click()
