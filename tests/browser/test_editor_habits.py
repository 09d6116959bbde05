"""JupyterLab's command-mode habits, driven by the keys a person presses: selecting several cells,
copy / cut / paste (also into another notebook), merge, split, move, interrupt and restart with
confirmation, clearing outputs."""

from __future__ import annotations

import json

import pytest

from tests.support.browser import close
from tests.support.editor import command_mode_on, count, ids, open_page, small_notebook, source
from tests.support.seed import seed

pytestmark = [pytest.mark.browser, pytest.mark.processes]

ALICE = "alice@example.com"
BOB = "bob@example.com"
CAROL = "carol@example.com"  # logs out: her session ends
NOTEBOOKS = ["first", "second", "kernel", "find", "lazy"]


@pytest.fixture(scope="module")
def data(stack, tmp_path_factory):
    path = tmp_path_factory.mktemp("nb") / "small.ipynb"
    nb = small_notebook()
    nb["cells"][20]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "twenty\n"}]
    nb["cells"][21]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "twenty-one\n"}]
    path.write_text(json.dumps(nb))
    notebooks = [{"owner": ALICE, "title": n, "ipynb": str(path)} for n in NOTEBOOKS]
    others = [
        {"owner": who, "title": title, "ipynb": str(path)}
        for who, title in ((BOB, "bobs"), (CAROL, "carols"))
    ]
    made = seed(stack, [ALICE, BOB, CAROL], [*notebooks, *others])
    return {
        "alice": made["users"][ALICE],
        "bob": made["users"][BOB],
        "carol": made["users"][CAROL],
        **dict(zip([*NOTEBOOKS, "bobs", "carols"], made["notebooks"], strict=True)),
    }


def test_copied_cells_are_not_pasted_by_the_next_account_of_the_browser(browser, stack, data):
    """A shared computer: what Carol copied is gone when she logs out, and never reaches the
    notebook of whoever signs in next."""
    page = open_page(browser, stack, data["carol"], data["carols"])
    command_mode_on(page, "b2")
    page.keyboard.press("c")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(lambda url: "/n/" not in url)
    assert page.evaluate("Object.keys(localStorage).filter((k) => k.includes('clipboard'))") == []
    name, value = data["bob"]["cookie"].split("=", 1)
    page.context.add_cookies([{"name": name, "value": value, "url": stack.base}])
    page.goto(f"{stack.base}/n/{data['bobs']}/")
    page.wait_for_function("window.__editor && window.__editor.provider.synced")
    page.wait_for_selector('[data-testid="cell"] .cm-editor')
    before = count(page)
    command_mode_on(page, "b0")
    page.keyboard.press("v")
    page.get_by_text("No cells to paste").wait_for()
    assert count(page) == before
    close(page)


def test_selected_cells_copy_into_another_notebook_cut_and_paste(browser, stack, data):
    page = open_page(browser, stack, data["alice"], data["first"])
    command_mode_on(page, "b2")
    page.keyboard.press("Shift+ArrowDown")
    assert page.locator(".cell.is-selected").count() == 2
    page.keyboard.press("c")
    # the same browser, another notebook: V pastes them below the selected cell, with new ids
    other = page.context.new_page()
    other.errors = []
    other.goto(f"{stack.base}/n/{data['second']}/")
    other.wait_for_function("window.__editor && window.__editor.provider.synced")
    other.wait_for_selector('[data-testid="cell"] .cm-editor')
    command_mode_on(other, "b0")
    before = count(other)
    other.keyboard.press("v")
    other.wait_for_function(f"window.__editor.ydoc.getArray('cells').length === {before + 2}")
    pasted = ids(other)[1:3]
    assert not set(pasted) & {"b2", "b3"}
    assert [source(other, i) for i in pasted] == ["value_2 = 2", "value_3 = 3"]
    # X cuts the selected cell; Shift-V puts it back above the next one
    command_mode_on(other, "b5")
    other.keyboard.press("x")
    other.wait_for_function(f"window.__editor.ydoc.getArray('cells').length === {before + 1}")
    assert "b5" not in ids(other)
    assert other.evaluate("window.__editor.notebook.active.id") == "b6"
    other.keyboard.press("Shift+V")
    other.wait_for_function(f"window.__editor.ydoc.getArray('cells').length === {before + 2}")
    at = ids(other).index("b6")
    assert source(other, ids(other)[at - 1]) == "value_5 = 5"
    close(page, other)


