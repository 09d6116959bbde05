"""Apply Jupyter iopub messages to code cells of a YNotebook-schema pycrdt Doc. Pure: no I/O.

Rules:
- Same shapes as `jupyter_ydoc.YNotebook.create_ycell`: each output is a Map; a stream output's
  `text` is a Text, every other value plain JSON. `YNotebook(doc).get()` must stay a valid
  nbformat v4 notebook.
- Mutate only inside the caller's transaction (`with doc.transaction(origin=...)`), so the
  caller decides how many messages make one update.
- Cells are found by their `id`, never by a remembered position (collaborators move them).
- Mapping the nbclient way: consecutive stream outputs of one name merge, with `\\r`/`\\b`
  resolved (`kernels.textops`); `clear_output(wait=True)` clears at the next output; one
  notebook-wide display_id map serves `update_display_data` in every cell.
- Stream text is edited with one delete + insert at UTF-8 offsets (`textops.replace_text`);
  other outputs are only ever replaced whole.
- Caps: each output at most `max_output_bytes`, each cell at most `max_cell_bytes`. Over the
  limit the head and the tail are kept, with a line saying how much was cut in between.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from pycrdt import Array, Doc, Map, Text

from kernels import textops
from notebooks import docschema
from notebooks.docschema import CELL_TYPE, EXECUTION_COUNT, EXECUTION_STATE, ID, OUTPUTS

MARKER_KEY = "collab_cut"  # metadata key of the "outputs cut here" marker output
STREAM_OVERHEAD = 64  # JSON around a stream's text, counted towards the cell's size


@dataclass(frozen=True)
class Caps:
    max_output_bytes: int = 1_000_000
    max_cell_bytes: int = 5_000_000

    @classmethod
    def from_settings(cls) -> Caps:
        return cls(settings.KERNEL_MAX_OUTPUT_BYTES, settings.KERNEL_MAX_CELL_BYTES)

    @property
    def output_limit(self) -> int:
        # head (< half the cell) + the newest output must fit in one cell
        return max(1, min(self.max_output_bytes, self.max_cell_bytes // 2))


@dataclass
class _CellState:
    sizes: list[int]
    marker: int | None = None
    cut_outputs: int = 0
    cut_bytes: int = 0


def json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def cap_bundle(data: dict[str, Any], limit: int) -> dict[str, Any]:
    """A mime bundle within `limit` bytes: keep text/plain (capped), drop the large rest."""
    size = json_size(data)
    if size <= limit:
        return data
    plain = data.get("text/plain", "")
    plain = "".join(plain) if isinstance(plain, list) else str(plain)
    dropped = ", ".join(sorted(key for key in data if key != "text/plain"))
    note = f"[output too large: {size:,} bytes, limit {limit:,}; removed: {dropped or 'nothing'}]"
    return {"text/plain": textops.cap_text(plain, limit - len(note) - 200) + "\n" + note}


def cap_error(content: dict[str, Any], limit: int) -> dict[str, Any]:
    ename = textops.cap_text(str(content.get("ename", "")), limit // 8)
    evalue = textops.cap_text(str(content.get("evalue", "")), limit // 4)
    traceback = [str(line) for line in content.get("traceback", [])]
    if json_size(traceback) > limit // 2:
        traceback = textops.cap_text("\n".join(traceback), limit // 2).split("\n")
    return {"output_type": "error", "ename": ename, "evalue": evalue, "traceback": traceback}


class OutputWriter:
    """Writes kernel output into cells of one notebook Doc (see the module rules)."""

    def __init__(self, doc: Doc, caps: Caps | None = None) -> None:
        self.doc = doc
        self.caps = caps or Caps.from_settings()
        self.cells: Array = docschema.cells(doc)
        self._index: dict[str, int] = {}
        self._states: dict[str, _CellState] = {}
        self._clear_on_next: set[str] = set()
        self._display: dict[str, list[tuple[str, int]]] = {}
        self._texts: dict[str, tuple[int, str]] = {}  # cell id -> its last stream (size, text)

    # -- public API -----------------------------------------------------------------------

    def apply(self, cell_id: str, msg: dict[str, Any]) -> bool:
        """Apply one iopub message produced by `cell_id`'s execution; True if the Doc changed."""
        msg_type = msg.get("header", {}).get("msg_type") or msg.get("msg_type", "")
        content = msg.get("content") or {}
        display_id = (content.get("transient") or {}).get("display_id")
        if msg_type == "update_display_data":
            return bool(display_id) and self.update_display(display_id, content)
        if msg_type == "execute_input":
            return self.set_execution_count(cell_id, content.get("execution_count"))
        if msg_type == "clear_output":
            if content.get("wait"):
                self._clear_on_next.add(cell_id)
                return False
            return self.clear(cell_id)
        output = self._output_from(msg_type, content)
        if output is None:
            return False
        changed = False
        if display_id and msg_type in ("display_data", "execute_result"):
            changed = self.update_display(display_id, content)
        if msg_type == "execute_result":
            changed = self.set_execution_count(cell_id, content.get("execution_count")) or changed
        return self._add_output(cell_id, output, display_id) or changed

    def set_execution_count(self, cell_id: str, count: int | None) -> bool:
        cell = self._cell(cell_id)
        if cell is None or cell.get(EXECUTION_COUNT) == count:
            return False
        cell[EXECUTION_COUNT] = count
        return True

    def set_execution_state(self, cell_id: str, state: str) -> bool:
        """JupyterLab's `execution_state` cell key ("idle", "busy"); not part of nbformat."""
        cell = self._cell(cell_id)
        if cell is None or cell.get(EXECUTION_STATE) == state:
            return False
        cell[EXECUTION_STATE] = state
        return True

    def clear(self, cell_id: str) -> bool:
        """Remove every output of the cell now (and forget its display ids)."""
        self._clear_on_next.discard(cell_id)
        self._states.pop(cell_id, None)
        self._texts.pop(cell_id, None)
        for display_id in list(self._display):
            self._display[display_id] = [e for e in self._display[display_id] if e[0] != cell_id]
        outputs = self._outputs(cell_id)
        if outputs is None or len(outputs) == 0:
            return False
        outputs.clear()
        return True

    def fail(self, cell_id: str, message: str, ename: str = "KernelError") -> bool:
        """Append an error output, e.g. "Kernel died while running this cell"."""
        self._clear_on_next.discard(cell_id)
        traceback = [f"\x1b[0;31m{ename}\x1b[0m: {message}"]
        output = {"output_type": "error", "ename": ename, "evalue": message, "traceback": traceback}
        return self._add_output(cell_id, output, None)

    def update_display(self, display_id: str, content: dict[str, Any]) -> bool:
        """Replace data and metadata of every output shown with `display_id`, in any cell."""
        data = cap_bundle(dict(content.get("data") or {}), self.caps.output_limit)
        metadata = dict(content.get("metadata") or {})
        changed = False
        for cell_id, index in self._display.get(display_id, []):
            outputs = self._outputs(cell_id)
            if outputs is None or index >= len(outputs):
                continue
            output = outputs[index]
            if output.get("output_type") not in ("display_data", "execute_result"):
                continue
            output["data"] = data
            output["metadata"] = metadata
            state = self._state(cell_id, outputs)
            state.sizes[index] = json_size(output.to_py())
            changed = True
        return changed

    # -- internals ------------------------------------------------------------------------

    def _output_from(self, msg_type: str, content: dict[str, Any]) -> dict[str, Any] | None:
        limit = self.caps.output_limit
        if msg_type == "stream":
            return {
                "output_type": "stream",
                "name": str(content.get("name", "stdout")),
                "text": str(content.get("text", "")),  # \r and \b resolved when written
            }
        if msg_type in ("display_data", "execute_result"):
            output = {
                "output_type": msg_type,
                "data": cap_bundle(dict(content.get("data") or {}), limit),
                "metadata": dict(content.get("metadata") or {}),
            }
            if msg_type == "execute_result":
                output["execution_count"] = content.get("execution_count")
            return output
        if msg_type == "error":
            return cap_error(content, limit)
        return None

    def _add_output(self, cell_id: str, output: dict[str, Any], display_id: str | None) -> bool:
        if cell_id in self._clear_on_next:
            self.clear(cell_id)
        outputs = self._outputs(cell_id)
        if outputs is None:
            return False
        state = self._state(cell_id, outputs)
        last = outputs[len(outputs) - 1] if len(outputs) else None
        if (
            output["output_type"] == "stream"
            and last is not None
            and last.get("output_type") == "stream"
            and last.get("name") == output["name"]
            and isinstance(last.get("text"), Text)
        ):
            state.sizes[-1] = self._append_stream(cell_id, last["text"], output["text"])
        else:
            if output["output_type"] == "stream":
                text = textops.terminal_text(output["text"])
                output["text"] = textops.cap_text(text, self.caps.output_limit)
            state.sizes.append(json_size(output))
            self._texts.pop(cell_id, None)
            if display_id:
                self._display.setdefault(display_id, []).append((cell_id, len(outputs)))
            if output["output_type"] == "stream":
                output = {**output, "text": Text(output["text"])}
            outputs.append(Map(output))
        self._enforce_cell_cap(cell_id, outputs, state)
        return True

    def _append_stream(self, cell_id: str, ytext: Text, chunk: str) -> int:
        """Merge `chunk` into the cell's last stream output; returns its new size."""
        size = len(ytext)  # UTF-8 bytes in pycrdt 0.14
        cached = self._texts.get(cell_id)
        old = cached[1] if cached is not None and cached[0] == size else str(ytext)
        edit = textops.stream_edit(old, size, chunk)
        if edit.size <= self.caps.output_limit:
            textops.apply_edit(ytext, edit)
            new, new_size = edit.text, edit.size
        else:  # cut head + tail: rare (once per ~30% of the limit), so a full diff is fine
            new = textops.cap_text(edit.text, self.caps.output_limit)
            textops.replace_text(ytext, old, new)
            new_size = len(ytext)
        self._texts[cell_id] = (new_size, new)
        return new_size + STREAM_OVERHEAD

    def _enforce_cell_cap(self, cell_id: str, outputs: Array, state: _CellState) -> None:
        limit = self.caps.max_cell_bytes
        total = sum(state.sizes)
        if total <= limit:
            return
        if state.marker is None:
            position, running = 0, 0
            while position < len(state.sizes) - 1 and running + state.sizes[position] <= limit // 2:
                running += state.sizes[position]
                position += 1
            state.marker = position
            outputs.insert(position, Map(self._marker(state)))
            state.sizes.insert(position, 0)
            self._shift_display(cell_id, position, +1)
        first = state.marker + 1
        while total > limit and first < len(state.sizes) - 1:
            size = state.sizes.pop(first)
            del outputs[first]
            self._shift_display(cell_id, first, -1)
            state.cut_outputs += 1
            state.cut_bytes += size
            total -= size
        marker = self._marker(state)
        current = outputs[state.marker]
        if current.get("metadata") != marker["metadata"]:
            current["data"] = marker["data"]
            current["metadata"] = marker["metadata"]
            state.sizes[state.marker] = json_size(marker)

    def _marker(self, state: _CellState) -> dict[str, Any]:
        text = (
            f"[... {state.cut_outputs:,} outputs ({state.cut_bytes:,} bytes) cut here; "
            f"this cell's output limit is {self.caps.max_cell_bytes:,} bytes ...]"
        )
        cut = {"outputs": state.cut_outputs, "bytes": state.cut_bytes}
        return {"output_type": "display_data", "data": {"text/plain": text}, "metadata": {MARKER_KEY: cut}}

    def _shift_display(self, cell_id: str, position: int, delta: int) -> None:
        for display_id, entries in self._display.items():
            moved = []
            for entry_cell, index in entries:
                if entry_cell != cell_id or index < position:
                    moved.append((entry_cell, index))
                elif delta < 0 and index == position:
                    continue  # that output is gone
                else:
                    moved.append((entry_cell, index + delta))
            self._display[display_id] = moved

    def _state(self, cell_id: str, outputs: Array) -> _CellState:
        """Sizes of the cell's outputs; rebuilt when someone else changed the outputs."""
        state = self._states.get(cell_id)
        if state is not None and len(state.sizes) == len(outputs):
            return state
        state = _CellState(sizes=[])
        for index, output in enumerate(outputs):
            value = output.to_py() if isinstance(output, Map) else output
            state.sizes.append(json_size(value))
            cut = (value.get("metadata") or {}).get(MARKER_KEY) if isinstance(value, dict) else None
            if isinstance(cut, dict):
                state.marker = index
                state.cut_outputs = int(cut.get("outputs", 0))
                state.cut_bytes = int(cut.get("bytes", 0))
        self._states[cell_id] = state
        return state

    def _cell(self, cell_id: str) -> Map | None:
        index = self._index.get(cell_id)
        if index is not None and index < len(self.cells):
            cell = self.cells[index]
            if isinstance(cell, Map) and cell.get(ID) == cell_id:
                return cell
        for index, cell in enumerate(self.cells):
            if isinstance(cell, Map) and cell.get(ID) == cell_id:
                self._index[cell_id] = index
                return cell
        return None

    def _outputs(self, cell_id: str) -> Array | None:
        cell = self._cell(cell_id)
        if cell is None or cell.get(CELL_TYPE) != "code":
            return None
        outputs = cell.get(OUTPUTS)
        if not isinstance(outputs, Array):
            cell[OUTPUTS] = Array()
            outputs = cell[OUTPUTS]
        return outputs
