"""The shared nbformat corpus: where it lives, and which of its notebooks the importer takes or
refuses (with a piece of the reason it gives)."""

from __future__ import annotations

import os
from pathlib import Path

# The notebook corpus lives beside the checkout (../shared/corpus/nbformat) unless CORPUS_DIR says.
CORPUS = Path(
    os.environ.get("CORPUS_DIR", Path(__file__).resolve().parents[3] / "shared" / "corpus" / "nbformat")
)


IMPORTED = [
    "test2.ipynb",
    "test3.ipynb",
    "test3_no_min_version.ipynb",
    "test4.ipynb",
    "test4.5.ipynb",
    "test4plus.ipynb",
    "test4custom.ipynb",
    "test4docinfo.ipynb",
    "test4jupyter_metadata.ipynb",
    "test4jupyter_metadata_timings.ipynb",
    "many_tracebacks.ipynb",
    "v4_5_no_cell_id.ipynb",
    "invalid_unique_cell_id.ipynb",
]
REFUSED = {
    "invalid.ipynb": "'source' is a required property",
    "invalid_cell_id.ipynb": "does not match",
    "no_min_version.ipynb": "'nbformat_minor' is a required property",
    "v4_5_invalid_metadata.ipynb": "is not of type 'object'",
    "test3_no_metadata.ipynb": "missing a key: metadata",
    "test3_no_worksheets.ipynb": "worksheets",
    "test3_worksheet_with_no_cells.ipynb": "cells",
}
