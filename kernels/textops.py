"""String helpers for stream outputs and size caps, and the one safe way to edit a shared Text.

Rules:
- Pure functions on `str`, except `replace_text`, which edits a pycrdt `Text` in place.
- pycrdt 0.14 `Text` indexes by UTF-8 byte offset, Yjs by UTF-16 unit and Python by code point.
  `replace_text` is the only place that converts: it diffs the old and new Python strings
  (common prefix and suffix, on code points, so never inside a character) and makes one
  delete + one insert at the matching UTF-8 byte offsets.
- Terminal semantics like JupyterLab: `\\r\\n` is a newline, `\\r` returns to the start of the line
  and the text after it overwrites what was there, `\\b` erases the character before it (never a
  newline). A trailing `\\r` is kept so the next chunk overwrites the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pycrdt import Text

_BACKSPACE = re.compile(r"[^\n\b]\x08")
_CUT_MARKER = re.compile(r"\n\[\.\.\. ([\d,]+) bytes cut here; output limit ([\d,]+) bytes \.\.\.\]\n")


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def _overwrite_line(line: str) -> str:
    """Apply carriage returns inside one line (no `\\n`); keep one trailing `\\r`."""
    if "\r" not in line:
        return line
    trailing = line.endswith("\r")
    current = ""
    for part in line.rstrip("\r").split("\r"):
        current = part + current[len(part) :]
    return current + "\r" if trailing else current


def terminal_text(text: str) -> str:
    """Resolve `\\b` and `\\r` the way a terminal (and JupyterLab's output area) shows them."""
    if "\x08" in text:
        previous = None
        while previous != text:
            previous, text = text, _BACKSPACE.sub("", text)
    if "\r" not in text:
        return text
    text = re.sub(r"\r+\n", "\n", text)
    return "\n".join(_overwrite_line(line) for line in text.split("\n"))


def append_stream(old: str, chunk: str) -> str:
    """The stream text after `chunk` arrives; only the last line of `old` can change."""
    start = old.rfind("\n") + 1
    return old[:start] + terminal_text(old[start:] + chunk)


@dataclass(frozen=True)
class StreamEdit:
    """`old` + chunk as one edit of its end: drop `delete_bytes` at `start_byte`, add `insert`."""

    text: str
    size: int
    start_byte: int
    delete_bytes: int
    insert: str


def stream_edit(old: str, old_size: int, chunk: str) -> StreamEdit:
    """Like `append_stream`, in time proportional to the last line, not the whole text
    (`old_size` is `old`'s UTF-8 length, which pycrdt's `len(Text)` gives for free)."""
    line_start = old.rfind("\n") + 1
    old_line = old[line_start:]
    new_line = terminal_text(old_line + chunk)
    same = _common_prefix(old_line, new_line)
    removed, inserted = old_line[same:], new_line[same:]
    start_byte = old_size - utf8_len(removed)
    text = old[: line_start + same] + inserted
    return StreamEdit(text, start_byte + utf8_len(inserted), start_byte, utf8_len(removed), inserted)


def apply_edit(ytext: Text, edit: StreamEdit) -> None:
    if edit.delete_bytes:
        del ytext[edit.start_byte : edit.start_byte + edit.delete_bytes]
    if edit.insert:
        ytext.insert(edit.start_byte, edit.insert)


def head_bytes(text: str, limit: int) -> str:
    """The longest prefix of `text` within `limit` UTF-8 bytes (never half a character)."""
    return text.encode("utf-8")[: max(limit, 0)].decode("utf-8", errors="ignore")


def tail_bytes(text: str, limit: int) -> str:
    """The longest suffix of `text` within `limit` UTF-8 bytes (never half a character)."""
    if limit <= 0:
        return ""
    return text.encode("utf-8")[-limit:].decode("utf-8", errors="ignore")


def cut_marker(cut: int, limit: int) -> str:
    return f"\n[... {cut:,} bytes cut here; output limit {limit:,} bytes ...]\n"


def cap_text(text: str, limit: int) -> str:
    """`text` if within `limit` bytes, else head + a line saying how much was cut + tail.

    A text that already holds a cut marker keeps its head; the tail loses its oldest part and
    the marker's count grows. After a cut the text is ~70% of `limit`, so a growing stream is
    cut again only after ~30% of `limit` more bytes: appends in between stay cheap.
    """
    size = utf8_len(text)
    if size <= limit:
        return text
    keep_tail = int(limit * 0.3)
    found = _CUT_MARKER.search(text)
    if found is None:
        head = head_bytes(text, int(limit * 0.4))
        rest = text[len(head) :]
        tail = tail_bytes(rest, keep_tail)
        cut = size - utf8_len(head) - utf8_len(tail)
    else:
        head = text[: found.start()]
        rest = text[found.end() :]
        tail = tail_bytes(rest, keep_tail)
        cut = int(found.group(1).replace(",", "")) + utf8_len(rest) - utf8_len(tail)
    return head + cut_marker(cut, limit) + tail


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    low, high = 0, n  # a[:low] == b[:low], a[:high] != b[:high]
    while high - low > 1:
        mid = (low + high) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid
    return low


def _common_suffix(a: str, b: str, limit: int) -> int:
    """Length of the common suffix of `a` and `b`, at most `limit`."""
    if limit <= 0 or a[-1] != b[-1]:
        return 0
    low, high = 1, limit + 1  # a[-low:] == b[-low:], a[-high:] != b[-high:] (or out of limit)
    if a[len(a) - limit :] == b[len(b) - limit :]:
        return limit
    while high - low > 1:
        mid = (low + high) // 2
        if a[len(a) - mid :] == b[len(b) - mid :]:
            low = mid
        else:
            high = mid
    return low


def replace_text(ytext: Text, old: str, new: str) -> None:
    """Turn `ytext` (whose content is `old`) into `new` with one delete and one insert."""
    if old == new:
        return
    prefix = _common_prefix(old, new)
    suffix = _common_suffix(old, new, min(len(old), len(new)) - prefix)
    start = utf8_len(old[:prefix])
    removed = utf8_len(old[prefix : len(old) - suffix])
    inserted = new[prefix : len(new) - suffix]
    if removed:
        del ytext[start : start + removed]
    if inserted:
        ytext.insert(start, inserted)
