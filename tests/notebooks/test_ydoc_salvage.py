"""A document that does not fit the notebook schema still reads back as a valid notebook."""

from __future__ import annotations

import nbformat
import pytest
from pycrdt import Array, Doc, Map, Text

from notebooks import nbio, ydoc


def good_notebook() -> nbformat.NotebookNode:
    nb = nbio.blank_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Title ✓", id="md-1"),
        nbformat.v4.new_code_cell(
            "print('hi')",
            id="code-1",
            execution_count=3,
            outputs=[nbformat.v4.new_output("stream", name="stdout", text="hi\n")],
        ),
    ]
    return nb


def cells(doc: Doc) -> Array:
    return doc.get("cells", type=Array)


def add_string_cell(doc: Doc) -> None:
    cells(doc).append("not a cell")


def add_typeless_cell(doc: Doc) -> None:
    cells(doc).append(Map({"id": "x-1", "source": Text("typeless")}))


def add_bogus_type(doc: Doc) -> None:
    cells(doc).append(Map({"id": "x-2", "cell_type": "bogus", "source": Text("bogus"), "metadata": Map()}))


def add_junk_output(doc: Doc) -> None:
    cells(doc)[1]["outputs"].append("junk")


def add_stream_without_text(doc: Doc) -> None:
    cells(doc)[1]["outputs"].append(Map({"output_type": "stream", "name": "stdout"}))


def count_as_text(doc: Doc) -> None:
    cells(doc)[1]["execution_count"] = "three"


def drop_nbformat(doc: Doc) -> None:
    del doc.get("meta", type=Map)["nbformat"]


def duplicate_id(doc: Doc) -> None:
    cells(doc).append(Map({"id": "md-1", "cell_type": "raw", "source": Text("same id"), "metadata": Map()}))


@pytest.mark.parametrize(
    "breakage",
    [
        add_string_cell,
        add_typeless_cell,
        add_bogus_type,
        add_junk_output,
        add_stream_without_text,
        count_as_text,
        drop_nbformat,
        # jupyter_ydoc renames the duplicate itself, and warns that it did
        pytest.param(duplicate_id, marks=pytest.mark.filterwarnings("ignore:Non-unique cell ID")),
    ],
)
def test_a_broken_document_reads_back_valid_and_keeps_the_good_cells(breakage):
    doc = ydoc.doc_from_updates(ydoc.notebook_to_update(good_notebook()))
    breakage(doc)
    nb = ydoc.read_notebook(doc)
    nbformat.validate(nb)
    nbformat.reads(nbio.write_ipynb(nb).decode(), as_version=4)  # what a download holds
    assert nb.cells[0].source == "# Title ✓"
    assert nb.cells[1].source == "print('hi')"
    assert nb.cells[1].outputs[0].text == "hi\n"
    assert len({c.id for c in nb.cells}) == len(nb.cells)
    extra = [c.source for c in nb.cells[2:]]
    assert extra in ([], ["typeless"], ["bogus"], ["same id"])
    assert all(c.cell_type == "raw" for c in nb.cells[2:])


def test_a_valid_document_reads_back_unchanged():
    nb = good_notebook()
    doc = ydoc.doc_from_updates(ydoc.notebook_to_update(nb))
    assert nbio.normalise(ydoc.read_notebook(doc)) == nbio.normalise(nb)
