"""Reading and writing .ipynb files. The only module that imports nbformat.

Every refusal raises `NotebookFileError` with a sentence naming the problem, before anything
is written anywhere.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from nbformat import NotebookNode


@functools.cache
def _nbformat() -> ModuleType:
    """nbformat, imported on first use: with jsonschema it is a third of a worker's start, and
    only imports, exports and saved notebooks need it."""
    import nbformat
    import nbformat.v4.convert  # for the attribute `_nbformat().v4.convert`

    return nbformat


CURRENT_MINOR = 5  # cell ids exist from 4.5 on
MAX_CELLS = 10_000
MAX_DEPTH = 100


class NotebookFileError(ValueError):
    """An uploaded file that cannot become a notebook; the message says why."""


def megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise NotebookFileError(
            f"The file is {megabytes(size)}; the largest notebook accepted is {megabytes(max_bytes)}."
        )


def read_ipynb(
    source: bytes | BinaryIO, max_bytes: int, max_cells: int = MAX_CELLS, max_depth: int = MAX_DEPTH
) -> NotebookNode:
    """Parse, upgrade to v4.5 (every cell gets a unique id) and validate an .ipynb file (its
    bytes, or a binary file, which is read here so that its bytes are freed once decoded).
    Its cost is linear in its size: at most `max_cells` cells, JSON nested at most `max_depth`
    levels (deeper nesting would exhaust Python's stack in the parser and validators). It is
    parsed once, and each form (bytes, text, parsed JSON) is let go as soon as the next exists:
    a 45 MB file is several hundred MB of Python objects."""
    data = source if isinstance(source, bytes) else source.read(max_bytes + 1)
    del source
    check_size(len(data), max_bytes)
    if not data or data.isspace():
        raise NotebookFileError("The file is empty.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise NotebookFileError(
            f"The file is not UTF-8 text (byte 0x{data[e.start]:02x} at position {e.start})."
        ) from None
    del data
    too_deep = NotebookFileError(f"The file's JSON is nested deeper than {max_depth} levels.")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise NotebookFileError(
            f"The file is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}."
        ) from None
    except RecursionError:
        raise too_deep from None
    del text
    if _deeper_than(raw, max_depth):
        raise too_deep
    if not isinstance(raw, dict):
        kind = type(raw).__name__.replace("list", "array").replace("dict", "object")
        raise NotebookFileError(f"The file holds a JSON {kind}, not a notebook object.")
    if "nbformat" not in raw:
        raise NotebookFileError("The JSON has no 'nbformat' field, so it is not a Jupyter notebook.")
    if (count := _count_cells(raw)) > max_cells:
        raise NotebookFileError(f"The notebook has {count:,} cells; at most {max_cells:,} are accepted.")
    nb = _to_v4(raw)
    del raw  # the lines of every source and output, now joined in `nb`
    return _upgrade_and_validate(nb)


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether parsed JSON nests deeper than `limit`; iterative, so any depth is safe to check."""
    stack = [(value, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _count_cells(raw: dict) -> int:
    """Cells of a v4 notebook, or of every worksheet of a v3 one."""
    cells = raw.get("cells")
    if isinstance(cells, list):
        return len(cells)
    sheets = raw.get("worksheets")
    if isinstance(sheets, list):
        return sum(len(s.get("cells") or []) for s in sheets if isinstance(s, dict))
    return 0


def _to_v4(raw: dict) -> NotebookNode:
    """What `nbformat.reads(text, as_version=4)` does once the text is parsed (its own
    validation only logs, and `_upgrade_and_validate` validates), without parsing it again."""
    nbf = _nbformat()
    try:
        major, minor = nbf.reader.get_version(raw)
        if major not in nbf.versions:
            raise nbf.NBFormatError(f"Unsupported nbformat version {major}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                nb = nbf.versions[major].to_notebook_json(raw, minor=minor)
            except AttributeError as e:
                raise nbf.ValidationError(
                    f"The notebook is invalid and is missing an expected key: {e}"
                ) from None
            return nbf.convert(nb, 4)
    except nbf.ValidationError as e:
        raise NotebookFileError(f"The notebook cannot be read: {_first_line(e)}") from None
    except Exception as e:  # nbformat raises bare KeyErrors and others for broken v2/v3 files
        raise _unreadable(e) from None


def _unreadable(e: Exception) -> NotebookFileError:
    return NotebookFileError(
        f"The notebook cannot be read or converted to version 4 ({type(e).__name__}: {e})."
    )


def _upgrade_and_validate(nb: NotebookNode) -> NotebookNode:
    try:
        _validate(nb)  # before upgrading: the upgrade must not hide schema errors
    except NotebookFileError:
        raise
    except Exception as e:  # e.g. a version or cells field of the wrong type
        raise _unreadable(e) from None
    if nb.nbformat_minor < CURRENT_MINOR:
        nb = _nbformat().v4.convert.upgrade(nb, from_version=4, from_minor=nb.nbformat_minor)
        _validate(nb)  # also makes duplicate cell ids unique (validating a 4.5 notebook did)
    return nb


def _validate(nb: NotebookNode) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _nbformat().validate(nb)
    except _nbformat().ValidationError as e:
        where = "/".join(str(p) for p in getattr(e, "absolute_path", []) or [])
        place = f" (at {where})" if where else ""
        raise NotebookFileError(
            f"The notebook does not follow the nbformat schema{place}: {_first_line(e)}"
        ) from None


def _first_line(e: Exception) -> str:
    message = getattr(e, "message", None) or str(e)
    return message.strip().splitlines()[0]


def from_dict(data: dict) -> NotebookNode:
    """A notebook read back from a document, validated; raises if it is not a valid notebook."""
    nb = _nbformat().from_dict(data)
    _validate(nb)
    return nb


CELL_TYPES = ("code", "markdown", "raw")
_CELL_ID = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")  # nbformat 4.5


def salvage(data: Any) -> tuple[NotebookNode, list[str]]:
    """The valid notebook closest to `data`, a notebook read from a document that does not
    fit the schema: cells and outputs that cannot be read are left out, a cell that still does
    not validate becomes a raw cell with its source. Returns it and what was left out or changed."""
    data = data if isinstance(data, dict) else {}
    found: list[str] = []
    metadata = data.get("metadata")
    nb = _nbformat().from_dict({"cells": [], "nbformat": 4, "nbformat_minor": CURRENT_MINOR})
    nb.metadata = metadata if isinstance(metadata, dict) else {}
    if not _is_valid(nb):
        found.append("notebook metadata that does not validate: dropped")
        nb.metadata = {}
    ids: set[str] = set()
    for index, cell in enumerate(data.get("cells") or []):
        if not isinstance(cell, dict):
            found.append(f"cell {index} is not a cell: left out")
            continue
        salvaged = _salvage_cell(cell, index, found)
        while salvaged.id in ids:
            salvaged.id = uuid.uuid4().hex[:16]
        ids.add(salvaged.id)
        nb.cells.append(salvaged)
    _validate(nb)
    return nb, found


def _salvage_cell(cell: dict, index: int, found: list[str]) -> NotebookNode:
    kind = cell.get("cell_type")
    if kind not in CELL_TYPES:
        found.append(f"cell {index} has cell type {kind!r}: made raw")
        kind = "raw"
    source = cell.get("source")
    if isinstance(source, list) and all(isinstance(line, str) for line in source):
        source = "".join(source)
    if not isinstance(source, str):
        found.append(f"cell {index} has no source text: emptied")
        source = ""
    cell_id = cell.get("id")
    if not isinstance(cell_id, str) or not _CELL_ID.match(cell_id):
        cell_id = uuid.uuid4().hex[:16]
    metadata = cell.get("metadata") if isinstance(cell.get("metadata"), dict) else {}
    salvaged: dict[str, Any] = {"id": cell_id, "cell_type": kind, "source": source, "metadata": metadata}
    if kind == "code":
        count = cell.get("execution_count")
        valid_count = isinstance(count, int) and not isinstance(count, bool) and count >= 0
        salvaged["execution_count"] = count if valid_count else None
        salvaged["outputs"] = []
        for output in cell.get("outputs") or []:
            probe = {**salvaged, "metadata": {}, "outputs": [output]}
            if isinstance(output, dict) and _is_valid(_one_cell(probe)):
                salvaged["outputs"].append(output)
            else:
                found.append(f"cell {index} has an output that does not validate: left out")
    elif isinstance(cell.get("attachments"), dict) and cell["attachments"]:
        salvaged["attachments"] = cell["attachments"]
    if not _is_valid(_one_cell(salvaged)):
        found.append(f"cell {index} does not validate: made a raw cell with its source")
        salvaged = {"id": cell_id, "cell_type": "raw", "source": source, "metadata": {}}
    return _nbformat().from_dict(salvaged)


def _one_cell(cell: dict) -> NotebookNode:
    nb = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": CURRENT_MINOR}
    return _nbformat().from_dict(nb)


def _is_valid(nb: NotebookNode) -> bool:
    try:
        _validate(nb)
    except NotebookFileError:
        return False
    return True


def write_ipynb(nb: NotebookNode) -> bytes:
    """The .ipynb bytes of a notebook, as Jupyter writes them."""
    return _nbformat().writes(nb).encode("utf-8") + b"\n"


def normalise(nb: NotebookNode) -> dict:
    """The canonical JSON form used to compare notebooks."""
    return json.loads(_nbformat().writes(nb))


def blank_notebook() -> NotebookNode:
    nb = _nbformat().v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    nb.cells = [_nbformat().v4.new_code_cell("")]
    return nb
