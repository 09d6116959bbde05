"""Loaded INSIDE the local Jupyter Server (`kernels.sandbox`): a kernel message over the server's
size limit is dropped alone, not with the rest of the kernel's messages.

The server reads kernel messages up to `SandboxKernelManager.max_message_mb` (ZMQ's MAXMSGSIZE), so
a larger one is never buffered. But ZMQ treats it as a protocol error: it ends that connection for
good, and the messages queued behind it go with it. The stream of a websocket would then never hear
from its kernel again on that channel. So every stream the server opens for a kernel watches its
socket (a ZMQ monitor): a connection that ends with no retry from ZMQ was ended by a message over
the limit (a kernel that dies or restarts is retried by ZMQ, and the server reports those itself).
It then reads what that connection still holds (what the kernel sent before that message:
disconnecting with it unread lost it, and a SUB socket could abort the whole server in libzmq,
`Assertion failed: !_more (src/fq.cpp:80)`), connects again, and makes up for what was lost, as
messages from the kernel:
- iopub (an output over the limit): an `error` output, in reply to the request whose message it
  saw last, naming the limit; and the `idle` status owed to the requests that were busy then. A
  `kernel_info_request` sent on a shell socket of its own is answered only once those requests
  are done (the kernel handles shell requests in order), so after its reply (and `SETTLE_GRACE`
  for their last messages on iopub, or its own `idle` on iopub, whichever comes first) each one
  still owed gets an `idle`;
- shell and control (a reply over the limit: a 40 MB `set_next_input` in an execute_reply): the
  oldest request without a reply is the one whose reply it was (a kernel answers in order). It
  gets an error reply naming the limit, and its cell an `error` output through the iopub stream
  of the same websocket. Replies the kernel sent behind it before the reconnection are lost too:
  a `kernel_info_request` sent on the same socket is answered after them, and each request still
  without a reply then gets an error reply;
- stdin (a prompt over the limit: `input('x' * 40_000_000)`): the kernel waits for an answer that
  nobody will give. It gets an empty one, and the running cell an `error` output saying why.
What the kernel sent behind that message until the reconnection is lost, nothing else. What the
guard keeps is the kernel's to choose (its code can publish any status with any parent), so it is
bounded: parents of up to MAX_PARENT_BYTES, MAX_BUSY busy and MAX_BUSY owed per stream; a message
with no request for parent (`iopub_welcome`, after each reconnection) does not change which
request is running. A kernel that goes away (ZMQ retries) owes nothing more: a probe it never
answered is forgotten. The monitor is stopped before its socket closes (libzmq's I/O thread blocks
for good on an event for a monitor socket nobody reads). Kernels run unsandboxed
(`KERNEL_SANDBOX=off`) get neither the limit nor this guard; the bridge's own frame limit
(`kernels.kernelws`) bounds those. No Django.
"""

from __future__ import annotations

import contextlib
import itertools
import weakref
from collections import OrderedDict
from typing import Any

import zmq
from jupyter_client.manager import AsyncKernelManager
from jupyter_server.services.kernels.kernelmanager import ServerKernelManager
from zmq.eventloop.zmqstream import ZMQStream
from zmq.utils.monitor import parse_monitor_message

DELIMITER = b"<IDS|MSG>"
RETRY_GRACE = 0.05  # s: ZMQ reports a retry within microseconds of the connection ending
DRAIN_BATCH = 10  # messages of an ended connection read per turn of the server's loop
SETTLE_GRACE = 0.5  # s: for the done requests' last messages on iopub, after the probe's reply
MAX_BUSY = 100  # requests remembered as busy, or owed an idle (a kernel handles one shell request at a time)
MAX_PARENT_BYTES = 16 << 10  # a request's header has a few hundred; the kernel's code may make up any
MAX_UNANSWERED = 1000  # requests remembered as waiting for their reply, per stream
LOST_BEHIND = "The kernel's reply was lost behind one over the size limit."


