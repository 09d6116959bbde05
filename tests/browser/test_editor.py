"""Two people in two browser contexts editing one notebook."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.browser import logged_in_page
from tests.support.waiting import eventually

pytestmark = [pytest.mark.browser, pytest.mark.processes]

XSS_NOTEBOOK = {
    "nbformat": 4,
    "nbformat_minor": 5,
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    "cells": [
        {
            "cell_type": "code",
            "id": "first",
            "metadata": {},
            "execution_count": None,
            "outputs": [],
            "source": "x = 1",
        },
        {
            "cell_type": "markdown",
            "id": "md",
            "metadata": {},
            "source": "# Title\n<img src=x onerror=\"window.__xss='markdown'\">"
            "<script>window.__xss='md-script'</script>[link](javascript:window.__xss='href')",
        },
        {
            "cell_type": "code",
            "id": "html",
            "metadata": {},
            "execution_count": 3,
            "source": "show()",
            "outputs": [
                {
                    "output_type": "display_data",
                    "metadata": {},
                    "data": {
                        "text/html": "<b>bold</b><img src=x onerror=\"window.__xss='html'\">"
                        "<script>window.__xss='html-script'</script>",
                        "text/plain": "<HTML>",
                    },
                },
                {"output_type": "stream", "name": "stdout", "text": "hello 😀\n"},
            ],
        },
    ],
}


@pytest.fixture(scope="module")
def shared(stack, tmp_path_factory):
    path = tmp_path_factory.mktemp("nb") / "xss.ipynb"
    path.write_text(json.dumps(XSS_NOTEBOOK))
    alice = stack.user_with_notebook("alice@example.com", title="Shared analysis", ipynb=str(path))
    bob = stack.django(
        "import json\nfrom tests.support.processes import make_user_and_notebook\n"
        "print(json.dumps(make_user_and_notebook('bob@example.com', 'null')))"
    )
    stack.call("share_with", alice["notebook_id"], "bob@example.com", "editor")
    return {"alice": alice, "bob": bob, "url": f"{stack.base}/n/{alice['notebook_id']}/"}


def open_editor(browser, stack, who, url, **size):
    page = logged_in_page(browser, stack, who["cookie"], **size)
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector('[data-testid="cell"]')
    page.wait_for_function("window.__editor && window.__editor.provider.synced")
    return page


def first_editor(page):
    page.locator('[data-testid="cell"]').first.locator(".cm-content").click()
    return page.locator('[data-testid="cell"]').first.locator(".cm-content")


def cell_text(page, index=0):
    return page.evaluate(f"window.__editor.ydoc.getArray('cells').get({index}).get('source').toString()")


def test_two_people_type_into_one_cell_and_converge(browser, stack, shared):
    a = open_editor(browser, stack, shared["alice"], shared["url"])
    b = open_editor(browser, stack, shared["bob"], shared["url"])
    first_editor(a)
    first_editor(b)
    a.keyboard.press("End")
    b.keyboard.press("End")
    a.keyboard.type(" + 1 # alice ✓", delay=15)
    b.keyboard.type(" # bob 😀", delay=15)
    eventually(lambda: cell_text(a) == cell_text(b), timeout=10, what="both cells to hold the same text")
    assert "alice ✓" in cell_text(a)
    assert "bob 😀" in cell_text(a)
    # the other person's cursor is labelled with their name
    a.wait_for_selector(".cm-ySelectionInfo:has-text('Bob')", state="attached", timeout=5000)
    # saved indicator
    a.wait_for_selector('[data-testid="saved"]:has-text("All changes saved")', timeout=5000)
    # structure changes reach the other side
    count = b.locator('[data-testid="cell"]').count()
    a.locator('[data-testid="cell"]').first.click()
    a.locator('[data-testid="add-cell-below"]').first.click()
    b.wait_for_function(f"document.querySelectorAll('[data-testid=cell]').length === {count + 1}")
    a.locator('[data-testid="cell"]').nth(1).locator('[data-testid="delete-cell"]').click()
    b.wait_for_function(f"document.querySelectorAll('[data-testid=cell]').length === {count}")
    # reload shows the same notebook
    before = cell_text(a)
    a.reload()
    a.wait_for_function("window.__editor && window.__editor.provider.synced")
    assert cell_text(a) == before
    Path("var/screenshots").mkdir(parents=True, exist_ok=True)
    a.screenshot(path="var/screenshots/editor-desktop.png", full_page=True)
    assert not a.evaluate("window.__xss || null")
    assert not b.evaluate("window.__xss || null")
    a.context.close()
    b.context.close()


def test_untrusted_markdown_and_html_outputs_do_not_run_script(browser, stack, shared):
    page = open_editor(browser, stack, shared["alice"], shared["url"])
    page.wait_for_selector('[data-testid="output"] b:has-text("bold")', timeout=5000)
    page.wait_for_selector("h1:has-text('Title')", timeout=5000)
    for anchor in page.locator("a:has-text('link')").all():  # markdown-it drops javascript: links
        anchor.click()
    time.sleep(0.5)  # deliberately: time for a script that wrongly ran to set window.__xss
    assert page.evaluate("window.__xss || null") is None
    assert page.locator('[data-testid="output"]:has-text("hello 😀")').count() == 1
    page.context.close()


def test_the_page_works_on_a_narrow_screen(browser, stack, shared):
    page = open_editor(browser, stack, shared["bob"], shared["url"], width=390, height=844)
    page.screenshot(path="var/screenshots/editor-narrow.png", full_page=False)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400
    assert page.errors == []
    page.context.close()


def test_on_a_narrow_screen_the_cell_toolbar_leaves_the_first_line_visible(browser, stack, shared):
    """At 390 px the active cell's toolbar floated over the end of its first line of code: it sits
    in the row above the editor instead."""
    page = open_editor(browser, stack, shared["bob"], shared["url"], width=390, height=844)
    page.locator(".cell .cm-content").first.click()
    toolbar = page.locator(".cell.is-active .cell-toolbar")
    toolbar.wait_for(state="visible")
    first_line = page.locator(".cell.is-active .cm-line").first.bounding_box()
    box = toolbar.bounding_box()
    assert box["y"] + box["height"] <= first_line["y"], (box, first_line)
    page.context.close()


def test_on_a_narrow_screen_the_notebook_list_keeps_each_word_of_a_title_whole(browser, stack):
    """At 390 px the list squeezed the title column until "Demo notebook" broke inside its second
    word ("noteboo" / "k"): each word of a title now stays on one line."""
    dana = stack.user_with_notebook("dana@example.com", title="Demo notebook")
    page = logged_in_page(browser, stack, dana["cookie"], width=390, height=844)
    page.goto(f"{stack.base}/notebooks/", wait_until="domcontentloaded")
    split = page.evaluate(
        """() => {
          const text = document.querySelector('[data-testid="notebook-row"] td.title a').firstChild;
          const split = [];
          for (const match of text.data.matchAll(/\\S+/g)) {
            const range = document.createRange();
            range.setStart(text, match.index);
            range.setEnd(text, match.index + match[0].length);
            if (range.getClientRects().length > 1) split.push(match[0]);
          }
          return split;
        }"""
    )
    assert split == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    page.context.close()


def test_the_socket_opened_before_the_editor_ran_is_the_one_it_edits_through(browser, stack, shared):
    """The page's first script opens the notebook's socket while editor.js loads; the editor
    adopts it (one socket, not two), edits go through it, and when it closes the editor
    reconnects on a socket of its own and syncs again."""
    page = logged_in_page(browser, stack, shared["alice"]["cookie"])
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.goto(shared["url"], wait_until="domcontentloaded")
    page.wait_for_function("window.__editor && window.__editor.provider.synced")
    assert page.evaluate("performance.getEntriesByName('nb:preconnect').length") == 1
    assert page.evaluate("window.__nbEarlySocket") is False  # taken; a late copy opens nothing
    assert len(sockets) == 1
    assert page.evaluate("window.__editor.provider.ws instanceof WebSocket") is False  # the adopted one
    other = open_editor(browser, stack, shared["bob"], shared["url"])
    page.evaluate("window.__editor.ydoc.getArray('cells').get(0).get('source').insert(0, '# early\\n')")
    eventually(lambda: cell_text(other).startswith("# early\n"), timeout=10, what="the edit to reach Bob")
    page.evaluate("window.__editor.provider.ws.close()")
    page.wait_for_function(
        "window.__editor.provider.synced && window.__editor.provider.ws instanceof WebSocket", timeout=20_000
    )
    assert len(sockets) == 2
    other.evaluate("window.__editor.ydoc.getArray('cells').get(0).get('source').insert(0, '# later\\n')")
    eventually(lambda: cell_text(page).startswith("# later\n# early\n"), timeout=10, what="Bob's edit")
    page.evaluate("window.__editor.ydoc.getArray('cells').get(0).get('source').delete(0, 15)")
    eventually(lambda: cell_text(other) == cell_text(page), timeout=10, what="both to converge")
    assert page.errors == []
    assert other.errors == []
    page.context.close()
    other.context.close()