def test_merge_delete_move_and_split_with_keys(browser, stack, data):
    page = open_page(browser, stack, data["alice"], data["first"])
    # three selected cells merge into the first
    command_mode_on(page, "b10")
    page.keyboard.press("Shift+ArrowDown")
    page.keyboard.press("Shift+J")
    n = count(page)
    page.keyboard.press("Shift+M")
    page.wait_for_function(f"window.__editor.ydoc.getArray('cells').length === {n - 2}")
    assert source(page, "b10") == "value_10 = 10\nvalue_11 = 11\nvalue_12 = 12"
    # D, D deletes every selected cell
    command_mode_on(page, "b14")
    page.keyboard.press("Shift+ArrowDown")
    page.keyboard.press("d")
    page.keyboard.press("d")
    page.wait_for_function(f"window.__editor.ydoc.getArray('cells').length === {n - 4}")
    assert "b14" not in ids(page)
    assert "b15" not in ids(page)
    # Ctrl-Shift-Down moves the cell in command mode, Ctrl-Shift-Up in edit mode keeps editing
    command_mode_on(page, "b30")
    page.keyboard.press("Control+Shift+ArrowDown")
    page.wait_for_function(
        "() => { const a = window.__editor.ydoc.getArray('cells').toArray().map((c) => c.get('id'));"
        " return a.indexOf('b30') === a.indexOf('b31') + 1 }"
    )
    page.locator('[data-cell-id="b30"] [data-testid="cell-editor"]').click()
    page.keyboard.press("Control+Shift+ArrowUp")
    page.wait_for_function(
        "() => { const a = window.__editor.ydoc.getArray('cells').toArray().map((c) => c.get('id'));"
        " return a.indexOf('b30') === a.indexOf('b31') - 1 }"
    )
    page.keyboard.type(" # still editing")
    page.wait_for_function(
        "window.__editor.ydoc.getArray('cells').toArray().find((c) => c.get('id') === 'b30')"
        ".get('source').toString() === 'value_30 = 30 # still editing'"
    )
    # Ctrl-Shift-minus splits at the caret; the caret goes to the new cell
    page.locator('[data-cell-id="b33"] [data-testid="cell-editor"]').click()
    page.keyboard.press("Control+Home")
    for _ in range(len("value_33")):
        page.keyboard.press("ArrowRight")
    n = count(page)
    page.keyboard.press("Control+Shift+Minus")
    page.wait_for_function(f"window.__editor.ydoc.getArray('cells').length === {n + 1}")
    new = ids(page)[ids(page).index("b33") + 1]
    assert source(page, "b33") == "value_33"
    assert source(page, new) == " = 33"
    active = page.evaluate("[window.__editor.notebook.active.id, window.__editor.notebook.mode]")
    assert active == [new, "edit"]
    close(page)


def test_interrupt_and_restart_keys_and_clearing_outputs(browser, stack, data):
    page = open_page(browser, stack, data["alice"], data["kernel"])
    page.evaluate(
        "window.__actions = []; const runs = window.__editor.notebook.runs;"
        " runs.kernelAction = async (a) => { window.__actions.push(a); return null }; true"
    )
    command_mode_on(page, "b1")
    page.keyboard.press("i")
    page.keyboard.press("i")
    page.wait_for_function("window.__actions.join() === 'interrupt'")
    dialogs = []

    def answer(dialog):
        dialogs.append(dialog.message)
        if len(dialogs) == 1:
            dialog.dismiss()
        else:
            dialog.accept()

    page.on("dialog", answer)
    page.keyboard.press("0")
    page.keyboard.press("0")  # asked, and refused: nothing restarts
    page.keyboard.press("0")
    page.keyboard.press("0")  # asked again, and accepted
    page.wait_for_function("window.__actions.join() === 'interrupt,restart'")
    assert len(dialogs) == 2
    assert "Restart the kernel?" in dialogs[0]
    # clearing outputs: the selected cell's from the Edit menu, then all of them
    assert page.locator('[data-cell-id="b20"] [data-testid="output"]').count() == 1
    command_mode_on(page, "b20")
    page.locator('[data-testid="edit-menu"] summary').click()
    page.locator('[data-testid="clear-outputs"]').click()
    page.locator('[data-cell-id="b20"] [data-testid="output"]').wait_for(state="detached")
    assert page.locator('[data-cell-id="b21"] [data-testid="output"]').count() == 1
    page.locator('[data-testid="edit-menu"] summary').click()
    page.locator('[data-testid="clear-all-outputs"]').click()
    page.locator('[data-cell-id="b21"] [data-testid="output"]').wait_for(state="detached")
    close(page)


