"""Playwright driving Debian's Chromium against a real daphne worker: the `stack` and `browser`
fixtures (import them into a conftest or test module that needs them) and logged-in pages."""

from __future__ import annotations

import shutil

import pytest

from tests.support.processes import Stack

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def stack():
    stack = Stack(redis=False)
    stack.port = stack.start_worker()
    stack.base = f"http://127.0.0.1:{stack.port}"
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.fail("Debian's chromium is missing; ./test.sh installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


def logged_in_page(browser, stack, cookie: str, width: int = 1366, height: int = 900):
    name, value = cookie.split("=", 1)
    context = browser.new_context(viewport={"width": width, "height": height})
    context.add_cookies([{"name": name, "value": value, "url": stack.base}])
    context.set_default_timeout(60_000)  # the machine may be busy with other tests' processes
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    return page


def close(*pages):
    """Close each page's context, failing if the page threw an error."""
    for page in pages:
        assert page.errors == [], page.errors
        page.context.close()
