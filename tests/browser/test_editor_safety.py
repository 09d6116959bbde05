"""No keystroke or edit lost: a remote deletion of the cell being typed in, a stalled connection,
closing a tab with unsaved edits, Shift-modified command keys, long outputs, and a person who may
edit but not run pressing Shift-Enter."""

from __future__ import annotations

import json

import pytest

from tests.support.browser import close
from tests.support.editor import (
    FIND,
    command_mode_on,
    count,
    ids,
    open_page,
    small_notebook,
    source,
    type_at_end,
    wait_source,
)
from tests.support.processes import Stack
from tests.support.seed import seed
from tests.support.waiting import eventually

# the notebook's unsaved edits are indexed in this browser (for the page's person)
KEPT = "Object.keys(localStorage).some((k) => k.startsWith('nb-unsaved:' + id + ':'))"

pytestmark = [pytest.mark.browser, pytest.mark.processes]

ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
NOTEBOOKS = [
    "delete",
    "stall",
    "keys",
    "output",
    "narrow",
    "norun",
    "offline",
    "downgraded",
    "twin",
    "refused",
]


@pytest.fixture(scope="module")
def stack():
    """A worker whose editors give up on an unacknowledged change after 2 s (5 s by default)."""
    stack = Stack(redis=False, EDITOR_SAVE_ACK_TIMEOUT="2")
    stack.port = stack.start_worker()
    stack.base = f"http://127.0.0.1:{stack.port}"
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def data(stack, tmp_path_factory):
    path = tmp_path_factory.mktemp("nb") / "small.ipynb"
    path.write_text(json.dumps(small_notebook()))
    share = {BOB: "editor", CAROL: "editor"}
    specs = [{"owner": ALICE, "title": name, "ipynb": str(path), "share": share} for name in NOTEBOOKS]
    made = seed(stack, [ALICE, BOB, CAROL], specs)
    return {
        "alice": made["users"][ALICE],
        "bob": made["users"][BOB],
        "carol": made["users"][CAROL],
        **dict(zip(NOTEBOOKS, made["notebooks"], strict=True)),
    }


def test_a_remote_deletion_never_turns_typing_into_commands(browser, stack, data):
    alice = open_page(browser, stack, data["alice"], data["delete"])
    carol = open_page(browser, stack, data["carol"], data["delete"])
    before = count(carol)
    type_at_end(carol, "b5", "  # carol")
    wait_source(alice, "b5", "s.endsWith('# carol')")
    alice.locator('[data-cell-id="b5"]').hover()
    alice.locator('[data-cell-id="b5"] [data-testid="delete-cell"]').click()
    carol.wait_for_selector('[data-cell-id="b5"]', state="detached")
    # her next words are text in a neighbouring cell, never "a", "d", "d" as commands
    carol.keyboard.type(" add data", delay=10)
    carol.wait_for_selector('[data-testid="toast"]:has-text("Alice deleted the cell you were editing")')
    assert carol.evaluate("window.__editor.notebook.mode") == "edit"
    active = carol.evaluate("window.__editor.notebook.active.id")
    assert active in ("b4", "b6")
    wait_source(alice, active, "s.endsWith(' add data')")
    assert count(carol) == count(alice) == before - 1
    # the deleter can take it back
    alice.locator('[data-testid="toast"] button:has-text("Undo")').click()
    carol.wait_for_selector('[data-cell-id="b5"]', state="attached")
    assert source(carol, "b5").endswith("# carol")
    close(alice, carol)


