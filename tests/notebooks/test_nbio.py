"""Import/export against the whole shared corpus and hand-made hard cases."""

from __future__ import annotations

import base64
import json

import nbformat
import pytest

from notebooks import nbio, ydoc
from tests.support.corpus import CORPUS, IMPORTED, REFUSED

LIMIT = 50 * 1024 * 1024


def test_the_corpus_is_fully_covered():
    assert sorted(IMPORTED + list(REFUSED)) == sorted(p.name for p in CORPUS.glob("*.ipynb"))


def round_trip(nb):
    return ydoc.read_notebook(ydoc.doc_from_updates(ydoc.notebook_to_update(nb)))


@pytest.mark.parametrize("name", IMPORTED)
def test_it_imports_and_exports_losslessly(name):
    nb = nbio.read_ipynb((CORPUS / name).read_bytes(), LIMIT)
    ids = [cell["id"] for cell in nb.cells]
    assert all(ids)
    assert len(set(ids)) == len(ids)
    out = round_trip(nb)
    nbformat.validate(out)
    assert nbio.normalise(out) == nbio.normalise(nb)
    assert json.loads(nbio.write_ipynb(out)) == nbio.normalise(nb)


def test_it_keeps_every_cell_of_a_v4_notebook_unchanged_but_for_the_new_ids():
    original = json.loads((CORPUS / "test4.ipynb").read_bytes())
    out = round_trip(nbio.read_ipynb((CORPUS / "test4.ipynb").read_bytes(), LIMIT))

    def canonical(cells):
        wrapper = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 4}
        return nbio.normalise(nbformat.reads(json.dumps(wrapper), as_version=4))["cells"]

    without_ids = [{k: v for k, v in cell.items() if k != "id"} for cell in out.cells]
    assert canonical(without_ids) == canonical(original["cells"])
    assert original["metadata"] == json.loads(nbio.write_ipynb(out))["metadata"]


def test_it_makes_duplicate_cell_ids_unique():
    nb = nbio.read_ipynb((CORPUS / "invalid_unique_cell_id.ipynb").read_bytes(), LIMIT)
    ids = [c.id for c in nb.cells]
    assert len(ids) == len(set(ids)) == 2


def test_a_document_with_cells_of_the_same_id_exports_every_cell():
    """Two identical cells under one id (a forged paste, or one cell moved by two people at once)
    are two cells on everyone's screen: the download keeps both, under ids of their own."""
    from pycrdt import Array, Doc, Map, Text

    from notebooks import docschema

    doc = Doc()
    ydoc.write_notebook(doc, nbio.blank_notebook())
    for source in ("same", "same", "other"):
        cell = {"id": "twin", "cell_type": "code", "source": Text(source), "metadata": Map()}
        docschema.cells(doc).append(Map({**cell, "outputs": Array(), "execution_count": None}))
    before = doc.get_state()
    nb = ydoc.read_notebook(doc)
    assert [c.source for c in nb.cells] == ["", "same", "same", "other"]
    ids = [c.id for c in nb.cells]
    assert len(set(ids)) == 4
    assert ids[1] == "twin"  # the first keeps its id
    assert doc.get_state() == before  # reading does not write into the document


@pytest.mark.parametrize(("name", "words"), REFUSED.items())
def test_it_refuses_broken_notebooks_with_a_reason(name, words):
    with pytest.raises(nbio.NotebookFileError) as info:
        nbio.read_ipynb((CORPUS / name).read_bytes(), LIMIT)
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is empty."),
        (b"   \n", "The file is empty."),
        (b"{not json", "The file is not valid JSON"),
        (b"[1, 2, 3]", "The file holds a JSON array, not a notebook object."),
        (b'"text"', "The file holds a JSON str, not a notebook object."),
        (b"\xff\xfe\x00\x01", "The file is not UTF-8 text"),
        (b'{"cells": []}', "no 'nbformat' field"),
        (b'{"nbformat": 9, "nbformat_minor": 0, "cells": []}', "cannot be read"),
    ],
)
def test_it_refuses_files_that_are_not_notebooks(data, message):
    with pytest.raises(nbio.NotebookFileError) as info:
        nbio.read_ipynb(data, LIMIT)
    assert message in str(info.value)


def test_it_refuses_files_over_the_size_limit():
    with pytest.raises(nbio.NotebookFileError) as info:
        nbio.read_ipynb(b" " * 2_000_001, 2_000_000)
    assert "the largest notebook accepted is 1.9 MB" in str(info.value)


def make_big_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    png = base64.b64encode(bytes(range(256)) * 4000).decode()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Café 😀 中文 — naïve ∑ 👩‍👩‍👧"),
        nbformat.v4.new_code_cell(
            "print('日本語 🎉')",
            execution_count=1,
            outputs=[
                nbformat.v4.new_output("stream", name="stdout", text="x" * (10 * 1024 * 1024) + "\n🎉"),
                nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"}),
                nbformat.v4.new_output("execute_result", data={"text/plain": "42"}, execution_count=1),
                nbformat.v4.new_output(
                    "error",
                    ename="ValueError",
                    evalue="bad ✗",
                    traceback=["\x1b[31mValueError\x1b[0m: bad ✗"],
                ),
            ],
        ),
        nbformat.v4.new_raw_cell("raw ✓"),
    ]
    nb.cells[0].attachments = {"img.png": {"image/png": png[:100]}}
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3"}, "tags": ["ünï"]}
    return nb


def test_it_round_trips_big_outputs_images_attachments_and_non_ascii_text():
    nb = nbio.read_ipynb(nbformat.writes(make_big_notebook()).encode(), LIMIT)
    out = round_trip(nb)
    assert nbio.normalise(out) == nbio.normalise(nb)
    assert out.cells[1].outputs[0].text.endswith("🎉")
