"""Turn the kernel's message stream into execution events. Pure: no I/O, no clock.

Rules (Jupyter messaging, as jupyter_server 2.21 + ipykernel 7.4 behave):
- An execution is finished only after BOTH its shell `execute_reply` and its iopub
  `status: idle` (parent msg_id = the request) have arrived, in either order.
- An iopub `status` of `restarting` or `dead` (sent by the server with no parent) means the
  running and queued executions will never get a reply: they are all reported lost at once.
- Output messages are matched to executions by `parent_header.msg_id`; outputs that arrive
  after their execution finished (a thread printing late, `update_display_data`) are still
  reported, as long as the msg_id is among the recent ones this tracker has seen.
- Messages lost with a connection (a frame over the size limit takes what was sent behind it):
  `settle()` finishes the executions that were pending then, once the kernel has answered a
  later request.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

OUTPUT_TYPES = frozenset(
    {
        "stream",
        "display_data",
        "update_display_data",
        "execute_result",
        "error",
        "clear_output",
        "execute_input",
    }
)
LOST_STATES = frozenset({"restarting", "dead"})


@dataclass(frozen=True)
class Output:
    """An iopub message produced by the execution `msg_id` (apply it with `OutputWriter`)."""

    msg_id: str
    msg: dict[str, Any]


@dataclass(frozen=True)
class Finished:
    """`msg_id` is done: both its execute_reply and its idle status arrived."""

    msg_id: str
    reply: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.reply.get("status", "ok"))


@dataclass(frozen=True)
class KernelStatus:
    """The kernel's execution_state changed (busy, idle, starting, restarting, dead...)."""

    state: str


@dataclass(frozen=True)
class KernelLost:
    """The kernel restarted or died: these executions will never finish (fail them)."""

    state: str
    msg_ids: tuple[str, ...]


@dataclass(frozen=True)
class InputRequested:
    """The kernel asks for input (`input()`); answer with `send_input_reply`."""

    msg_id: str
    prompt: str
    password: bool


Event = Output | Finished | KernelStatus | KernelLost | InputRequested


@dataclass
class _Pending:
    reply: dict[str, Any] | None = None
    idle: bool = False


def message_type(msg: dict[str, Any]) -> str:
    return str((msg.get("header") or {}).get("msg_type") or msg.get("msg_type", ""))


@dataclass
class ExecutionTracker:
    """Feed every incoming message to `feed()`; it returns the events it implies."""

    recent_limit: int = 1000
    _pending: OrderedDict[str, _Pending] = field(default_factory=OrderedDict)
    _recent: OrderedDict[str, None] = field(default_factory=OrderedDict)
    _state: str = ""

    @property
    def pending(self) -> tuple[str, ...]:
        """Executions sent and not yet finished, oldest first."""
        return tuple(self._pending)

    def track(self, msg_id: str) -> None:
        """Call when an `execute_request` with this msg_id is sent."""
        self._pending[msg_id] = _Pending()
        self._remember(msg_id)

    def expect_outputs(self, msg_id: str) -> None:
        """Report the outputs of an execution sent by someone else (a run taken over)."""
        self._remember(msg_id)

    def abandon(self, state: str) -> KernelLost | None:
        """Give up on every pending execution (e.g. after a restart through REST)."""
        if not self._pending:
            return None
        lost = KernelLost(state, tuple(self._pending))
        self._pending.clear()
        return lost

    def settle(self, msg_ids: tuple[str, ...]) -> list[Event]:
        """These executions are done (the kernel has answered a request sent after them), but
        their `idle` or reply may have been lost with a connection: finish those still pending.
        A reply that never came is reported with the status "lost"."""
        events: list[Event] = []
        for msg_id in msg_ids:
            pending = self._pending.get(msg_id)
            if pending is None:
                continue
            pending.idle = True
            if pending.reply is None:
                pending.reply = {"status": "lost"}
            events.extend(self._maybe_finished(msg_id))
        return events

    def feed(self, msg: dict[str, Any]) -> list[Event]:
        channel = msg.get("channel")
        msg_type = message_type(msg)
        parent_id = (msg.get("parent_header") or {}).get("msg_id", "")
        content = msg.get("content") or {}
        if channel == "iopub" and msg_type == "status":
            return self._on_status(parent_id, str(content.get("execution_state", "")))
        if channel == "iopub" and msg_type in OUTPUT_TYPES and parent_id in self._recent:
            return [Output(parent_id, msg)]
        if channel == "shell" and msg_type == "execute_reply" and parent_id in self._pending:
            self._pending[parent_id].reply = content
            return self._maybe_finished(parent_id)
        if channel == "stdin" and msg_type == "input_request" and parent_id in self._pending:
            return [InputRequested(parent_id, str(content.get("prompt", "")), bool(content.get("password")))]
        return []

    def _on_status(self, parent_id: str, state: str) -> list[Event]:
        events: list[Event] = []
        if state != self._state:
            self._state = state
            events.append(KernelStatus(state))
        if state in LOST_STATES:
            lost = self.abandon(state)
            if lost is not None:
                events.append(lost)
        elif state == "idle" and parent_id in self._pending:
            self._pending[parent_id].idle = True
            events.extend(self._maybe_finished(parent_id))
        return events

    def _maybe_finished(self, msg_id: str) -> list[Event]:
        pending = self._pending[msg_id]
        if pending.reply is None or not pending.idle:
            return []
        del self._pending[msg_id]
        return [Finished(msg_id, pending.reply)]

    def _remember(self, msg_id: str) -> None:
        self._recent[msg_id] = None
        while len(self._recent) > self.recent_limit:
            self._recent.popitem(last=False)