def test_a_cell_given_another_cells_id_is_renamed_and_both_pages_keep_working(browser, stack, data):
    """A client that gives a cell the id of another (forged, or one cell moved by two people at
    once) sees the server give it an id of its own; every page shows both cells, each with its
    own id, and typing into either reaches the other page."""
    alice = open_page(browser, stack, data["alice"], data["twin"])
    carol = open_page(browser, stack, data["carol"], data["twin"])
    before = ids(alice)
    carol.evaluate(
        """() => {
          const model = window.__editor.model
          const id = model.insert(3, 'code', 'twin text')
          model.transact(() => model.cells.get(model.indexOfId(id)).set('id', 'b5'))
        }"""
    )

    def settled():
        mine, theirs = ids(alice), ids(carol)
        return mine == theirs and len(mine) == len(before) + 1 and len(set(mine)) == len(mine) and mine

    after = eventually(settled, what="both pages to show unique ids")
    twin = after[3]
    assert twin not in before
    assert after[:3] + after[4:] == before  # every other cell kept its id
    wait_source(alice, twin, "s === 'twin text'")
    assert alice.locator(f'[data-cell-id="{twin}"]').count() == 1
    assert carol.locator('[data-cell-id="b5"]').count() == 1
    type_at_end(alice, twin, " and more")
    wait_source(carol, twin, "s === 'twin text and more'")
    type_at_end(carol, "b5", "  # still b5")
    wait_source(alice, "b5", "s.endsWith('# still b5')")
    close(alice, carol)


# every text the saved indicator shows, in order
RECORD_SAVED = """() => {
  const el = document.querySelector('[data-testid=saved]')
  window.__saved = [el.textContent]
  new MutationObserver(() => window.__saved.push(el.textContent))
    .observe(el, { childList: true, characterData: true, subtree: true })
}"""

# The socket stays open but nothing this page sends reaches the server any more.
STALL = "window.__editor.provider.ws.send = () => {}"


def test_a_stalled_connection_says_not_saved_and_recovers(browser, stack, data):
    page = open_page(browser, stack, data["alice"], data["stall"])
    page.wait_for_selector('[data-testid="saved"][data-state="saved"]')
    assert page.evaluate("window.__editor.connection._ackTimeoutMs") == 2000  # EDITOR_SAVE_ACK_TIMEOUT
    page.evaluate(RECORD_SAVED)
    page.evaluate(STALL)
    type_at_end(page, "b1", "  # typed into a stalled socket")
    # the acknowledgement never comes: say so within a few seconds (never "Saving…" forever);
    # the new socket may save it a moment later, so look at everything the indicator said
    page.wait_for_function("window.__saved.some((t) => t.startsWith('Not saved'))", timeout=10_000)
    # a fresh socket then delivers the edit
    page.wait_for_selector('[data-testid="saved"][data-state="saved"]', timeout=30_000)
    other = open_page(browser, stack, data["bob"], data["stall"])
    assert source(other, "b1") == "value_1 = 1  # typed into a stalled socket"
    close(page, other)


BEFOREUNLOAD = (
    "() => { const e = new Event('beforeunload', { cancelable: true });"
    " window.dispatchEvent(e); return e.defaultPrevented }"
)


def test_closing_the_tab_with_unsaved_edits_warns(browser, stack, data):
    page = open_page(browser, stack, data["alice"], data["stall"])
    page.wait_for_selector('[data-testid="saved"][data-state="saved"]')
    assert page.evaluate(BEFOREUNLOAD) is False
    page.evaluate(STALL)
    type_at_end(page, "b2", "  # not yet saved")
    page.wait_for_selector('[data-testid="saved"]:not([data-state="saved"])')
    assert page.evaluate(BEFOREUNLOAD) is True
    close(page)


def test_shift_m_merges_instead_of_making_markdown(browser, stack, data):
    page = open_page(browser, stack, data["alice"], data["keys"])
    before = count(page)
    command_mode_on(page, "b3")
    page.keyboard.press("Shift+M")
    page.wait_for_function(f"window.__editor.ydoc.getArray('cells').length === {before - 1}")
    assert page.locator('[data-cell-id="b3"]').get_attribute("data-cell-type") == "code"
    assert source(page, "b3") == "value_3 = 3\nvalue_4 = 4"
    assert "b4" not in ids(page)
    # other Shift-modified letters do nothing (Shift-A is not "add above", Shift-D not delete)
    page.keyboard.press("Shift+A")
    page.keyboard.press("Shift+D")
    page.keyboard.press("Shift+D")
    page.keyboard.press("Shift+Y")
    assert count(page) == before - 1
    close(page)


