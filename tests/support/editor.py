"""The notebook editor in a logged-in page: open it, read its Y.Doc, type into cells, and a
small notebook of code cells to seed."""

from __future__ import annotations

from tests.support.browser import logged_in_page

SMALL_CELLS = 40


def open_page(browser, stack, who, notebook_id, base=None, **size):
    page = logged_in_page(browser, stack, who["cookie"], **size)
    page.goto(f"{base or stack.base}/n/{notebook_id}/", wait_until="domcontentloaded")
    page.wait_for_function("window.__editor && window.__editor.provider.synced")
    page.wait_for_selector('[data-testid="cell"] .cm-editor')
    return page


def ids(page, n=None):
    return page.evaluate("window.__editor.ydoc.getArray('cells').toArray().map((c) => c.get('id'))")[:n]


# the Y.Map of the cell with id `id` in the page's Y.Doc (JS)
FIND = "window.__editor.ydoc.getArray('cells').toArray().find((c) => c.get('id') === id)"


def source(page, cell_id):
    return page.evaluate(f"(id) => {FIND}?.get('source').toString()", cell_id)


def wait_source(page, cell_id, predicate_js):
    """Waits until `predicate_js` (a JS expression over `s`, the cell's source) holds."""
    page.wait_for_function(
        f"(id) => {{ const c = {FIND}; const s = c ? c.get('source').toString() : null;"
        f" return s !== null && ({predicate_js}) }}",
        arg=cell_id,
    )


def type_at_end(page, cell_id, text):
    page.locator(f'[data-cell-id="{cell_id}"] [data-testid="cell-editor"]').click()
    page.keyboard.press("Control+End")
    page.keyboard.type(text, delay=10)


def count(page) -> int:
    return page.evaluate("window.__editor.ydoc.getArray('cells').length")


def command_mode_on(page, cell_id):
    page.locator(f'[data-cell-id="{cell_id}"] [data-testid="cell-editor"]').click()
    page.keyboard.press("Escape")
    page.wait_for_function(
        "window.__editor.notebook.mode === 'command' && !document.activeElement.closest('.cm-editor')"
    )


def small_notebook() -> dict:
    cells = [
        {
            "cell_type": "code",
            "id": f"b{i}",
            "metadata": {},
            "execution_count": None,
            "outputs": [],
            "source": f"value_{i} = {i}",
        }
        for i in range(SMALL_CELLS)
    ]
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}
