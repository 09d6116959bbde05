"""Firefox (Debian's firefox-esr, driven over WebDriver BiDi by puppeteer-core in
tests/node/firefox_editor.mjs) and Chromium (Playwright) edit one cell together."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.browser import logged_in_page
from tests.support.processes import ROOT
from tests.support.seed import seed

pytestmark = [pytest.mark.browser, pytest.mark.processes]

FIREFOX = "/usr/bin/firefox-esr"
SCRIPT = ROOT / "tests" / "node" / "firefox_editor.mjs"
SCREENSHOT = ROOT / "var" / "screenshots" / "firefox-editor.png"


def read_line(proc: subprocess.Popen, prefix: str) -> dict:
    """The next `PREFIX <json>` line the script prints; fails with everything it said otherwise."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(prefix + " "):
            return json.loads(line[len(prefix) + 1 :])
        if line.startswith("FAILED "):
            break
    proc.wait(10)
    pytest.fail(
        f"driving Firefox failed (exit {proc.returncode}):\n{''.join(seen)}\nstderr:\n{proc.stderr.read()}"
    )


def test_firefox_and_chromium_edit_one_cell(browser, stack):
    if not Path(FIREFOX).exists():
        pytest.fail(f"{FIREFOX} is missing: ./test.sh installs Debian's firefox-esr")
    if not (ROOT / "node_modules" / "puppeteer-core").is_dir():
        pytest.fail("node_modules/puppeteer-core is missing: run `npm ci`")
    made = seed(
        stack,
        ["alice@example.com", "bob@example.com"],
        [{"owner": "alice@example.com", "title": "Firefox", "share": {"bob@example.com": "editor"}}],
    )
    alice, bob = made["users"]["alice@example.com"], made["users"]["bob@example.com"]
    url = f"{stack.base}/n/{made['notebooks'][0]}/"
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    from_firefox, from_chromium = "# typed in Firefox é", "# typed in Chromium ✓"
    cfg = {
        "url": url,
        "cookie": alice["cookie"],
        "type": from_firefox,
        "expect": from_chromium,
        "screenshot": str(SCREENSHOT),
        "executablePath": FIREFOX,
    }
    proc = subprocess.Popen(
        [shutil.which("node") or "node", str(SCRIPT), json.dumps(cfg)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Chromium opens the page while Firefox starts (Firefox takes several seconds to launch)
        page = logged_in_page(browser, stack, bob["cookie"])
        page.goto(url, wait_until="domcontentloaded")
        page.wait_for_function("window.__editor && window.__editor.provider.synced")
        ready = read_line(proc, "READY")
        print(f"\nFirefox {ready['version']}: {ready['timings']} (ms since the script started)")
        page.wait_for_function(
            "(t) => window.__editor.ydoc.getArray('cells').get(0).get('source').toString().includes(t)",
            arg=from_firefox,
        )
        first = page.locator('[data-testid="cell"]').first.locator(".cm-content")
        page.wait_for_function(
            "(t) => document.querySelector('[data-testid=cell] .cm-content')?.textContent.includes(t)",
            arg=from_firefox,
        )
        first.click()
        page.keyboard.press("Control+End")
        page.keyboard.press("Enter")
        page.keyboard.type(from_chromium, delay=10)
        result = read_line(proc, "RESULT")
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"Firefox result: {result['timings']}, {result['userAgent']}")
    assert result["version"].startswith("firefox/")
    assert from_firefox in result["source"]
    assert from_chromium in result["source"]
    assert from_chromium in result["shown"]
    assert result["status"] == "connected"
    assert result["errors"] == []
    chromium_source = page.evaluate("window.__editor.ydoc.getArray('cells').get(0).get('source').toString()")
    assert chromium_source == result["source"]
    assert page.errors == []
    page.context.close()