LONG_OUTPUT = (
    """(id) => {
  const cell = """
    + FIND
    + """
  const text = Array.from({ length: 20000 }, (_, i) => `log line ${i}`).join('\\n') + '\\n'
  const YMap = cell.constructor  // a stream output is a Y.Map, as the server writes it
  cell.get('outputs').push([new YMap([['output_type', 'stream'], ['name', 'stdout'], ['text', text]])])
}"""
)


def test_a_long_output_shows_its_head_and_tail(browser, stack, data):
    page = open_page(browser, stack, data["alice"], data["output"])
    page.evaluate(LONG_OUTPUT, "b0")
    out = page.locator('[data-cell-id="b0"] [data-testid="output"]')
    out.locator(':text("log line 19999")').wait_for()
    assert out.locator(':text("log line 0")').count() == 1
    hidden = page.locator('[data-cell-id="b0"] [data-testid="output-hidden-lines"]')
    assert "lines hidden" in hidden.inner_text()
    assert page.locator('[data-cell-id="b0"] [data-testid="output-download"]').count() == 1
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height < 8000, height
    hidden.locator('button:has-text("show all")').click()
    out.locator(':text("log line 10000")').wait_for()
    # the whole log is there, inside a box that scrolls instead of a page 200,000 px tall
    assert page.evaluate("document.documentElement.scrollHeight") < 8000
    # outputs and inputs collapse and expand
    page.locator('[data-cell-id="b0"]').hover()
    page.locator('[data-cell-id="b0"] [data-testid="collapse-outputs"]').click()
    page.locator('[data-cell-id="b0"] .cell-outputs').wait_for(state="hidden")
    page.locator('[data-cell-id="b0"] [data-testid="collapse-outputs"]').click()
    page.locator('[data-cell-id="b0"] .cell-outputs').wait_for(state="visible")
    page.locator('[data-cell-id="b0"] [data-testid="collapse-input"]').click()
    page.locator('[data-cell-id="b0"] .cell-input').wait_for(state="hidden")
    page.locator('[data-cell-id="b0"] [data-testid="collapse-input"]').click()
    page.locator('[data-cell-id="b0"] .cell-input').wait_for(state="visible")
    close(page)


def test_on_a_narrow_screen_the_output_tools_leave_the_first_line_of_output_visible(browser, stack, data):
    """At 390 px the output's collapse and scroll buttons sat on its first line (over an
    error's name, say): they take a row of their own above the output instead."""
    page = open_page(browser, stack, data["alice"], data["narrow"], width=390, height=844)
    page.evaluate(
        """(id) => {
  const cell = """
        + FIND
        + """
  const YMap = cell.constructor
  const output = [['output_type', 'stream'], ['name', 'stdout'], ['text', 'x'.repeat(200)]]
  cell.get('outputs').push([new YMap(output)])
}""",
        "b0",
    )
    tools = page.locator('[data-cell-id="b0"] .cell-output-tools')
    tools.wait_for(state="visible")
    output = page.locator('[data-cell-id="b0"] [data-testid="output"]').first.bounding_box()
    box = tools.bounding_box()
    assert box["y"] + box["height"] <= output["y"], (box, output)
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    close(page)


def test_an_editor_who_may_not_run_sees_the_kernel_and_is_told_why(browser, stack, data):
    page = open_page(browser, stack, data["bob"], data["norun"])
    assert page.locator('[data-testid="kernel-status"]').is_visible()
    page.locator('[data-cell-id="b0"] [data-testid="cell-editor"]').click()
    page.keyboard.press("Shift+Enter")
    toast = page.locator('[data-testid="toast"]:has-text("run code")')
    toast.wait_for()
    assert "ask" in toast.inner_text().lower()
    close(page)


def go_offline_and_type(page, notebook_id, cell_id, text):
    page.wait_for_selector('[data-testid="saved"][data-state="saved"]')
    page.evaluate("window.__editor.provider.disconnect()")
    type_at_end(page, cell_id, text)
    # kept in this browser once it has stayed unsaved for a moment
    page.wait_for_function(
        f"(id) => {KEPT} && window.__editor.offline.kept",
        arg=notebook_id,
    )
    context = page.context
    page.close()
    return context


