"""Loaded INSIDE the local Jupyter Server (`kernels.sandbox`): a kernel message over the server's
size limit is dropped alone, not with the rest of the kernel's output.

The server reads kernel messages up to `SandboxKernelManager.max_message_mb` (ZMQ's MAXMSGSIZE), so
a larger one is never buffered. But ZMQ treats it as a protocol error: it ends that connection for
good, and the messages queued behind it (the run's `idle` status, usually) go with it. The iopub
stream of a websocket would then never hear from its kernel again: no later output of any cell,
and a run that never ends. So every iopub stream the server opens for a kernel:
- watches its socket (a ZMQ monitor). A connection that ends with no retry from ZMQ was ended by
  a message over the limit (a kernel that dies or restarts is retried by ZMQ, and the server
  reports those itself);
- then connects again at once, and tells its listener, as a message from the kernel: an `error`
  output, in reply to the request whose message it saw last, naming the limit;
- and owes the requests that were busy then their `idle` status. A `kernel_info_request` sent on
  a shell socket of its own is answered only once those requests are done (the kernel handles
  shell requests in order), so after its reply (and `SETTLE_GRACE` for their last messages on
  iopub, or its own `idle` on iopub, whichever comes first) each one still owed gets an `idle`.
What the kernel sent behind that message until the reconnection is lost, nothing else. The
monitor is stopped before its socket closes (libzmq's I/O thread blocks for good on an event for a
monitor socket nobody reads). Kernels run unsandboxed (`KERNEL_SANDBOX=off`) get neither the
limit nor this guard; the bridge's own frame limit (`kernels.kernelws`) bounds those. No Django.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import OrderedDict
from typing import Any

import zmq
from jupyter_client.manager import AsyncKernelManager
from jupyter_server.services.kernels.kernelmanager import ServerKernelManager
from zmq.eventloop.zmqstream import ZMQStream
from zmq.utils.monitor import parse_monitor_message

DELIMITER = b"<IDS|MSG>"
RETRY_GRACE = 0.05  # s: ZMQ reports a retry within microseconds of the connection ending
SETTLE_GRACE = 0.5  # s: for the done requests' last messages on iopub, after the probe's reply
MAX_BUSY = 100  # requests remembered as busy (a kernel handles one shell request at a time)


def too_large_message(limit_mb: int) -> str:
    return f"Output of more than {limit_mb} MB exceeds the limit of {limit_mb} MB and was not kept."


class GuardedKernelManager(ServerKernelManager):
    """The server's manager of one kernel, with guarded iopub streams (see the module rules)."""

    def connect_iopub(self, identity: bytes | None = None) -> ZMQStream:
        # A ZMQStream needs a plain socket where this context makes asyncio ones: make one the way
        # jupyter_client's own streams are made (`as_zmqstream`). Not a shadow of an asyncio
        # socket: that one would close whichever socket has its address once it is collected.
        socket_class = self.context._socket_class
        self.context._socket_class = zmq.Socket
        try:
            socket = AsyncKernelManager.connect_iopub(self, identity=identity)
        finally:
            self.context._socket_class = socket_class
        return GuardedIopub(socket, self, getattr(self.parent, "max_message_mb", 32))


