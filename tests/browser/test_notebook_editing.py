"""The editor in Chromium: a 2,000-cell notebook, structure and type changes between two people,
per-user undo, command-mode keys, following someone, and the connection banner when the worker
dies (and comes back on the same port)."""

from __future__ import annotations

import json
import time

import pytest

from config.serving import daphne_args
from tests.support.browser import close, logged_in_page
from tests.support.editor import ids, open_page, small_notebook, source, type_at_end, wait_source
from tests.support.processes import PYTHON, ROOT, wait_for_port
from tests.support.seed import seed

pytestmark = [pytest.mark.browser, pytest.mark.processes]

SCREENSHOTS = ROOT / "var" / "screenshots"
LARGE_CELLS = 2000
ALICE, BOB = "alice@example.com", "bob@example.com"
TESTS_NEEDING_A_NOTEBOOK = ["shared", "reconnect"]


def large_notebook(n: int = LARGE_CELLS) -> dict:
    """Mixed code and markdown cells of about 1 KB each; every tenth code cell has outputs."""
    cells = []
    for i in range(n):
        if i % 3 == 1 and i != n - 1:
            words = " ".join(f"word{(i * 7 + k) % 97}" for k in range(110))
            source = (
                f"## Section {i}\n\nSome *prose* for cell {i}: {words}\n\n- item one\n- item two `code`\n"
            )
            cells.append({"cell_type": "markdown", "id": f"c{i}", "metadata": {}, "source": source})
            continue
        lines = [
            f"value_{i}_{j} = compute({i}, {j}, scale=0.5)  # line {j:02d} of cell {i}" for j in range(16)
        ]
        cell = {
            "cell_type": "code",
            "id": f"c{i}",
            "metadata": {},
            "execution_count": None,
            "outputs": [],
            "source": "\n".join(lines),
        }
        if i % 10 == 0:
            cell["execution_count"] = i
            cell["outputs"] = [
                {
                    "output_type": "stream",
                    "name": "stdout",
                    "text": "".join(f"row {i}.{k}\n" for k in range(4)),
                },
                {
                    "output_type": "execute_result",
                    "execution_count": i,
                    "metadata": {},
                    "data": {"text/plain": f"{i}"},
                },
            ]
        cells.append(cell)
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}


@pytest.fixture(scope="module")
def data(stack, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nb")
    (tmp / "large.ipynb").write_text(json.dumps(large_notebook()))
    (tmp / "small.ipynb").write_text(json.dumps(small_notebook()))
    share = {BOB: "editor"}
    specs = [{"owner": ALICE, "title": "Large", "ipynb": str(tmp / "large.ipynb"), "share": share}]
    small = str(tmp / "small.ipynb")
    specs += [
        {"owner": ALICE, "title": name, "ipynb": small, "share": share} for name in TESTS_NEEDING_A_NOTEBOOK
    ]
    t0 = time.monotonic()
    made = seed(stack, [ALICE, BOB], specs)
    print(f"\nseeding users and notebooks (2,000-cell import included): {time.monotonic() - t0:.1f} s")
    ids = made["notebooks"]
    return {
        "alice": made["users"][ALICE],
        "bob": made["users"][BOB],
        "large": ids[0],
        **dict(zip(TESTS_NEEDING_A_NOTEBOOK, ids[1:], strict=True)),
    }


# ---- a 2,000-cell notebook ------------------------------------------------------------------------


def test_a_2000_cell_notebook_stays_usable(browser, stack, data):
    page = logged_in_page(browser, stack, data["alice"]["cookie"])
    t0 = time.monotonic()
    page.goto(f"{stack.base}/n/{data['large']}/", wait_until="domcontentloaded")
    page.wait_for_selector('[data-testid="cell"] >> visible=true')
    cells_visible = time.monotonic() - t0
    page.wait_for_function("window.__editor && window.__editor.provider.synced", polling=50)
    synced = time.monotonic() - t0
    page.wait_for_selector('[data-testid="cell"] .cm-editor')
    first_editor = time.monotonic() - t0
    in_page = page.evaluate("performance.now()") / 1000
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "large-notebook-top.png"))
    assert page.locator('[data-testid="cell"]').count() == LARGE_CELLS
    editors_at_top = page.locator(".cm-editor").count()

    t1 = time.monotonic()
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    last = page.locator('[data-testid="cell"]').last
    last.locator(".cm-editor").wait_for(state="attached")
    editor_at_end = time.monotonic() - t1
    marker = "  # typed at the very end ✓"
    last.locator(".cm-content").click()
    page.keyboard.press("Control+End")
    page.keyboard.type(marker, delay=10)
    wait_source(page, f"c{LARGE_CELLS - 1}", f"s.endsWith({json.dumps(marker)})")
    typed = time.monotonic() - t1
    page.wait_for_selector('[data-testid="saved"][data-state="saved"]')
    saved = time.monotonic() - t1
    page.screenshot(path=str(SCREENSHOTS / "large-notebook-end.png"))
    editors_at_end = page.locator(".cm-editor").count()
    first_has_editor = page.evaluate(
        "Boolean(document.querySelector('[data-testid=cell]').querySelector('.cm-editor'))"
    )
    rendered_md = page.locator('[data-testid="markdown-rendered"]:not([hidden]) h2').count()
    outputs = page.locator('[data-testid="output"]').count()
    print(
        f"\n2,000 cells, after navigation: first cells visible {cells_visible:.2f} s, synced {synced:.2f} s,"
        f" first editor {first_editor:.2f} s (page clock {in_page:.2f} s); editors at top: {editors_at_top}"
        f".\nAfter scrolling to the end: last editor mounted {editor_at_end:.2f} s, typed text in the Y.Doc"
        f" {typed:.2f} s, saved {saved:.2f} s; editors {editors_at_end}, rendered markdown headings"
        f" {rendered_md}, outputs {outputs}"
    )
    assert synced < 20, f"the page took {synced:.1f} s to sync"
    assert first_editor < 20
    assert editors_at_top < 100, editors_at_top
    assert editors_at_end < 100, editors_at_end
    assert not first_has_editor, "the first cell kept its editor after scrolling to the end"
    assert editor_at_end < 10
    assert typed < 15
    close(page)


