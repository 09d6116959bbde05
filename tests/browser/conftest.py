"""Playwright driving Debian's Chromium against a real daphne worker (tests/support/browser.py)."""

from tests.support.browser import browser, stack  # noqa: F401 (the fixtures)
