"""Alice runs a cell with Shift-Enter in Chromium; Bob, a viewer in another browser, sees the output.
A real daphne worker whose kernels run on a real Jupyter Server started for this module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kernels.local_server import LocalJupyterServer
from tests.support.browser import (
    browser,  # noqa: F401 (the fixture)
    logged_in_page,
)
from tests.support.kernel_http import write_code_notebook
from tests.support.processes import Stack

pytestmark = [pytest.mark.browser, pytest.mark.processes]


@pytest.fixture(scope="module")
def stack(jupyter_server: LocalJupyterServer) -> Iterator[Stack]:
    stack = Stack(
        redis=False, JUPYTER_SERVER_URL=jupyter_server.url, JUPYTER_SERVER_TOKEN=jupyter_server.token
    )
    try:
        stack.port = stack.start_worker()
        stack.base = f"http://127.0.0.1:{stack.port}"
        yield stack
    finally:
        stack.close()


def open_editor(browser, stack, who: dict, url: str):  # noqa: F811
    page = logged_in_page(browser, stack, who["cookie"])
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector('[data-testid="cell"]')
    page.wait_for_function("window.__editor && window.__editor.provider.synced")
    return page


def test_a_run_by_alice_shows_up_in_bobs_browser(browser, stack):  # noqa: F811
    alice = stack.user_with_notebook("alice@example.com", title="Kernel demo")
    bob = stack.django(
        "import json\nfrom tests.support.processes import make_user_and_notebook\n"
        "print(json.dumps(make_user_and_notebook('bob@example.com', 'null')))"
    )
    stack.call("share_with", alice["notebook_id"], "bob@example.com", "viewer")
    url = f"{stack.base}/n/{alice['notebook_id']}/"
    a = open_editor(browser, stack, alice, url)
    b = open_editor(browser, stack, bob, url)

    editor = a.locator('[data-testid="cell"]').first.locator('[data-testid="cell-editor"]')
    editor.click()
    a.keyboard.type('print("hello from A")')
    a.keyboard.press("Shift+Enter")

    b.wait_for_selector('[data-testid="output"]:has-text("hello from A")', timeout=30_000)
    a.wait_for_selector('[data-testid="output"]:has-text("hello from A")', timeout=10_000)
    b.wait_for_function(
        "document.querySelector('[data-testid=kernel-status]')?.textContent.toLowerCase().includes('idle')",
        timeout=10_000,
    )
    assert a.errors == []
    assert b.errors == []
    a.context.close()
    b.context.close()


def test_input_is_asked_of_the_person_who_ran_the_cell(browser, stack):  # noqa: F811
    alice = stack.user_with_notebook("alice2@example.com", title="Input demo")
    bob = stack.django(
        "import json\nfrom tests.support.processes import make_user_and_notebook\n"
        "print(json.dumps(make_user_and_notebook('bob2@example.com', 'null')))"
    )
    stack.call("share_with", alice["notebook_id"], "bob2@example.com", "runner")
    url = f"{stack.base}/n/{alice['notebook_id']}/"
    a = open_editor(browser, stack, alice, url)
    b = open_editor(browser, stack, bob, url)
    a.locator('[data-testid="cell"]').first.locator('[data-testid="cell-editor"]').click()
    a.keyboard.type('print("hi", input("Name? "))')
    a.keyboard.press("Shift+Enter")

    a.wait_for_selector('[data-testid="kernel-input"]:has-text("Name?")', timeout=30_000)
    b.wait_for_function("window.__editor && true")  # Bob is connected but is not asked
    assert b.locator('[data-testid="kernel-input"]').count() == 0
    # the box sits under the cell that asks (not floating over the next one), with the keyboard
    first = a.locator('[data-testid="cell"]').first
    assert first.locator('[data-testid="kernel-input"]').count() == 1
    assert a.evaluate("document.activeElement.dataset.testid") == "kernel-input-field"
    a.keyboard.type("Ada")
    a.keyboard.press("Enter")
    b.wait_for_selector('[data-testid="output"]:has-text("hi Ada")', timeout=30_000)
    a.wait_for_selector('[data-testid="kernel-input"]', state="detached", timeout=10_000)
    # after Send the keyboard is with the cell again (command mode), not with the page's body
    cell_id = first.get_attribute("data-cell-id")
    a.wait_for_function(
        "(id) => document.activeElement !== document.body"
        " && document.activeElement.closest('[data-testid=cell]')?.dataset.cellId === id",
        arg=cell_id,
        timeout=10_000,
    )
    assert a.errors == []
    assert b.errors == []
    a.context.close()
    b.context.close()


def test_run_menu_runs_above_below_and_restarts_then_runs_all(browser, stack, tmp_path):  # noqa: F811
    cells = {"c1": "print('one')", "c2": "print('two')", "c3": "print('three')"}
    path = write_code_notebook(tmp_path / "menu.ipynb", cells)
    alice = stack.user_with_notebook("alice3@example.com", title="Menu demo", ipynb=str(path))
    a = open_editor(browser, stack, alice, f"{stack.base}/n/{alice['notebook_id']}/")
    a.on("dialog", lambda dialog: dialog.accept())

    def choose(item: str) -> None:
        a.locator('[data-testid="run-menu"] summary').click()
        a.locator(f'[data-testid="{item}"]').click()

    def prompt(cid: str) -> str:
        return a.locator(f'[data-cell-id="{cid}"] .cell-prompt').inner_text().strip()

    def wait_prompt(cid: str, text: str) -> None:
        a.wait_for_function(
            '([cid, text]) => document.querySelector(`[data-cell-id="${cid}"] .cell-prompt`)'
            "?.textContent.trim() === text",
            arg=[cid, text],
            timeout=30_000,
        )

    a.locator('[data-cell-id="c2"] [data-testid="cell-editor"]').click()
    choose("run-below")
    wait_prompt("c3", "[2]:")
    assert (prompt("c1"), prompt("c2")) == ("[ ]:", "[1]:")
    assert a.locator('[data-cell-id="c1"] [data-testid="output"]').count() == 0

    a.locator('[data-cell-id="c3"] [data-testid="cell-editor"]').click()
    choose("run-above")
    wait_prompt("c2", "[4]:")
    assert prompt("c1") == "[3]:"
    assert a.locator('[data-cell-id="c1"] [data-testid="output"]').inner_text().strip() == "one"

    choose("restart-run-all")  # counts start again at 1 in a fresh kernel
    wait_prompt("c3", "[3]:")
    assert (prompt("c1"), prompt("c2")) == ("[1]:", "[2]:")

    choose("kernel-shutdown")
    a.wait_for_function(
        "document.querySelector('[data-testid=kernel-status]')?.textContent.includes('not started')",
        timeout=10_000,
    )
    assert a.errors == []
    a.context.close()


def test_tab_completes_and_shift_tab_shows_help_from_the_kernel(browser, stack):  # noqa: F811
    alice = stack.user_with_notebook("alice4@example.com", title="Completion demo")
    bob = stack.django(
        "import json\nfrom tests.support.processes import make_user_and_notebook\n"
        "print(json.dumps(make_user_and_notebook('bob4@example.com', 'null')))"
    )
    stack.call("share_with", alice["notebook_id"], "bob4@example.com", "editor")
    url = f"{stack.base}/n/{alice['notebook_id']}/"
    a = open_editor(browser, stack, alice, url)
    a.locator('[data-testid="cell"]').first.locator('[data-testid="cell-editor"]').click()
    a.keyboard.type("alpha_value = 1")
    a.keyboard.press("Shift+Enter")  # starts the kernel; the next cell gets the keyboard
    a.wait_for_selector('[data-testid="kernel-status"][data-state="idle"]', timeout=30_000)
    a.wait_for_function("window.__editor.ydoc.getArray('cells').length === 2")
    second = a.locator('[data-testid="cell"]').nth(1)
    a.keyboard.type("π = 3; alpha_v")  # a non-ASCII character before: positions are code points
    a.keyboard.press("Tab")
    a.wait_for_selector('.cm-tooltip-autocomplete li:has-text("alpha_value")', timeout=30_000)
    # CodeMirror lets Enter through for its interactionDelay (75 ms) after a list opens, so that
    # a fast typist's Enter is not taken as a choice; a test is faster than any typist.
    a.wait_for_timeout(300)
    a.keyboard.press("Enter")
    a.wait_for_function(
        "window.__editor.ydoc.getArray('cells').get(1).get('source').toString() === 'π = 3; alpha_value'"
    )
    a.keyboard.type("\nlen")
    a.keyboard.press("Shift+Tab")
    tip = a.locator('[data-testid="inspect-tooltip"]')
    tip.wait_for(timeout=15_000)
    assert "Return the number of items" in tip.inner_text()
    a.keyboard.press("Escape")
    tip.wait_for(state="detached")
    assert a.evaluate("window.__editor.notebook.mode") == "edit"  # Escape closed the help only
    assert "alpha_value" in second.inner_text()

    # Bob may edit but not run: Tab indents, and nothing is asked of the kernel
    b = open_editor(browser, stack, bob, url)
    b.evaluate(
        "window.__asked = []; const c = window.__editor.connection; const send = c.command.bind(c);"
        " c.command = (op, args) => { window.__asked.push(op); return send(op, args) }; true"
    )
    b.locator('[data-testid="cell"]').nth(1).locator(".cm-content").click()
    b.keyboard.press("Control+End")
    b.keyboard.press("Enter")
    b.keyboard.type("alpha_v")
    b.keyboard.press("Tab")
    b.wait_for_function(  # Tab indents the line
        "window.__editor.ydoc.getArray('cells').get(1).get('source').toString().endsWith('\\n    alpha_v')"
    )
    assert b.evaluate("window.__asked") == []
    assert b.locator(".cm-tooltip-autocomplete").count() == 0
    assert a.errors == []
    assert b.errors == []
    a.context.close()
    b.context.close()