def too_large_message(limit_mb: int) -> str:
    return f"Output of more than {limit_mb} MB exceeds the limit of {limit_mb} MB and was not kept."


def error_content(ename: str, message: str) -> dict[str, Any]:
    return {"ename": ename, "evalue": message, "traceback": [f"\x1b[0;31m{ename}\x1b[0m: {message}"]}


class GuardedKernelManager(ServerKernelManager):
    """The server's manager of one kernel, with guarded streams (see the module rules)."""

    def connect_iopub(self, identity: bytes | None = None) -> ZMQStream:
        stream = GuardedIopub(self._plain_socket("iopub", identity), self, self._limit_mb())
        if identity:  # a websocket's: its other channels' streams have the same identity
            self._outputs()[identity] = stream
        return stream

    def connect_shell(self, identity: bytes | None = None) -> ZMQStream:
        stream = GuardedReplies(self._plain_socket("shell", identity), self, self._limit_mb(), "shell")
        if identity:
            self._shells()[identity] = stream
        return stream

    def connect_control(self, identity: bytes | None = None) -> ZMQStream:
        return GuardedReplies(self._plain_socket("control", identity), self, self._limit_mb(), "control")

    def connect_stdin(self, identity: bytes | None = None) -> ZMQStream:
        return GuardedStdin(self._plain_socket("stdin", identity), self, self._limit_mb(), "stdin")

    def plain_stream(self, channel: str) -> ZMQStream:
        """An unguarded stream of its own (a guard's probe)."""
        return ZMQStream(self._plain_socket(channel, None), self.loop)

    def output_stream(self, identity: bytes) -> GuardedIopub | None:
        """The iopub stream opened with `identity` (the same websocket's), if still open."""
        stream = self._outputs().get(identity) if identity else None
        return stream if stream is not None and not stream.closed() else None

    def shell_stream(self, identity: bytes) -> GuardedReplies | None:
        """The shell stream opened with `identity` (the same websocket's), if still open."""
        stream = self._shells().get(identity) if identity else None
        return stream if stream is not None and not stream.closed() else None

    def _outputs(self) -> weakref.WeakValueDictionary:
        return self.__dict__.setdefault("_guarded_outputs", weakref.WeakValueDictionary())

    def _shells(self) -> weakref.WeakValueDictionary:
        return self.__dict__.setdefault("_guarded_shells", weakref.WeakValueDictionary())

    def _limit_mb(self) -> int:
        return getattr(self.parent, "max_message_mb", 32)

    def _plain_socket(self, channel: str, identity: bytes | None) -> zmq.Socket:
        # A ZMQStream needs a plain socket where this context makes asyncio ones: make one the way
        # jupyter_client's own streams are made (`as_zmqstream`). Not a shadow of an asyncio
        # socket: that one would close whichever socket has its address once it is collected.
        socket_class = self.context._socket_class
        self.context._socket_class = zmq.Socket
        try:
            return getattr(AsyncKernelManager, "connect_" + channel)(self, identity=identity)
        finally:
            self.context._socket_class = socket_class


