"""Editor start-up in headless Chromium: a 50-cell notebook, cache cold and warm.

    .venv/bin/python bench/editor_load.py [--runs 5]

Starts one daphne worker on a free port of 127.0.0.1 with a fresh SQLite database (the test
suite's `Stack`), imports a 50-cell notebook (every fifth cell with a small output, a few
markdown cells with a formula), then opens the editor `--runs` times in a new browser context
(cold: empty HTTP cache) and `--runs` times again in that context (warm). "Ready" is the
moment the page has the document synced and the first cell's CodeMirror editor mounted,
measured by the page's own clock from navigation start. Bytes are what crossed the network
(encoded sizes, headers included) as Chromium's DevTools protocol reports them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.support.processes import Stack  # noqa: E402
from tests.support.seed import seed  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
VERBOSE = "--verbose" in sys.argv
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Checked in the page every 10 ms; the page notes the moment itself (asking for the time after
# the wait returns would add the browser round trip to every figure).
READY = (
    "window.__editor && window.__editor.provider.synced"
    " && document.querySelector('[data-testid=cell] .cm-editor')"
    " && (window.__readyAt = window.__readyAt || performance.now())"
)


def notebook(cells: int = 50) -> dict:
    out = []
    for i in range(cells):
        if i % 10 == 3:
            source = f"## Part {i}\n\nThe model is $y = a x^2 + b$ for part {i}; see the table below.\n"
            out.append({"cell_type": "markdown", "id": f"m{i}", "metadata": {}, "source": source})
            continue
        code = "\n".join(f"x_{i}_{j} = compute({i}, {j})  # step {j}" for j in range(8))
        cell = {
            "cell_type": "code",
            "id": f"c{i}",
            "metadata": {},
            "execution_count": None,
            "outputs": [],
            "source": code,
        }
        if i % 5 == 0:
            cell["execution_count"] = i
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": f"done {i}\n"}]
        out.append(cell)
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": out}


def open_once(page, url: str) -> tuple[float, int, int]:
    """(ms to ready by the page's clock, bytes over the network, requests)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    seen = {"bytes": 0, "requests": 0}
    urls = {}

    def finished(params):
        seen["bytes"] += int(params.get("encodedDataLength", 0))
        seen["requests"] += 1
        if VERBOSE:
            print(f"  {int(params.get('encodedDataLength', 0)):>9,} {urls.get(params['requestId'], '?')}")

    cdp.on("Network.requestWillBeSent", lambda p: urls.__setitem__(p["requestId"], p["request"]["url"]))
    cdp.on("Network.loadingFinished", finished)
    page.goto(url, wait_until="commit")
    page.wait_for_function(READY, polling=10)
    ready = page.evaluate("window.__readyAt")
    if VERBOSE:
        marks = page.evaluate(
            "Object.fromEntries(performance.getEntriesByType('mark')"
            ".map((m) => [m.name, Math.round(m.startTime)]))"
        )
        nav = page.evaluate("performance.getEntriesByType('navigation')[0].toJSON()")
        print(
            f"  html {nav['responseEnd']:.0f} ms, DOMContentLoaded {nav['domContentLoadedEventEnd']:.0f} ms,"
            f" marks {marks}, ready {ready:.0f} ms"
        )
    page.wait_for_load_state("load")
    cdp.detach()
    return ready, seen["bytes"], seen["requests"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--verbose", action="store_true", help="print every response's size")
    parser.add_argument("--no-collect", action="store_true", help="serve static files as a checkout does")
    args = parser.parse_args()
    static_root = tempfile.mkdtemp(prefix="bench-static-")
    stack = Stack(redis=False, STATIC_ROOT=static_root)
    try:
        if not args.no_collect:  # as the `serve` command does: hashed, gzip-compressed names
            stack.manage("collectstatic", "--noinput", "-v", "0")
        port = stack.start_worker()
        base = f"http://127.0.0.1:{port}"
        path = Path(tempfile.mkdtemp()) / "fifty.ipynb"
        path.write_text(json.dumps(notebook()))
        made = seed(
            stack,
            ["alice@example.com"],
            [{"owner": "alice@example.com", "title": "Fifty", "ipynb": str(path)}],
        )
        url = f"{base}/n/{made['notebooks'][0]}/"
        name, value = made["users"]["alice@example.com"]["cookie"].split("=", 1)
        cold, warm = [], []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            for _ in range(args.runs):
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                context.add_cookies([{"name": name, "value": value, "url": base}])
                page = context.new_page()
                cold.append(open_once(page, url))
                for _ in range(1):
                    warm.append(open_once(page, url))
                context.close()
            browser.close()
        print(f"{'':6} {'ready ms (median, min-max)':>28} {'bytes (median)':>16} {'requests':>9}")
        for label, rows in (("cold", cold), ("warm", warm)):
            ms = [r[0] for r in rows]
            size = statistics.median(r[1] for r in rows)
            requests = statistics.median(r[2] for r in rows)
            spread = f"({min(ms):.0f}-{max(ms):.0f})"
            print(f"{label:6} {statistics.median(ms):10.0f} {spread:<17} {size:16,.0f} {requests:9.0f}")
    finally:
        stack.close()


if __name__ == "__main__":
    main()