def test_rename_from_the_title_and_reach_the_notebooks_pages(browser, stack, data):
    page = open_page(browser, stack, data["alice"], data["kernel"])
    title = page.locator('[data-testid="notebook-title"]')
    title.click()
    page.locator('[data-testid="title-input"]').press("Control+A")
    page.keyboard.type("Résultats 笔记 ✓", delay=5)  # "a", "d", "m"... are command keys outside the box
    page.keyboard.press("Enter")
    page.wait_for_function("document.title.startsWith('Résultats 笔记 ✓ · ')")
    assert title.inner_text() == "Résultats 笔记 ✓"
    page.reload()
    page.wait_for_function("window.__editor && window.__editor.provider.synced")
    assert page.locator('[data-testid="notebook-title"]').inner_text() == "Résultats 笔记 ✓"
    # typing in the title box is text, not command-mode keys
    assert count(page) == len(small_notebook()["cells"])
    # the owner reaches Activity and kernel settings from the editor
    page.locator('[data-testid="notebook-menu"] summary').click()
    page.locator('[data-testid="open-activity"]').click()
    page.wait_for_url(f"**/n/{data['kernel']}/activity")
    assert "renamed" in page.content()
    page.go_back()
    page.wait_for_function("window.__editor && window.__editor.provider.synced")
    page.locator('[data-testid="notebook-menu"] summary').click()
    page.locator('[data-testid="open-kernel-settings"]').click()
    page.wait_for_url(f"**/n/{data['kernel']}/kernel/settings")
    close(page)


def test_formulas_render_once_the_formula_code_is_fetched(browser, stack, data):
    page = open_page(browser, stack, data["alice"], data["second"])
    # KaTeX is not part of the page until a formula is shown
    assert not page.evaluate("performance.getEntriesByType('resource').some((r) => r.name.includes('katex'))")
    page.evaluate(
        "const m = window.__editor.model; const id = m.insert(0, 'markdown', 'Energy: $E = mc^2$'); true"
    )
    page.locator('[data-testid="markdown-rendered"] .katex').first.wait_for()
    assert page.evaluate("performance.getEntriesByType('resource').some((r) => r.name.includes('katex'))")
    close(page)


def test_the_markdown_code_is_fetched_when_a_notebook_first_needs_it(browser, stack, data):
    page = open_page(browser, stack, data["alice"], data["lazy"])
    fetched = "(part) => performance.getEntriesByType('resource').some((r) => r.name.includes(part))"
    # a notebook of code cells loads neither the renderer, nor the HTML sanitiser, nor the editing mode
    for part in ("markdown-render", "sanitize", "markdown-lang"):
        assert not page.evaluate(fetched, part), part
    page.evaluate("window.__editor.model.insert(0, 'markdown', '## Results\\n\\nSee <b>this</b>.'); true")
    page.locator('[data-testid="markdown-rendered"] h2', has_text="Results").wait_for()
    assert page.locator('[data-testid="markdown-rendered"] b').inner_text() == "this"
    assert page.evaluate(fetched, "markdown-render")
    assert not page.evaluate(fetched, "markdown-lang")
    # editing the source fetches the markdown mode: the heading gets its own style
    page.locator('[data-testid="markdown-rendered"]').first.dblclick()
    heading = page.locator('[data-testid="cell"]').first.locator(".cm-line", has_text="## Results")
    page.wait_for_function(
        "(el) => [...el.querySelectorAll('span')].some((s) => getComputedStyle(s).fontWeight === '700')",
        arg=heading.element_handle(),
    )
    assert page.evaluate(fetched, "markdown-lang")
    close(page)