class GuardedStream(ZMQStream):
    """A kernel channel's stream that outlives a message over the limit: it reconnects, then
    `_after_drop` makes up for what was lost (see the module rules). The server receives with
    copy=True: frames are bytes."""

    def __init__(
        self, socket: zmq.Socket, manager: GuardedKernelManager, limit_mb: int, channel: str
    ) -> None:
        super().__init__(socket, manager.loop)
        self.manager = manager
        self.session = manager.session  # holds the kernel's key: what it signs, the server accepts
        self.limit_mb = limit_mb
        self.channel = channel
        self.url = manager._make_url(channel)
        self._listener: Any = None  # what the stream's owner registered
        self._retry_check: object | None = None
        self._monitor = ZMQStream(_monitor_socket(self.socket), self.io_loop)
        self._monitor.on_recv(self._on_monitor)

    def on_recv(self, callback: Any, copy: bool = True) -> None:  # type: ignore[override]
        """The stream's one receive callback (`on_recv_stream` registers through here too)."""
        self._listener = callback
        super().on_recv(None if callback is None else self._heard, copy)

    def _heard(self, frames: list[bytes]) -> None:
        self._listener(frames)

    def _tell(self, msg_type: str, content: dict[str, Any], parent: bytes) -> None:
        """A message to the stream's listener as if the kernel had sent it."""
        if self._listener is None or self.closed():
            return
        msg = self.session.msg(msg_type, content, parent=self.session.unpack(parent))
        self._listener(self.session.serialize(msg, ident=msg_type.encode()))

    def _on_monitor(self, frames: list[bytes]) -> None:
        event = parse_monitor_message(frames)["event"]
        if event == zmq.EVENT_DISCONNECTED:
            self._cancel("_retry_check")
            self._retry_check = self.io_loop.call_later(RETRY_GRACE, self._dropped)
        elif event == zmq.EVENT_CONNECT_RETRIED:
            self._cancel("_retry_check")  # ZMQ reconnects by itself: the kernel went away
            self._kernel_went_away()

    def _kernel_went_away(self) -> None:
        """What was owed before is not coming (the server reports a kernel lost)."""

    def _dropped(self) -> None:
        """The connection ended and ZMQ will not retry: a message over the limit."""
        self._retry_check = None
        if self.closed():
            return
        # What the kernel sent before that message is still queued: read it first, a batch per
        # turn of the loop (the other kernels' messages go on meanwhile). Disconnecting with it
        # unread lost it, and could abort the whole server (libzmq asserts when a SUB socket's
        # connection ends between the frames of a message a poll already started).
        if self.flush(zmq.POLLIN, limit=DRAIN_BATCH) >= DRAIN_BATCH and not self.closed():
            self._retry_check = self.io_loop.call_later(0, self._dropped)
            return
        if self.closed():
            return
        with contextlib.suppress(zmq.ZMQError):
            self.socket.disconnect(self.url)
        self.socket.connect(self.url)
        self.manager.log.warning(
            "Kernel %s sent a message over %d MB on %s: dropped it, reconnected",
            self.manager.kernel_id,
            self.limit_mb,
            self.channel,
        )
        self._after_drop()

    def _after_drop(self) -> None:
        raise NotImplementedError

    def _output_stream(self) -> GuardedIopub | None:
        """The same websocket's iopub stream (where a cell's outputs go)."""
        return self.manager.output_stream(self.socket.getsockopt(zmq.ROUTING_ID))

    def close(self, linger: int | None = None) -> None:
        """The monitor stops first (see the module rules), then the stream."""
        self._cancel("_retry_check")
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


