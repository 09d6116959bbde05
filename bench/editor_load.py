"""Editor start-up in headless Chromium: a 50-cell notebook, cache cold and warm, next to
JupyterLab's own first load of the same notebook in the same run.

    .venv/bin/python bench/editor_load.py [--runs 5] [--verbose] [--no-collect] [--no-lab]

JupyterLab runs from its own virtualenv, `.venv-lab` at the top of the checkout (made once with
`python3 -m venv .venv-lab && .venv-lab/bin/pip install jupyterlab ipykernel`); without it
that half is skipped with a note.

Starts one daphne worker on a free port of 127.0.0.1 with a fresh SQLite database (the test
suite's `Stack`), imports a 50-cell notebook (every fifth cell with a small output, a few
markdown cells with a formula), then opens the editor `--runs` times in a new browser context
(cold: empty HTTP cache), each followed by two more visits in that context: warm (the second
visit, on which Chromium's V8 also makes its code cache of the scripts) and "warm, 3rd" (that
code cache in use, as on every later visit). "Ready" is the
first animation frame after the page has the document synced and the first cell's CodeMirror
editor mounted, by the page's own clock from navigation start. Bytes are what crossed the network
(encoded sizes, headers included) as Chromium's DevTools protocol reports them.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.support.processes import Stack, free_port, wait_for_port  # noqa: E402
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


# Ready = the first animation frame after the first cell's CodeMirror editor is in the page
# (and, for this editor, the document synced): a MutationObserver installed before any of the
# page's scripts notes the moment by the page's own clock, so neither polling nor the browser
# round trip adds to the figure, and both editors are timed the same way.
def ready_script(selector: str, condition: str = "true") -> str:
    return f"""(() => {{
      const seen = () => {{
        if (window.__mountedAt || !document.querySelector({selector!r}) || !({condition})) return
        window.__mountedAt = performance.now()
        requestAnimationFrame(() => {{ window.__readyAt = performance.now() }})
      }}
      new MutationObserver(seen).observe(document, {{ subtree: true, childList: true }})
    }})()"""


READY = ready_script("[data-testid=cell] .cm-editor", "window.__editor && window.__editor.provider.synced")
LAB_READY = ready_script(".jp-NotebookPanel .jp-Cell .cm-editor")
LAB_VENV = ROOT / ".venv-lab"


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
    page.wait_for_function("window.__readyAt", timeout=120_000)
    ready = page.evaluate("window.__readyAt")
    if VERBOSE:
        marks = page.evaluate(
            "Object.fromEntries(performance.getEntriesByType('mark')"
            ".map((m) => [m.name, Math.round(m.startTime)]))"
        )
        nav = page.evaluate("performance.getEntriesByType('navigation')[0].toJSON()")
        print(
            f"  html {nav['responseEnd']:.0f} ms, DOMContentLoaded {nav['domContentLoadedEventEnd']:.0f} ms,"
            f" marks {marks}, mounted {page.evaluate('window.__mountedAt'):.0f} ms, ready {ready:.0f} ms"
        )
    page.wait_for_load_state("load")
    cdp.detach()
    return ready, seen["bytes"], seen["requests"]


def measure(browser, url: str, runs: int, cookies=(), ready: str = READY) -> tuple[list, list, list]:
    """`runs` cold opens (each in a new browser context), each followed by two warm opens: the
    second visit (HTTP cache warm; Chromium's V8 makes its code cache of the scripts now, the
    second time it sees them) and the third (the code cache in use, as on every later visit)."""
    cold, warm, again = [], [], []
    for _ in range(runs):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        if cookies:
            context.add_cookies(list(cookies))
        context.add_init_script(script=ready)
        page = context.new_page()
        cold.append(open_once(page, url))
        warm.append(open_once(page, url))
        again.append(open_once(page, url))
        context.close()
    return cold, warm, again


def start_lab(notebook_path: Path) -> tuple[subprocess.Popen, str, Path]:
    """`jupyter lab` on a free loopback port, serving the notebook's folder, with its own
    config, data, runtime and settings folders (nothing of the user's is read or written)."""
    home = Path(tempfile.mkdtemp(prefix="bench-lab-"))
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "PATH": f"{LAB_VENV / 'bin'}:{os.environ['PATH']}",
    }
    proc = subprocess.Popen(
        [str(LAB_VENV / "bin" / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={notebook_path.parent}",
         "--ServerApp.port_retries=0", "--allow-root", "--LabApp.extension_manager=readonly",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class="
         "jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=subprocess.DEVNULL, stderr=(home / "lab.log").open("w"), start_new_session=True,
    )  # fmt: skip
    wait_for_port(port, proc, timeout=120)
    return proc, f"http://127.0.0.1:{port}/lab/tree/{notebook_path.name}?token={token}", home


def stop_lab(proc: subprocess.Popen, home: Path) -> None:
    os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and the kernels it started
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    shutil.rmtree(home, ignore_errors=True)


def report(label: str, rows: list) -> None:
    ms = [r[0] for r in rows]
    size = statistics.median(r[1] for r in rows)
    requests = statistics.median(r[2] for r in rows)
    spread = f"({min(ms):.0f}-{max(ms):.0f})"
    print(f"{label:21} {statistics.median(ms):5.0f} {spread:<17} {size:16,.0f} {requests:9.0f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--verbose", action="store_true", help="print every response's size")
    parser.add_argument("--no-collect", action="store_true", help="serve static files as a checkout does")
    parser.add_argument("--no-lab", action="store_true", help="skip JupyterLab")
    args = parser.parse_args()
    static_root = tempfile.mkdtemp(prefix="bench-static-")
    stack = Stack(redis=False, STATIC_ROOT=static_root)
    lab = None
    results = {}
    try:
        if not args.no_collect:  # as the `serve` command does: hashed, brotli/gzip-compressed names
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
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            print(f"load average before: {Path('/proc/loadavg').read_text().split()[:3]}")
            cookie = {"name": name, "value": value, "url": base}
            results["this editor"] = measure(browser, url, args.runs, [cookie])
            if args.no_lab:
                pass
            elif not (LAB_VENV / "bin" / "jupyter").exists():
                print(f"JupyterLab skipped: no {LAB_VENV} (see this script's docstring)")
            else:
                lab = start_lab(path)
                lab_url = lab[1]
                warmup = browser.new_context()  # the server builds its settings once; not timed
                warmup.new_page().goto(lab_url, wait_until="load")
                warmup.close()
                results["JupyterLab"] = measure(browser, lab_url, args.runs, ready=LAB_READY)
            print(f"load average after: {Path('/proc/loadavg').read_text().split()[:3]}")
            browser.close()
        print(f"{'':16} {'ready ms (median, min-max)':>28} {'bytes (median)':>16} {'requests':>9}")
        for label, (cold, warm, again) in results.items():
            report(f"{label}: cold", cold)
            report(f"{label}: warm", warm)
            report(f"{label}: warm, 3rd", again)
    finally:
        if lab:
            stop_lab(lab[0], lab[2])
        stack.close()


if __name__ == "__main__":
    main()
