"""Headless Debian Chromium driven by Playwright, and the app on loopback: the browser test and screenshots share it."""

from __future__ import annotations

import contextlib
import shutil
import socket
from pathlib import Path

# Debian's package `chromium`; Playwright's own browser download does not work offline.
CHROMIUM = "/usr/bin/chromium"
# The network here is closed: without the background-networking flags Chromium keeps dialling out.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    """The Chromium binary, or None when it is not installed."""
    return CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(workdir: str | Path):
    """The real app on a free loopback port; yields its URL and closes it afterwards."""
    from tunesmith.webui.app import build_app

    app = build_app(workdir)
    port = free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


@contextlib.contextmanager
def browser_page(width: int = 1280, height: int = 1000):
    """A new page in headless Chromium (closed, with the browser, afterwards)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


def fill(page, elem_id: str, value) -> None:
    """Types into the text or number input of the component with this elem_id, then leaves it (as a person does)."""
    box = page.locator(f"#{elem_id}").locator("textarea, input").first
    box.fill(str(value))
    box.press("Tab")


def choose(page, elem_id: str, option: str) -> None:
    """Opens a dropdown and clicks one of its options."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()
