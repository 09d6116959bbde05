"""A signed-in HTTP client of one worker's kernel endpoints (as the editor calls them), what a
cell's outputs say, and an .ipynb of code cells to upload."""

from __future__ import annotations

import json
from pathlib import Path

import httpx


class Browserish:
    """An HTTP client for one worker, signed in, with a CSRF token (as the editor has)."""

    def __init__(self, port: int, cookie: str, notebook_id: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        name, value = cookie.split("=", 1)
        self.http = httpx.Client(base_url=self.base, cookies={name: value}, timeout=20)
        self.notebook = f"/n/{notebook_id}/"
        assert self.http.get(self.notebook).status_code == 200
        self.csrf = self.http.cookies["csrftoken"]

    def post(self, action: str, body: dict | None = None) -> httpx.Response:
        headers = {"X-CSRFToken": self.csrf, "Origin": self.base, "Referer": self.base + self.notebook}
        return self.http.post(self.notebook + "kernel/" + action, json=body or {}, headers=headers)

    def status(self) -> dict:
        return self.http.get(self.notebook + "kernel/").json()

    def cell(self, cell_id: str) -> dict:
        ipynb = self.http.get(self.notebook + "download").json()
        return next(c for c in ipynb["cells"] if c["id"] == cell_id)


def texts(cell: dict) -> str:
    parts = (o.get("text", "") for o in cell["outputs"])
    return "".join("".join(p) if isinstance(p, list) else p for p in parts)


def write_code_notebook(path: Path, cells: dict[str, str]) -> str:
    """An .ipynb of code cells (id -> source) at `path`, for uploading; returns the path."""
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {
                "cell_type": "code",
                "id": cid,
                "metadata": {},
                "execution_count": None,
                "outputs": [],
                "source": src,
            }
            for cid, src in cells.items()
        ],
    }
    path.write_text(json.dumps(notebook))
    return str(path)