class GuardedIopub(GuardedStream):
    """An iopub stream: an output over the limit is told to its cell, and the busy requests'
    `idle` statuses lost with it are made up for."""

    def __init__(self, socket: zmq.Socket, manager: GuardedKernelManager, limit_mb: int) -> None:
        super().__init__(socket, manager, limit_mb, "iopub")
        self._last_parent = b"{}"
        self._busy: OrderedDict[str, bytes] = OrderedDict()  # msg_id -> parent header, busy now
        self._owed: OrderedDict[str, bytes] = OrderedDict()  # busy at a drop, idle not seen yet
        self._probe: ZMQStream | None = None
        self._probe_id = ""
        self._covered: set[str] = set()  # owed when the probe was sent: its reply settles them
        self._settling: object | None = None

    @property
    def running_parent(self) -> bytes:
        """The header of the request whose message it saw last (the cell running, usually)."""
        return self._last_parent

    def _heard(self, frames: list[bytes]) -> None:
        self._listener(frames)
        self._note(frames)  # after: what it triggers follows the message that triggered it

    def _note(self, frames: list[bytes]) -> None:
        """Remember the parent of the last message, and which requests are busy. A message with no
        request for parent (ipykernel's `iopub_welcome`, which follows every reconnection) is not
        one; a parent over MAX_PARENT_BYTES was made up by the kernel's code and is not kept."""
        parts = _parts(frames)
        if parts is None:
            return
        header, parent, content = parts
        msg_id = (
            str(_unpack(self.session, parent).get("msg_id", "")) if len(parent) <= MAX_PARENT_BYTES else ""
        )
        if not msg_id:
            return
        self._last_parent = parent
        if _unpack(self.session, header).get("msg_type") != "status":
            return
        state = _unpack(self.session, content).get("execution_state")
        if state == "busy":
            self._busy[msg_id] = self._last_parent
            while len(self._busy) > MAX_BUSY:
                self._busy.popitem(last=False)
        elif state == "idle":
            self._busy.pop(msg_id, None)
            self._owed.pop(msg_id, None)
            if msg_id and msg_id == self._probe_id:
                self._settle()

    def tell_error(self, ename: str, message: str, parent: bytes) -> None:
        """An `error` output for the request with header `parent`."""
        self._tell("error", error_content(ename, message), parent)

    def _after_drop(self) -> None:
        self.tell_error("OutputTooLarge", too_large_message(self.limit_mb), self._last_parent)
        self._owed.update(self._busy)
        while len(self._owed) > MAX_BUSY:
            self._owed.popitem(last=False)
        self._probe_if_owed()

    def _kernel_went_away(self) -> None:
        """Its requests will never be idle, and a probe sent to it will never be answered (a new
        kernel's drops need probes of their own)."""
        self._cancel("_settling")
        self._close_probe()
        self._busy.clear()
        self._owed.clear()
        self._covered = set()

    def _probe_if_owed(self) -> None:
        if self._probe is not None or not self._owed:
            return
        self._covered = set(self._owed)
        self._probe = self.manager.plain_stream("shell")
        self._probe.on_recv(self._on_probe_reply)
        self._probe_id = self.session.send(self._probe, "kernel_info_request")["header"]["msg_id"]

    def _on_probe_reply(self, frames: list[bytes]) -> None:
        parts = _parts(frames)
        if parts is None or _unpack(self.session, parts[1]).get("msg_id") != self._probe_id:
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

    def close(self, linger: int | None = None) -> None:
        self._cancel("_settling")
        self._close_probe()
        super().close(linger)

    def _close_probe(self) -> None:
        probe, self._probe, self._probe_id = self._probe, None, ""
        if probe is not None and not probe.closed():
            probe.close(linger=0)