class GuardedIopub(ZMQStream):
    """An iopub stream that outlives a message over the limit (see the module rules). The server
    receives with copy=True: frames are bytes."""

    def __init__(self, socket: zmq.Socket, manager: ServerKernelManager, limit_mb: int) -> None:
        super().__init__(socket, manager.loop)
        self.manager = manager
        self.session = manager.session  # holds the kernel's key: what it signs, the server accepts
        self.limit_mb = limit_mb
        self.url = manager._make_url("iopub")
        self._listener: Any = None  # what the stream's owner registered
        self._last_parent = b"{}"
        self._busy: OrderedDict[str, bytes] = OrderedDict()  # msg_id -> parent header, busy now
        self._owed: dict[str, bytes] = {}  # busy when the connection was dropped, idle not seen
        self._probe: ZMQStream | None = None
        self._probe_id = ""
        self._covered: set[str] = set()  # owed when the probe was sent: its reply settles them
        self._retry_check: object | None = None
        self._settling: object | None = None
        self._monitor = ZMQStream(_monitor_socket(self.socket), self.io_loop)
        self._monitor.on_recv(self._on_monitor)

    # the stream --------------------------------------------------------------------------------

    def on_recv(self, callback: Any, copy: bool = True) -> None:  # type: ignore[override]
        """The stream's one receive callback (`on_recv_stream` registers through here too)."""
        self._listener = callback
        super().on_recv(None if callback is None else self._heard, copy)

    def _heard(self, frames: list[bytes]) -> None:
        self._listener(frames)
        self._note(frames)  # after: what it triggers follows the message that triggered it

    def _note(self, frames: list[bytes]) -> None:
        """Remember the parent of the last message, and which requests are busy."""
        parts = _parts(frames)
        if parts is None:
            return
        header, self._last_parent, content = parts
        if self.session.unpack(header).get("msg_type") != "status":
            return
        msg_id = str(self.session.unpack(self._last_parent).get("msg_id", ""))
        state = self.session.unpack(content).get("execution_state")
        if state == "busy" and msg_id:
            self._busy[msg_id] = self._last_parent
            while len(self._busy) > MAX_BUSY:
                self._busy.popitem(last=False)
        elif state == "idle":
            self._busy.pop(msg_id, None)
            self._owed.pop(msg_id, None)
            if msg_id and msg_id == self._probe_id:
                self._settle()

    def _tell(self, msg_type: str, content: dict[str, Any], parent: bytes) -> None:
        """A message to the stream's listener as if the kernel had sent it."""
        if self._listener is None or self.closed():
            return
        msg = self.session.msg(msg_type, content, parent=self.session.unpack(parent))
        self._listener(self.session.serialize(msg, ident=msg_type.encode()))

    # the connection ------------------------------------------------------------------------

    def _on_monitor(self, frames: list[bytes]) -> None:
        event = parse_monitor_message(frames)["event"]
        if event == zmq.EVENT_DISCONNECTED:
            self._cancel("_retry_check")
            self._retry_check = self.io_loop.call_later(RETRY_GRACE, self._dropped)
        elif event == zmq.EVENT_CONNECT_RETRIED:
            self._cancel("_retry_check")  # ZMQ reconnects by itself: the kernel went away

    def _dropped(self) -> None:
        """The connection ended and ZMQ will not retry: a message over the limit."""
        self._retry_check = None
        if self.closed():
            return
        with contextlib.suppress(zmq.ZMQError):
            self.socket.disconnect(self.url)
        self.socket.connect(self.url)
        self.manager.log.warning(
            "Kernel %s sent a message over %d MB: dropped it, reconnected its output channel",
            self.manager.kernel_id,
            self.limit_mb,
        )
        message = too_large_message(self.limit_mb)
        traceback = [f"\x1b[0;31mOutputTooLarge\x1b[0m: {message}"]
        content = {"ename": "OutputTooLarge", "evalue": message, "traceback": traceback}
        self._tell("error", content, self._last_parent)
        self._owed.update(self._busy)
        self._probe_if_owed()

    def _probe_if_owed(self) -> None:
        if self._probe is not None or not self._owed:
            return
        self._covered = set(self._owed)
        self._probe = self.manager.connect_shell()
        self._probe.on_recv(self._on_probe_reply)
        self._probe_id = self.session.send(self._probe, "kernel_info_request")["header"]["msg_id"]

    def _on_probe_reply(self, frames: list[bytes]) -> None:
        parts = _parts(frames)
        if parts is None or self.session.unpack(parts[1]).get("msg_id") != self._probe_id:
            return
        if self._settling is None:
            self._settling = self.io_loop.call_later(SETTLE_GRACE, self._settle)

    def _settle(self) -> None:
        """The requests owed when the probe was sent are done: their `idle` statuses."""
        self._cancel("_settling")
        self._close_probe()
        covered, self._covered = self._covered, set()
        for msg_id in covered & set(self._owed):
            self._busy.pop(msg_id, None)
            self._tell("status", {"execution_state": "idle"}, self._owed.pop(msg_id))
        self._probe_if_owed()  # dropped again since the probe was sent

    # cleanup -------------------------------------------------------------------------------

    def close(self, linger: int | None = None) -> None:
        """The monitor stops first (see the module rules), then the stream."""
        self._cancel("_retry_check")
        self._cancel("_settling")
        self._close_probe()
        if self.socket is not None and not self.socket.closed:
            self.socket.disable_monitor()
        if not self._monitor.closed():
            self._monitor.close(linger=0)
        super().close(linger)

    def _cancel(self, name: str) -> None:
        timer = getattr(self, name)
        if timer is not None:
            self.io_loop.remove_timeout(timer)
            setattr(self, name, None)

    def _close_probe(self) -> None:
        probe, self._probe, self._probe_id = self._probe, None, ""
        if probe is not None and not probe.closed():
            probe.close(linger=0)


_monitors = itertools.count()


def _monitor_socket(socket: zmq.Socket) -> zmq.Socket:
    """A plain (not asyncio) socket receiving `socket`'s disconnections and ZMQ's retries. No
    high-water mark: libzmq blocks its I/O thread on a full monitor socket."""
    address = f"inproc://iopub-guard-{next(_monitors)}"
    socket.monitor(address, zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED)
    monitor = socket.context.socket(zmq.PAIR, socket_class=zmq.Socket)
    monitor.rcvhwm = 0
    monitor.connect(address)
    return monitor


def _parts(frames: list[bytes]) -> tuple[bytes, bytes, bytes] | None:
    """A serialized kernel message's header, parent header and content; None if malformed."""
    if DELIMITER not in frames:
        return None
    at = frames.index(DELIMITER)  # before it: routing identities; after: signature, header...
    if len(frames) < at + 6:
        return None
    return frames[at + 2], frames[at + 3], frames[at + 5]
