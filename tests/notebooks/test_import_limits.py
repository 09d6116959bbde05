"""An import costs time linear in its size and refuses what would not be: too many cells, JSON
nested too deep. Refusals are messages on the page, never a 500."""

from __future__ import annotations

import json
import time

import pytest

from notebooks import nbio, ydoc
from notebooks.models import Notebook
from tests.support.http import upload

LIMIT = 50 * 1024 * 1024


def tiny_cells(n: int) -> bytes:
    cells = [
        {
            "id": f"c{i}",
            "cell_type": "code",
            "source": "x",
            "metadata": {},
            "outputs": [],
            "execution_count": None,
        }
        for i in range(n)
    ]
    return json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}).encode()


def deep(levels: int) -> bytes:
    head = b'{"nbformat": 4, "nbformat_minor": 5, "cells": [], "metadata": {"x": '
    return head + b"[" * levels + b"]" * levels + b"}}"


def cpu_seconds(nb) -> float:
    """The least CPU time of two runs (a busy machine only ever adds)."""
    runs = []
    for _ in range(2):
        start = time.process_time()
        ydoc.notebook_to_update(nb)
        runs.append(time.process_time() - start)
    return min(runs)


def test_it_writes_many_cells_into_a_document_in_linear_time():
    small = nbio.read_ipynb(tiny_cells(2500), LIMIT)
    big = nbio.read_ipynb(tiny_cells(10000), LIMIT)
    ratio = cpu_seconds(big) / cpu_seconds(small)
    assert ratio < 6.5, f"4x the cells cost {ratio:.1f}x the time"  # linear ~4x; it was ~8.6x


def test_it_writes_many_outputs_of_one_cell_in_linear_time():
    def one_cell(outputs: int):
        cell = {"id": "a", "cell_type": "code", "source": "", "metadata": {}, "execution_count": 1}
        cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "x"}] * outputs
        return nbio.from_dict({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell]})

    small, big = one_cell(2500), one_cell(10000)
    ratio = cpu_seconds(big) / cpu_seconds(small)
    assert ratio < 9, f"4x the outputs cost {ratio:.1f}x the time"  # linear ~5x; it was ~12.6x


def test_many_cells_keep_their_order():
    nb = nbio.read_ipynb(tiny_cells(50), LIMIT)
    doc = ydoc.doc_from_updates(ydoc.notebook_to_update(nb))
    assert [c.id for c in ydoc.read_notebook(doc).cells] == [f"c{i}" for i in range(50)]


def test_it_refuses_more_cells_than_the_limit():
    with pytest.raises(nbio.NotebookFileError, match="has 101 cells; at most 100 are accepted"):
        nbio.read_ipynb(tiny_cells(101), LIMIT, max_cells=100)
    assert len(nbio.read_ipynb(tiny_cells(100), LIMIT, max_cells=100).cells) == 100


@pytest.mark.parametrize("levels", [150, 5_000, 200_000])
def test_it_refuses_json_nested_deeper_than_the_limit(levels):
    with pytest.raises(nbio.NotebookFileError, match="nested deeper than 100 levels"):
        nbio.read_ipynb(deep(levels), LIMIT)


def test_nesting_within_the_limit_is_fine():
    nbio.read_ipynb(deep(90), LIMIT)


@pytest.mark.django_db
def test_the_upload_page_says_why_instead_of_failing(client, alice, settings):
    settings.NOTEBOOK_MAX_CELLS = 100
    client.force_login(alice)
    response = upload(client, ("deep.ipynb", deep(100_000)), ("many.ipynb", tiny_cells(101)))
    assert response.status_code == 200
    text = response.content.decode()
    assert "deep.ipynb was not imported: The file&#x27;s JSON is nested deeper than 100 levels." in text
    assert "many.ipynb was not imported: The notebook has 101 cells; at most 100 are accepted." in text
    assert not Notebook.objects.filter(owner=alice).exists()