# ---- two people on one notebook (pages shared by the tests below; each test uses its own cells) ---


@pytest.fixture(scope="module")
def pair(browser, stack, data):
    a = open_page(browser, stack, data["alice"], data["shared"])
    b = open_page(browser, stack, data["bob"], data["shared"])
    yield a, b
    close(a, b)


def order_of(page, wanted):
    return [i for i in ids(page) if i in wanted]


def test_moving_a_cell_is_seen_by_the_other(pair):
    a, b = pair
    wanted = ["b0", "b1", "b2", "b3"]
    assert order_of(a, wanted) == wanted
    a.locator('[data-cell-id="b0"] [data-testid="move-down"]').click()
    b.wait_for_function(DOM_ORDER, arg=["b1", "b0", "b2", "b3"])
    a.locator('[data-cell-id="b2"] [data-testid="move-up"]').click()
    b.wait_for_function(DOM_ORDER, arg=["b1", "b2", "b0", "b3"])
    assert order_of(b, wanted) == order_of(a, wanted) == ["b1", "b2", "b0", "b3"]
    assert source(b, "b0") == "value_0 = 0"  # a moved cell keeps its source
    # the moved cell still edits the shared text, in both directions
    type_at_end(b, "b0", "  # bob after the move")
    wait_source(a, "b0", "s === 'value_0 = 0  # bob after the move'")
    assert a.errors == b.errors == []


# the first cells of the page, in DOM order, are `ids` (a JS function for wait_for_function)
DOM_ORDER = (
    "(ids) => [...document.querySelectorAll('[data-testid=cell]')].map((e) => e.dataset.cellId)"
    ".filter((id) => ids.includes(id)).join() === ids.join()"
)


def test_changing_the_cell_type_is_seen_by_the_other(pair):
    a, b = pair
    a.locator('[data-cell-id="b6"]').hover()
    a.locator('[data-cell-id="b6"] [data-testid="cell-type"]').select_option("markdown")
    rendered = '[data-cell-id="b6"][data-cell-type="markdown"] [data-testid="markdown-rendered"]'
    # the new view renders its markdown once the page sees it on screen (a frame or two later)
    b.wait_for_function(
        "(sel) => document.querySelector(sel)?.innerText.trim() === 'value_6 = 6'", arg=rendered
    )
    types = b.evaluate("window.__editor.ydoc.getArray('cells').toArray().map((c) => c.get('cell_type'))")
    assert types.count("markdown") == 1
    assert order_of(b, ["b5", "b6", "b7"]) == ["b5", "b6", "b7"]
    assert a.errors == b.errors == []


def test_undo_undoes_only_your_own_change(pair):
    a, b = pair
    a.evaluate("window.__editor.model.undoManager.clear()")  # forget the earlier tests' changes
    type_at_end(a, "b10", "  # alice, to be undone")
    wait_source(b, "b10", "s.endsWith('# alice, to be undone')")
    type_at_end(b, "b11", "  # bob stays")
    wait_source(a, "b11", "s.endsWith('# bob stays')")
    clicks = 0
    while source(a, "b10") != "value_10 = 10" and clicks < 5:
        a.locator('[data-testid="undo"]').click()
        clicks += 1
        assert source(a, "b11") == "value_11 = 11  # bob stays"
    assert source(a, "b10") == "value_10 = 10", f"alice's typing still there after {clicks} undo clicks"
    # nothing of alice's is left to undo: one more click must not touch bob's text
    a.locator('[data-testid="undo"]').click()
    wait_source(b, "b10", "s === 'value_10 = 10'")
    assert source(a, "b11") == source(b, "b11") == "value_11 = 11  # bob stays"
    # redo brings alice's text back, still without touching bob's
    a.locator('[data-testid="redo"]').click()
    wait_source(b, "b10", "s.endsWith('# alice, to be undone')")
    assert source(b, "b11") == "value_11 = 11  # bob stays"
    print(f"\nundo clicks needed for alice's typing: {clicks}")
    assert a.errors == b.errors == []


