"""kernels.outputs and kernels.textops: iopub messages -> YNotebook outputs. # no Django

Every text write is checked three ways: `YNotebook(doc).get()` validates as nbformat v4, a
fresh pycrdt Doc decodes the same strings, and so does Yjs (Node and the repository's
`node_modules/yjs`, required), replaying the incremental updates as a browser would receive them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nbformat
import pytest
from jupyter_ydoc import YNotebook
from pycrdt import Array, Doc, Map, Text

from kernels import textops
from kernels.outputs import Caps, OutputWriter

CELLS = ["alice-cell", "bob-cell", "charlie-cell"]


def msg(msg_type: str, **content: Any) -> dict[str, Any]:
    return {"header": {"msg_type": msg_type}, "parent_header": {}, "content": content}


def stream(text: str, name: str = "stdout") -> dict[str, Any]:
    return msg("stream", name=name, text=text)


def display(data: dict[str, Any], display_id: str | None = None, update: bool = False) -> dict:
    transient = {"display_id": display_id} if display_id else {}
    kind = "update_display_data" if update else "display_data"
    return msg(kind, data=data, metadata={}, transient=transient)


class UpdateLog:
    """Every update the Doc emits, so Yjs can replay them incrementally like a browser."""

    def __init__(self, doc: Doc) -> None:
        self.updates: list[bytes] = [doc.get_update()]
        self._sub = doc.observe(lambda event: self.updates.append(event.update))


class Notebook:
    """A YNotebook doc with three code cells and a markdown cell, and its OutputWriter."""

    def __init__(self, yjs: Callable[[list[bytes]], list[dict[str, Any]]]) -> None:
        self.doc = Doc()
        cells: list[dict[str, Any]] = [
            {
                "cell_type": "code",
                "id": cid,
                "source": "",
                "metadata": {},
                "outputs": [],
                "execution_count": None,
            }
            for cid in CELLS
        ]
        cells.append({"cell_type": "markdown", "id": "notes", "source": "# hi", "metadata": {}})
        YNotebook(self.doc).set({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
        self.log = UpdateLog(self.doc)
        self.writer = OutputWriter(self.doc)
        self.yjs = yjs

    def feed(self, cell_id: str, *messages: dict[str, Any]) -> None:
        for message in messages:
            with self.doc.transaction(origin="kernel"):
                self.writer.apply(cell_id, message)

    def outputs(self, cell_id: str) -> list[dict[str, Any]]:
        """The cell's outputs, after checking nbformat, a fresh pycrdt decode and Yjs."""
        notebook = YNotebook(self.doc).get()
        nbformat.validate(nbformat.from_dict(notebook))
        fresh = Doc()
        fresh.apply_update(self.doc.get_update())
        assert YNotebook(fresh).get() == notebook
        browser = [cell.get("outputs") for cell in self.yjs(self.log.updates)]
        assert browser == [cell.get("outputs") for cell in YNotebook(self.doc).ycells.to_py()]
        cell = next(c for c in notebook["cells"] if c["id"] == cell_id)
        return list(cell["outputs"])


@pytest.fixture
def nb(yjs: Any) -> Notebook:
    return Notebook(yjs)


def test_it_merges_consecutive_streams_of_one_name(nb: Notebook) -> None:
    nb.feed(
        "alice-cell", stream("héllo "), stream("wörld 😀\n"), stream("oops\n", "stderr"), stream("中文\n")
    )
    assert nb.outputs("alice-cell") == [
        {"output_type": "stream", "name": "stdout", "text": "héllo wörld 😀\n"},
        {"output_type": "stream", "name": "stderr", "text": "oops\n"},
        {"output_type": "stream", "name": "stdout", "text": "中文\n"},
    ]