class GuardedReplies(GuardedStream):
    """A shell or control stream: a reply over the limit, and those lost behind it, are made up
    for with error replies (see the module rules)."""

    def __init__(
        self, socket: zmq.Socket, manager: GuardedKernelManager, limit_mb: int, channel: str
    ) -> None:
        super().__init__(socket, manager, limit_mb, channel)
        self._unanswered: OrderedDict[str, bytes] = OrderedDict()  # msg_id -> request header
        self._probe_id = ""
        self._owed: OrderedDict[str, bytes] = OrderedDict()  # unanswered when the probe was sent

    def running_execute(self) -> bytes | None:
        """The header of the oldest execute_request not answered yet (the cell running)."""
        for request in self._unanswered.values():
            if _unpack(self.session, request).get("msg_type") == "execute_request":
                return request
        return None

    def send_multipart(self, msg_parts: Any, *args: Any, **kwargs: Any) -> Any:
        parts = _parts(msg_parts)
        if parts is not None:
            msg_id = str(_unpack(self.session, parts[0]).get("msg_id", ""))
            if msg_id:
                self._unanswered[msg_id] = parts[0]
                while len(self._unanswered) > MAX_UNANSWERED:
                    self._unanswered.popitem(last=False)
        return super().send_multipart(msg_parts, *args, **kwargs)

    def _heard(self, frames: list[bytes]) -> None:
        parts = _parts(frames)
        msg_id = str(_unpack(self.session, parts[1]).get("msg_id", "")) if parts is not None else ""
        self._unanswered.pop(msg_id, None)
        if msg_id and msg_id == self._probe_id:
            self._settle()  # its own request: not passed on
            return
        self._owed.pop(msg_id, None)
        self._listener(frames)

    def _kernel_went_away(self) -> None:
        self._unanswered.clear()
        self._owed.clear()
        self._probe_id = ""

    def _after_drop(self) -> None:
        if self._unanswered:
            _, request = self._unanswered.popitem(last=False)
            message = too_large_message(self.limit_mb)
            if self.session.unpack(request).get("msg_type") == "execute_request":
                output = self._output_stream()
                if output is not None:
                    output.tell_error("OutputTooLarge", message, request)
            self._answer(request, "OutputTooLarge", message)
        if self._unanswered and not self._probe_id:
            self._owed = OrderedDict(self._unanswered)
            self._probe_id = self.session.send(self, "kernel_info_request")["header"]["msg_id"]

    def _settle(self) -> None:
        """The kernel answered the probe: replies still owed were lost with the connection."""
        owed, self._owed, self._probe_id = self._owed, OrderedDict(), ""
        for msg_id, request in owed.items():
            if self._unanswered.pop(msg_id, None) is not None:
                self._answer(request, "ReplyLost", LOST_BEHIND)

    def _answer(self, request: bytes, ename: str, message: str) -> None:
        msg_type = str(self.session.unpack(request).get("msg_type", ""))
        reply_type = msg_type.removesuffix("_request") + "_reply"
        self._tell(reply_type, {"status": "error", **error_content(ename, message)}, request)


class GuardedStdin(GuardedStream):
    """A stdin stream: a prompt over the limit is answered with an empty line, and the running
    cell told why (see the module rules)."""

    def _after_drop(self) -> None:
        output = self._output_stream()
        if output is not None:
            message = (
                f"The kernel asked for input with a prompt of more than {self.limit_mb} MB, over the "
                "limit: it was not shown, and an empty line was given as the answer."
            )
            # The cell asking is the one running on the same websocket's shell: iopub's last
            # parent may still be an earlier request's, its messages read after this one.
            shell = self.manager.shell_stream(self.socket.getsockopt(zmq.ROUTING_ID))
            running = shell.running_execute() if shell is not None else None
            output.tell_error("PromptTooLarge", message, running or output.running_parent)
        self.session.send(self, "input_reply", {"value": "", "status": "ok"})


_monitors = itertools.count()


def _monitor_socket(socket: zmq.Socket) -> zmq.Socket:
    """A plain (not asyncio) socket receiving `socket`'s disconnections and ZMQ's retries. No
    high-water mark: libzmq blocks its I/O thread on a full monitor socket."""
    address = f"inproc://channel-guard-{next(_monitors)}"
    socket.monitor(address, zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED)
    monitor = socket.context.socket(zmq.PAIR, socket_class=zmq.Socket)
    monitor.rcvhwm = 0
    monitor.connect(address)
    return monitor


def _unpack(session: Any, frame: bytes) -> dict[str, Any]:
    """A header or content the kernel sent, as a dict; {} if it is not a JSON object (what the
    kernel's code sends may be anything: the guard must not fail on it)."""
    try:
        value = session.unpack(frame)
    except (ValueError, TypeError):  # not JSON (json.JSONDecodeError is a ValueError)
        return {}
    return value if isinstance(value, dict) else {}


def _parts(frames: list[bytes]) -> tuple[bytes, bytes, bytes] | None:
    """A serialized kernel message's header, parent header and content; None if malformed."""
    if DELIMITER not in frames:
        return None
    at = frames.index(DELIMITER)  # before it: routing identities; after: signature, header...
    if len(frames) < at + 6:
        return None
    return frames[at + 2], frames[at + 3], frames[at + 5]
