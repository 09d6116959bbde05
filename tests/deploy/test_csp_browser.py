"""The editor works under the production Content-Security-Policy (no eval, no inline script),
served through nginx by two workers: two people type into one cell and see each other."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.conf import settings

from tests.support.browser import CHROMIUM, FLAGS
from tests.support.processes import Stack, start_proxy
from tests.support.waiting import eventually

pytestmark = [pytest.mark.browser, pytest.mark.processes]


@pytest.fixture(scope="module")
def site():
    stack = Stack(CONTENT_SECURITY_POLICY=settings.CONTENT_SECURITY_POLICY)
    run_dir = None
    try:
        port, run_dir = start_proxy(stack)
        stack.base = f"http://127.0.0.1:{port}"
        yield stack
    finally:
        stack.close()
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)


def page_for(browser, stack, cookie: str):
    name, value = cookie.split("=", 1)
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.add_cookies([{"name": name, "value": value, "url": stack.base}])
    context.set_default_timeout(60_000)
    page = context.new_page()
    page.problems = []
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    # CSP violations are console errors; failed loads are recorded with their URL instead
    page.on(
        "console",
        lambda m: m.type == "error" and "Failed to load" not in m.text and page.problems.append(m.text),
    )
    page.on("response", lambda r: r.status >= 400 and "favicon" not in r.url and page.problems.append(r.url))
    return page


def test_the_editor_works_under_the_policy_through_nginx(site):
    from playwright.sync_api import sync_playwright

    alice = site.user_with_notebook("alice@example.com", title="Under CSP")
    bob = site.call("make_user_and_notebook", "bob@example.com", "null")
    site.call("share_with", alice["notebook_id"], "bob@example.com", "editor")
    url = f"{site.base}/n/{alice['notebook_id']}/"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        a, b = page_for(browser, site, alice["cookie"]), page_for(browser, site, bob["cookie"])
        for page in (a, b):
            response = page.goto(url, wait_until="domcontentloaded")
            assert "script-src 'self';" in response.headers["content-security-policy"]
            page.locator('[data-testid="cell"]').first.locator(".cm-content").click()
        a.keyboard.type("print('through nginx')", delay=10)
        b_text = b.locator('[data-testid="cell"]').first.locator(".cm-content")
        source = "window.__editor.ydoc.getArray('cells').get(0).get('source').toString()"
        # (read from Bob's document: on the page, Alice's cursor and name may sit inside the text)
        typed = "print('through nginx')"
        eventually(lambda: typed in b.evaluate(source), timeout=20, what="Alice's typing at Bob")
        eventually(lambda: "Alice" in b_text.inner_text(), timeout=10, what="Alice's presence at Bob")
        a.wait_for_selector('[data-testid="saved"]:has-text("All changes saved")', timeout=10_000)
        Path("var/screenshots").mkdir(parents=True, exist_ok=True)
        a.screenshot(path="var/screenshots/editor-nginx-csp.png", full_page=True)
        assert a.problems == []
        assert b.problems == []
        browser.close()