def reopen(context, stack, notebook_id):
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(f"{stack.base}/n/{notebook_id}/", wait_until="domcontentloaded")
    page.wait_for_function("window.__editor && window.__editor.provider.synced")
    return page


def test_unsaved_edits_are_sent_when_the_notebook_opens_again(browser, stack, data):
    nb = data["offline"]
    context = go_offline_and_type(open_page(browser, stack, data["alice"], nb), nb, "b7", "  # kept offline")
    page = reopen(context, stack, nb)
    wait_source(page, "b7", "s.endsWith('# kept offline')")
    page.wait_for_selector('[data-testid="saved"][data-state="saved"]')
    page.wait_for_function(f"(id) => !{KEPT}", arg=nb)
    other = open_page(browser, stack, data["bob"], nb)
    assert source(other, "b7") == "value_7 = 7  # kept offline"
    close(page, other)


def test_unsaved_edits_the_role_no_longer_allows_are_offered_as_a_download(browser, stack, data):
    nb = data["downgraded"]
    context = go_offline_and_type(open_page(browser, stack, data["bob"], nb), nb, "b8", "  # bob, offline")
    stack.django(
        "from notebooks.models import Grant\n"
        f"Grant.objects.filter(notebook_id={nb!r}, user__email={BOB!r}).update(role='viewer')\n"
        "print('{}')"
    )
    page = reopen(context, stack, nb)
    button = page.locator('[data-testid="download-unsaved"]')
    button.wait_for()
    assert "no longer edit" in page.locator('[data-testid="toast"]', has=button).inner_text()
    with page.expect_download() as info:
        button.click()
    saved = json.loads(info.value.path().read_text(encoding="utf-8"))
    assert "value_8 = 8  # bob, offline" in [cell["source"] for cell in saved["cells"]]
    assert source(page, "b8") == "value_8 = 8"  # never merged into the notebook
    page.wait_for_function(f"(id) => !{KEPT}", arg=nb)
    close(page)


def test_a_change_the_server_refuses_is_offered_as_a_download_and_not_sent_again(browser, stack, data):
    """A change refused with 4413 ("Delete in parts") closed the editor, stayed in this browser
    (it was unsaved) and was sent again at the next visit, refused again: the notebook could not
    be edited in this browser any more. The page now offers its version as a download and
    forgets it; the next visit starts from the saved notebook."""
    nb = data["refused"]
    port = stack.start_worker(COLLAB_MAX_DELETE_RANGES_PER_UPDATE="3")
    base = f"http://127.0.0.1:{port}"
    page = open_page(browser, stack, data["alice"], nb, base=base)
    page.wait_for_selector('[data-testid="saved"][data-state="saved"]')
    page.evaluate(  # one change deleting five separate characters of "value_3 = 3"
        f"(id) => {{ const s = {FIND}.get('source');"
        " window.__editor.ydoc.transact(() => { for (const i of [9, 7, 5, 3, 1]) s.delete(i, 1) }) }",
        "b3",
    )
    page.wait_for_selector('[data-state="closed"][data-close-code="4413"]')
    button = page.locator('[data-testid="download-unsaved"]')
    button.wait_for()
    with page.expect_download() as info:
        button.click()
    saved = json.loads(info.value.path().read_text(encoding="utf-8"))
    assert "vle3=3" in [cell["source"] for cell in saved["cells"]]
    page.wait_for_function(f"(id) => !{KEPT} && !window.__editor.offline.persistence", arg=nb)
    context = page.context
    page.close()
    again = context.new_page()
    again.errors = []
    again.on("pageerror", lambda e: again.errors.append(str(e)))
    again.goto(f"{base}/n/{nb}/", wait_until="domcontentloaded")
    again.wait_for_function("window.__editor && window.__editor.provider.synced")
    type_at_end(again, "b3", "  # still editable")
    again.wait_for_selector('[data-testid="saved"][data-state="saved"]')
    assert source(again, "b3") == "value_3 = 3  # still editable"
    assert again.evaluate("window.__editor.connection.closed") is None
    close(again)
