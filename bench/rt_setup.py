"""Fixtures for bench/realtime.py, run in the app's environment (DJANGO_SETTINGS_MODULE, SQLITE_PATH):
a user, a session cookie and the notebooks, created through the app's own actions.

    python bench/rt_setup.py OUT_DIR --typical 20 --big-cells 2000 --blank NAME [--blank NAME ...]

Writes OUT_DIR/fixture.json ({"cookie", "notebooks": {name: {"id", "bytes", "cells"}}}) and
OUT_DIR/<name>.bin, each notebook's initial Yjs state (to seed the comparison server with the
same documents).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import django

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
django.setup()

import nbformat  # noqa: E402
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY  # noqa: E402
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402

from accounts.models import User  # noqa: E402
from notebooks import actions  # noqa: E402
from notebooks.models import Notebook  # noqa: E402

LINE = "result = compute(values[{i}], factor={j}) + offset  # step {i}.{j}\n"


def code_source(i: int, size: int) -> str:
    lines, j = [], 0
    while sum(map(len, lines)) < size:
        lines.append(LINE.format(i=i, j=j))
        j += 1
    return "".join(lines)[:size]


def big_notebook(cells: int, cell_bytes: int = 1000) -> nbformat.NotebookNode:
    """`cells` code cells of ~`cell_bytes` of source each: ~2 MB for 2,000 cells."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code_source(i, cell_bytes)) for i in range(cells)]
    return nb


def typical_notebook(cells: int = 50) -> nbformat.NotebookNode:
    """Half markdown, half code with a short stream output: ~35 KB."""
    nb = nbformat.v4.new_notebook()
    for i in range(cells // 2):
        nb.cells.append(nbformat.v4.new_markdown_cell(f"## Step {i}\n\n" + "Some explanation. " * 20))
        cell = nbformat.v4.new_code_cell(code_source(i, 400), execution_count=i + 1)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"value {i}: 42\n" * 8)]
        nb.cells.append(cell)
    return nb


def session_cookie(user: User) -> str:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return f"sessionid={session.session_key}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--typical", type=int, default=20)
    parser.add_argument("--big-cells", type=int, default=2000)
    parser.add_argument("--blank", action="append", default=[])
    args = parser.parse_args()

    user = User.objects.create_user("bench@example.com", "bench-password")
    made: dict[str, Notebook] = {name: actions.create_blank(user, title=name) for name in args.blank}
    typical = nbformat.writes(typical_notebook()).encode()
    for i in range(args.typical):
        made[f"typical{i:02d}"] = actions.import_ipynb(user, f"typical{i:02d}.ipynb", typical)
    big = nbformat.writes(big_notebook(args.big_cells)).encode()
    made["big"] = actions.import_ipynb(user, "big.ipynb", big)

    notebooks = {}
    for name, nb in made.items():
        state = bytes(Notebook.objects.get(pk=nb.pk).snapshot)
        (args.out / f"{name}.bin").write_bytes(state)
        cells = args.big_cells if name == "big" else (1 if name in args.blank else 50)
        notebooks[name] = {"id": str(nb.pk), "bytes": len(state), "cells": cells}
    fixture = {"cookie": session_cookie(user), "notebooks": notebooks, "ipynb_bytes": len(big)}
    (args.out / "fixture.json").write_text(json.dumps(fixture, indent=1))


if __name__ == "__main__":
    main()