def test_two_guests_on_one_link_look_different(browser, stack, data):
    token = stack.django(
        "import json\nfrom notebooks import sharing\nfrom notebooks.access import Action, access_notebook,"
        " principal_from_session\nfrom notebooks.models import Notebook, Role\n"
        f"nb = Notebook.objects.get(pk={data['second']!r})\n"
        "access = access_notebook(principal_from_session(nb.owner, None), nb.pk, Action.OWN)\n"
        "link, token = sharing.create_link(access, label='Seminar', role=Role.EDITOR, require_login=False)\n"
        "print(json.dumps({'token': token}))"
    )["token"]
    guests = []
    for _ in range(2):
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda e, page=page: page.errors.append(str(e)))
        page.goto(f"{stack.base}/s/{token}")
        page.wait_for_function("window.__editor && window.__editor.provider.synced")
        guests.append(page)
    a = guests[0]
    a.wait_for_function("document.querySelectorAll('[data-testid=avatar]').length === 2")
    shown = a.evaluate(
        "[...document.querySelectorAll('[data-testid=avatar]')].map((el) =>"
        " [el.title, el.textContent, getComputedStyle(el).getPropertyValue('--avatar-color')])"
    )
    (name1, initials1, colour1), (name2, initials2, colour2) = shown
    assert name1.startswith("Guest ")
    assert "Seminar" in name1
    assert name1 != name2
    assert colour1 != colour2
    assert initials1 == "G" + name1.split()[1][0]  # "Guest Otter (Seminar)" is GO
    assert initials2 == "G" + name2.split()[1][0]
    close(*guests)


def test_guests_whose_ids_share_an_animal_and_a_colour_still_look_different(browser, stack, data):
    # "g:test0" and "g:test17" hash to the same animal, and both carry the same colour: the one
    # later in id order takes the next free animal and colour, in every browser alike.
    page = open_page(browser, stack, data["alice"], data["second"])
    page.evaluate(
        """() => {
        const awareness = window.__editor.connection.awareness
        const user = (id) => ({ user: { id, name: 'Guest via Seminar', color: '#0c8599', role: 'editor' } })
        awareness.states.set(990001, user('g:test17'))
        awareness.states.set(990002, user('g:test0'))
        awareness.emit('change', [{ added: [990001, 990002], updated: [], removed: [] }, 'local'])
        }"""
    )
    page.wait_for_function("document.querySelectorAll('[data-testid=avatar]').length === 3")
    shown = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('[data-testid=avatar]')].map((el) =>"
        " [el.dataset.userId, [el.title, getComputedStyle(el).getPropertyValue('--avatar-color').trim()]]))"
    )
    first, second = shown["g:test0"][0], shown["g:test17"][0]
    assert first == "Guest Yak (via Seminar)"  # its own animal: first in id order
    assert second.startswith("Guest ")
    assert second.endswith("(via Seminar)")
    assert second != first
    assert len({colour for _, colour in shown.values()}) == 3
    close(page)


def test_find_and_replace_across_the_notebook(browser, stack, data):
    page = open_page(browser, stack, data["alice"], data["find"])
    page.locator('[data-cell-id="b1"] [data-testid="cell-editor"]').click()
    page.keyboard.press("Control+F")
    find = page.locator('[data-testid="find-input"]')
    find.wait_for()
    page.keyboard.type("twenty")  # outputs are searched too; "t", "w", "e"... stay in the box
    counter = page.locator('[data-testid="find-count"]')
    page.wait_for_function("document.querySelector('[data-testid=find-count]').textContent === '1 of 2'")
    assert page.evaluate("window.__editor.notebook.active.id") == "b20"
    page.keyboard.press("Enter")
    page.wait_for_function("window.__editor.notebook.active.id === 'b21'")
    # one replacement, then all of them
    find.fill("= 3")
    assert counter.inner_text() == "1 of 11"  # b3 and b30..b39
    page.locator('[data-testid="replace-input"]').fill("= 7")
    page.locator('[data-testid="replace-one"]').click()
    page.wait_for_function("document.querySelector('[data-testid=find-count]').textContent === '1 of 10'")
    assert source(page, "b3") == "value_3 = 7"
    page.locator('[data-testid="replace-all"]').click()
    page.wait_for_function("document.querySelector('[data-testid=find-count]').textContent === 'No matches'")
    assert source(page, "b30") == "value_30 = 70"
    assert source(page, "b39") == "value_39 = 79"
    assert count(page) == len(small_notebook()["cells"])
    page.keyboard.press("Escape")
    page.locator('[data-testid="find-bar"]').wait_for(state="hidden")
    close(page)