def test_command_mode_keys(pair):
    a, b = pair
    count = len(ids(a))
    a.locator('[data-cell-id="b20"] [data-testid="cell-editor"]').click()
    a.keyboard.press("Escape")
    a.wait_for_function(
        "window.__editor.notebook.mode === 'command' && !document.activeElement.closest('.cm-editor')"
    )
    a.keyboard.press("b")
    b.wait_for_function(f"window.__editor.ydoc.getArray('cells').length === {count + 1}")
    after = ids(b)
    new_id = after[after.index("b20") + 1]
    assert new_id != "b21"
    assert b.locator(f'[data-cell-id="{new_id}"]').get_attribute("data-cell-type") == "code"
    assert a.evaluate("window.__editor.notebook.active.id") == new_id
    a.keyboard.press("m")
    b.wait_for_selector(f'[data-cell-id="{new_id}"][data-cell-type="markdown"]')
    assert order_of(b, ["b20", new_id, "b21"]) == ["b20", new_id, "b21"]
    a.keyboard.press("d")
    a.keyboard.press("d")
    b.wait_for_function(f"window.__editor.ydoc.getArray('cells').length === {count}")
    assert b.locator(f'[data-cell-id="{new_id}"]').count() == 0
    assert ids(a) == ids(b)
    assert a.errors == b.errors == []


IN_VIEW = (
    "(id) => { const r = document.querySelector(`[data-cell-id='${id}']`).getBoundingClientRect();"
    " return r.top >= 0 && r.bottom <= window.innerHeight }"
)


def test_clicking_an_avatar_follows_that_person(pair, data):
    a, b = pair
    a.evaluate("window.scrollTo(0, 0)")
    b.locator('[data-cell-id="b35"] [data-testid="cell-editor"]').click()
    a.wait_for_selector('[data-cell-id="b35"] [data-testid="cell-presence"]', state="attached")
    assert not a.evaluate(IN_VIEW, "b35")
    a.locator(f'[data-testid="avatar"][data-user-id="u:{data["bob"]["user_id"]}"]').click()
    a.wait_for_selector('[data-testid="follow-indicator"]:has-text("Following Bob")')
    a.wait_for_function(IN_VIEW, arg="b35")
    # bob moves on: alice's view goes with him
    b.locator('[data-cell-id="b3"] [data-testid="cell-editor"]').click()
    a.wait_for_function(IN_VIEW, arg="b3")
    assert a.locator('[data-testid="follow-indicator"]').is_visible()
    a.locator('[data-testid="follow-indicator"]').click()
    a.wait_for_selector('[data-testid="follow-indicator"]', state="hidden")
    assert a.errors == b.errors == []


def test_the_banner_says_reconnecting_when_the_worker_dies(browser, stack, data):
    port = stack.start_worker()  # a worker of its own: the other tests' worker stays up
    base = f"http://127.0.0.1:{port}"
    page = open_page(browser, stack, data["alice"], data["reconnect"], base=base)
    page.wait_for_selector('[data-testid="status"][data-state="connected"]')
    assert page.locator('[data-testid="connection-banner"]').is_hidden()
    stack.kill_worker(port)
    page.wait_for_selector('[data-testid="status"][data-state="reconnecting"]:has-text("Reconnecting")')
    banner = page.locator('[data-testid="connection-banner"]')
    banner.wait_for(state="visible")
    assert "Reconnecting" in banner.inner_text()
    # edits made meanwhile are kept and reported as unsaved
    type_at_end(page, "b0", "  # typed while offline")
    page.wait_for_selector('[data-testid="saved"][data-state="unsaved"]')

    # a new worker on the same port: the page reconnects by itself and saves the edit
    proc = stack._spawn(
        [PYTHON, "-m", "daphne", *daphne_args("127.0.0.1", port)], log=f"daphne-{port}-again.log"
    )
    try:
        wait_for_port(port, proc)
    except (RuntimeError, TimeoutError) as exc:
        print(f"\nno new worker on port {port} ({exc}): recovery not checked")
        page.context.close()
        return
    stack.workers[port] = proc
    page.wait_for_selector('[data-testid="status"][data-state="connected"]')
    banner.wait_for(state="hidden")
    page.wait_for_selector('[data-testid="saved"][data-state="saved"]')
    # the edit reached the database: a fresh page on the other worker loads it
    other = open_page(browser, stack, data["bob"], data["reconnect"])
    assert source(other, "b0") == "value_0 = 0  # typed while offline"
    close(page, other)
    stack.kill_worker(port)
