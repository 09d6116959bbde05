"""Completion (Tab) and inspection (Shift-Tab) from a notebook's running kernel.

Rules:
- Asked over the editor's socket by those who may run code (the consumer checks the role, as for
  every kernel command) and answered to the asking socket only: nothing enters the document.
- Never starts a kernel: without one there is nothing to complete from, and starting one is a run.
- Inputs are bounded before anything is sent (code length, cursor inside the code); replies are
  trimmed (number and length of matches, length of the help text), so a kernel cannot make the
  server or the browser carry megabytes for a keystroke.
- Positions are in Unicode code points, as in the Jupyter protocol (5.2+) and Python's `len`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

OPS = ("complete", "inspect")
NO_KERNEL_TO_ASK = "Completion and help come from the running kernel: run a cell to start it."
KERNEL_BUSY = "The kernel is busy running a cell; try again when it has finished."


def invalid_args(args: Any) -> str | None:
    """Why a complete/inspect request is unusable, or None."""
    code = args.get("code") if isinstance(args, dict) else None
    cursor = args.get("cursor_pos") if isinstance(args, dict) else None
    if not isinstance(code, str) or len(code) > settings.KERNEL_ASSIST_MAX_CHARS:
        limit = settings.KERNEL_ASSIST_MAX_CHARS
        return f'Send {{"code": "...", "cursor_pos": n}} with at most {limit} characters of code.'
    if isinstance(cursor, bool) or not isinstance(cursor, int) or not 0 <= cursor <= len(code):
        return "cursor_pos must be a position inside the code."
    return None


def request(op: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The shell message type and content for a valid request."""
    content: dict[str, Any] = {"code": args["code"], "cursor_pos": args["cursor_pos"]}
    if op == "inspect":
        content["detail_level"] = 0
        return "inspect_request", content
    return "complete_request", content


def shape(op: str, reply: dict[str, Any]) -> dict[str, Any]:
    """The part of a kernel's reply the editor needs, within bounds."""
    if reply.get("status") != "ok":
        return {"matches": [], "found": False}
    if op == "inspect":
        data = reply.get("data") if isinstance(reply.get("data"), dict) else {}
        text = data.get("text/plain")
        found = bool(reply.get("found")) and isinstance(text, str)
        return {"found": found, "text": text[: settings.KERNEL_ASSIST_MAX_HELP_CHARS] if found else ""}
    most, chars = settings.KERNEL_ASSIST_MAX_MATCHES, settings.KERNEL_ASSIST_MAX_MATCH_CHARS
    matches = [m[:chars] for m in reply.get("matches") or [] if isinstance(m, str)][:most]
    start, end = reply.get("cursor_start"), reply.get("cursor_end")
    if not isinstance(start, int) or not isinstance(end, int) or not 0 <= start <= end:
        return {"matches": []}
    return {"matches": matches, "cursor_start": start, "cursor_end": end}