def test_it_rewrites_the_line_on_carriage_return_with_emoji_and_cjk(nb: Notebook) -> None:
    nb.feed("bob-cell", stream("start 🚀\n"))
    for pct in range(0, 101, 10):
        bar = "█" * (pct // 10) + "░" * (10 - pct // 10)
        nb.feed("bob-cell", stream(f"\r{pct:3d}%|{bar}| 进度 😀 {pct}/100"))
    nb.feed("bob-cell", stream("\ndone ✅\n"))
    text = nb.outputs("bob-cell")[0]["text"]
    assert text == "start 🚀\n100%|██████████| 进度 😀 100/100\ndone ✅\n"


def test_it_keeps_a_trailing_carriage_return_for_the_next_chunk(nb: Notebook) -> None:
    nb.feed("bob-cell", stream("😀😀😀 long line\r"), stream("short"), stream("\r\n"))
    assert nb.outputs("bob-cell")[0]["text"] == "shortong line\n"  # 5 code points overwritten


def test_it_applies_backspaces(nb: Notebook) -> None:
    nb.feed("alice-cell", stream("abc😀\b\bd\n"), stream("x\b"), stream("y\n"))
    assert nb.outputs("alice-cell")[0]["text"] == "abd\ny\n"


def test_it_clears_with_wait_only_at_the_next_output(nb: Notebook) -> None:
    nb.feed("alice-cell", stream("frame 1 🐢\n"), msg("clear_output", wait=True))
    assert nb.outputs("alice-cell")[0]["text"] == "frame 1 🐢\n"
    nb.feed("alice-cell", stream("frame 2 🐇\n"))
    assert nb.outputs("alice-cell") == [{"output_type": "stream", "name": "stdout", "text": "frame 2 🐇\n"}]
    nb.feed("alice-cell", msg("clear_output", wait=False))
    assert nb.outputs("alice-cell") == []


def test_it_updates_a_display_id_in_every_cell(nb: Notebook) -> None:
    nb.feed("alice-cell", display({"text/plain": "v1"}, "d1"))
    nb.feed("bob-cell", stream("before\n"), display({"text/plain": "v1 again"}, "d1"))
    nb.feed("charlie-cell", display({"text/plain": "other"}, "d2"))
    nb.feed("bob-cell", display({"text/plain": "v2 ✨"}, "d1", update=True))
    assert nb.outputs("alice-cell")[0]["data"] == {"text/plain": "v2 ✨"}
    assert nb.outputs("bob-cell")[1]["data"] == {"text/plain": "v2 ✨"}
    assert nb.outputs("charlie-cell")[0]["data"] == {"text/plain": "other"}


def test_it_forgets_display_ids_of_a_cleared_cell(nb: Notebook) -> None:
    nb.feed("alice-cell", display({"text/plain": "v1"}, "d1"), msg("clear_output"))
    nb.feed("alice-cell", stream("new\n"))
    nb.feed("bob-cell", display({"text/plain": "v2"}, "d1", update=True))
    assert nb.outputs("alice-cell") == [{"output_type": "stream", "name": "stdout", "text": "new\n"}]


def test_it_writes_execute_result_and_execution_count(nb: Notebook) -> None:
    nb.feed(
        "charlie-cell",
        msg("execute_input", code="1+1", execution_count=3),
        msg("execute_result", data={"text/plain": "2"}, metadata={}, execution_count=3),
    )
    cell = next(c for c in YNotebook(nb.doc).get()["cells"] if c["id"] == "charlie-cell")
    assert cell["execution_count"] == 3
    assert nb.outputs("charlie-cell") == [
        {"output_type": "execute_result", "data": {"text/plain": "2"}, "metadata": {}, "execution_count": 3}
    ]


def test_it_keeps_ansi_in_error_tracebacks(nb: Notebook) -> None:
    traceback = ["\x1b[0;31mZeroDivisionError\x1b[0m  Traceback", "\x1b[0;31m----> 1\x1b[0m 1/0 😱"]
    nb.feed(
        "alice-cell", msg("error", ename="ZeroDivisionError", evalue="division by zero", traceback=traceback)
    )
    assert nb.outputs("alice-cell") == [
        {
            "output_type": "error",
            "ename": "ZeroDivisionError",
            "evalue": "division by zero",
            "traceback": traceback,
        }
    ]


def test_it_fails_a_cell_with_a_readable_error(nb: Notebook) -> None:
    nb.feed("bob-cell", stream("working...\n"))
    with nb.doc.transaction():
        assert nb.writer.fail("bob-cell", "Kernel died while running this cell")
    out = nb.outputs("bob-cell")
    assert out[-1]["output_type"] == "error"
    assert out[-1]["evalue"] == "Kernel died while running this cell"


def test_it_ignores_unknown_cells_and_markdown(nb: Notebook) -> None:
    with nb.doc.transaction():
        assert not nb.writer.apply("nobody", stream("x"))
        assert not nb.writer.apply("notes", stream("x"))


def test_it_caps_one_huge_stream_with_head_and_tail(nb: Notebook) -> None:
    nb.writer.caps = Caps(max_output_bytes=10_000, max_cell_bytes=50_000)
    big = "".join(f"line {i} 😀 中文\n" for i in range(20_000))
    nb.feed("alice-cell", stream(big))
    text = nb.outputs("alice-cell")[0]["text"]
    assert textops.utf8_len(text) <= 10_000
    assert text.startswith("line 0 😀 中文\nline 1 ")
    assert text.endswith("line 19999 😀 中文\n")
    assert "bytes cut here" in text


def test_it_keeps_capping_a_growing_stream_and_counts_what_was_cut(nb: Notebook) -> None:
    nb.writer.caps = Caps(max_output_bytes=5_000, max_cell_bytes=50_000)
    sent = ""
    for i in range(2_000):
        chunk = f"{i} ünïcödé 😀\n" if i % 7 else f"\r{i}%|██░░|"
        sent += chunk
        nb.feed("alice-cell", stream(chunk))
    text = nb.outputs("alice-cell")[0]["text"]
    assert textops.utf8_len(text) <= 5_000
    expected = textops.terminal_text(sent)
    head, _, tail = text.partition("\n[... ")
    assert expected.startswith(head)
    assert expected.endswith(tail.split("...]\n", 1)[1])
    cut = int(tail.split(" bytes cut here")[0].replace(",", ""))
    assert cut == textops.utf8_len(expected) - textops.utf8_len(head) - textops.utf8_len(
        tail.split("...]\n", 1)[1]
    )


def test_it_caps_a_cell_keeping_first_and_last_outputs(nb: Notebook) -> None:
    nb.writer.caps = Caps(max_output_bytes=2_000, max_cell_bytes=10_000)
    for i in range(60):
        nb.feed("alice-cell", display({"text/plain": f"{i} 😀 " + "x" * 900}, f"d{i}"))
    out = nb.outputs("alice-cell")
    texts = [o["data"]["text/plain"] for o in out]
    assert texts[0].startswith("0 😀")
    assert texts[-1].startswith("59 😀")
    marker = next(t for t in texts if "cut here" in t)
    assert marker.startswith("[... ")
    assert sum(len(str(o)) for o in out) < 12_000
    nb.feed("alice-cell", display({"text/plain": "updated"}, "d59", update=True))
    nb.feed("alice-cell", display({"text/plain": "gone"}, "d30", update=True))
    out = nb.outputs("alice-cell")
    assert out[-1]["data"] == {"text/plain": "updated"}
    assert all(o["data"] != {"text/plain": "gone"} for o in out)


def test_it_caps_a_huge_image_to_a_note(nb: Notebook) -> None:
    nb.writer.caps = Caps(max_output_bytes=1_000, max_cell_bytes=10_000)
    nb.feed("alice-cell", display({"image/png": "A" * 50_000, "text/plain": "<Figure>"}))
    data = nb.outputs("alice-cell")[0]["data"]
    assert list(data) == ["text/plain"]
    assert data["text/plain"].startswith("<Figure>\n[output too large: ")
    assert "image/png" in data["text/plain"]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("", "😀"),
        ("a😀b", "a🎉b"),
        ("中文😀", "中文"),
        ("x\n 10%|█", "x\n 20%|██"),
        ("é" * 50, "é" * 25 + "ü" + "é" * 24),
        ("😀" * 10, ""),
    ],
)
def test_it_replaces_text_at_utf8_offsets(old: str, new: str, yjs: Any) -> None:
    doc = Doc()
    log = UpdateLog(doc)
    cells = doc.get("cells", type=Array)
    with doc.transaction():
        cells.append(Map({"outputs": Array([Map({"text": Text(old)})])}))
    ytext = cells[0]["outputs"][0]["text"]
    with doc.transaction():
        textops.replace_text(ytext, old, new)
    assert str(ytext) == new
    assert yjs(log.updates)[0]["outputs"][0]["text"] == new
