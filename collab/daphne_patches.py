"""Four changes to daphne's websocket protocol. Runs in Twisted's reactor thread; never blocks.

Close reasons: daphne drops the `reason` of an ASGI `websocket.close`; people should read why
they were disconnected, so pass it on to the close frame.

Autobahn's `sendClose` accepts only 1000 and 3000-4999 and a reason of at most 123 UTF-8 bytes,
and raises otherwise: an exception here would escape into whatever task closed the socket (a
room's writer, say), so a code it refuses becomes 4500 and a long reason is cut.

Send buffer: Twisted buffers whatever a client does not read, without limit, so one client that
stops reading would hold every frame of its room in the worker's memory. When more than
`COLLAB_MAX_SEND_BUFFER` bytes wait for a socket (beyond the largest frame it was sent: a
notebook larger than the limit reaches a joiner as one frame, which may take a while), it is
closed with 4429 and a reason, and cut
`COLLAB_SLOW_CLOSE_GRACE` seconds later if the close frame is not through by then (a client
that reads nothing never reads it); its buffer is freed with it.

One frame for many sockets: a room sends each update to every socket of the room. Going
through Channels' `send` and autobahn's `sendMessage` costs a chain of coroutines and a framing
per socket; server frames are never masked, so without per-message compression the same
websocket frame bytes serve every socket. Under daphne each websocket's scope carries its
protocol (`SCOPE_KEY`), and `write_frame` writes an `Outgoing` frame, encoded once, straight to
the connection, with the same send-buffer limit: Twisted's buffer when something already waits
there, else the socket at once (what does not fit goes to Twisted's buffer, in order).

Receive queue: daphne puts every frame it reads into the consumer's queue, without limit, so a
client sending faster than its room handles the messages (presence at the size limit, say)
grew a worker by hundreds of MB a second. Once `RECEIVE_QUEUE_HIGH` messages, or
`RECEIVE_QUEUE_MAX_BYTES` of them, wait, the connection stops reading (`pauseProducing`), and
reads again when at most `RECEIVE_QUEUE_LOW` messages and `RECEIVE_QUEUE_LOW_BYTES` wait: TCP's
flow control then holds the sender back, and the worker holds at most a few messages (and
about one largest message) per socket."""

from __future__ import annotations

import logging
import struct
import sys

from daphne.ws_protocol import WebSocketProtocol
from django.conf import settings

from collab.socket import Outgoing

log = logging.getLogger(__name__)

_original = WebSocketProtocol.handle_reply
SERVER_ERROR = 4500  # an application close code for "something failed on the server"
MAX_REASON_BYTES = 123
TOO_SLOW = 4429
TOO_SLOW_REASON = "Your connection could not keep up with this notebook's changes. Reconnecting."


def close_args(code: int | None, reason: str | None) -> tuple[int, str | None]:
    code = code or 1000
    if code != 1000 and not 3000 <= code <= 4999:
        code = SERVER_ERROR
    if reason:
        reason = reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")
    return code, reason or None


def buffered_bytes(transport) -> int:
    """Bytes Twisted holds for this connection and has not handed to the kernel yet (its
    `dataBuffer` keeps what was written until the next refill, `offset` marks how far)."""
    written = getattr(transport, "offset", 0)
    return len(getattr(transport, "dataBuffer", b"")) - written + getattr(transport, "_tempDataLen", 0)


def _too_slow(self) -> bool:
    if getattr(self, "_closing_slow", False):
        return True  # already closing: drop what the room still sends
    waiting = buffered_bytes(self.transport)
    largest = getattr(self, "_largest_frame", 0)
    if waiting <= largest:
        return False  # the common case, once per socket and frame: no settings lookup
    limit = settings.COLLAB["MAX_SEND_BUFFER"]
    if not limit or waiting <= limit + largest:
        return False
    self._closing_slow = True
    log.warning("a client does not read (%d bytes waiting); closing its socket with %d", waiting, TOO_SLOW)
    self.sendClose(code=TOO_SLOW, reason=TOO_SLOW_REASON)
    from twisted.internet import reactor  # daphne installs its reactor before importing us

    transport = self.transport
    reactor.callLater(settings.COLLAB["SLOW_CLOSE_GRACE"], _cut, transport)
    return True


def _sending(self, size: int) -> None:
    if size > getattr(self, "_largest_frame", 0):
        self._largest_frame = size


def _cut(transport) -> None:
    if transport.connected:
        transport.abortConnection()


RECEIVE_QUEUE_HIGH = 16
RECEIVE_QUEUE_LOW = 4
RECEIVE_QUEUE_MAX_BYTES = 4 << 20  # a few large messages weigh as much as many small ones
RECEIVE_QUEUE_LOW_BYTES = 1 << 20
RECEIVE_CHECK_EVERY = 0.005  # seconds between looks at a paused socket's queue
_original_on_message = WebSocketProtocol.onMessage


def _waiting_bytes(queue) -> int:
    """What the messages waiting in an asyncio.Queue weigh (at most RECEIVE_QUEUE_HIGH of them)."""
    return sum(len(m.get("bytes") or m.get("text") or "") for m in queue._queue)


def _on_message(self, payload, isBinary):
    _original_on_message(self, payload, isBinary)
    queue = getattr(self, "application_queue", None)
    if queue is None or getattr(self, "_collab_paused", False):
        return
    if queue.qsize() < RECEIVE_QUEUE_HIGH and _waiting_bytes(queue) < RECEIVE_QUEUE_MAX_BYTES:
        return
    self._collab_paused = True
    self.transport.pauseProducing()
    _resume_when_drained(self)


def _resume_when_drained(self) -> None:
    from twisted.internet import reactor  # daphne installs its reactor before importing us

    if self.state == WebSocketProtocol.STATE_CLOSED:
        return
    queue = self.application_queue
    if queue.qsize() > RECEIVE_QUEUE_LOW or _waiting_bytes(queue) > RECEIVE_QUEUE_LOW_BYTES:
        reactor.callLater(RECEIVE_CHECK_EVERY, _resume_when_drained, self)
        return
    self._collab_paused = False
    self.transport.resumeProducing()


def _handle_reply(self, message):
    if message.get("type") == "websocket.send" and self.state == self.STATE_OPEN:
        if _too_slow(self):
            return None
        _sending(self, len(message.get("bytes") or message.get("text") or ""))
    if message.get("type") == "websocket.close" and self.state != self.STATE_CONNECTING:
        code, reason = close_args(message.get("code"), message.get("reason"))
        try:
            self.sendClose(code=code, reason=reason)
        except Exception:  # never let a close fail the caller
            log.warning("could not send a close frame (%s); dropping the connection", code, exc_info=True)
            self.dropConnection(abort=True)
        return None
    return _original(self, message)


_GONE = (WebSocketProtocol.STATE_CLOSING, WebSocketProtocol.STATE_CLOSED)
SCOPE_KEY = "collab.websocket"  # the daphne WebSocketProtocol of this websocket's scope


def encode_binary(payload: bytes) -> bytes:
    """One unmasked, unfragmented binary websocket frame (RFC 6455 5.2), as a server sends."""
    n = len(payload)
    if n <= 125:
        header = struct.pack("!BB", 0x82, n)
    elif n <= 0xFFFF:
        header = struct.pack("!BBH", 0x82, 126, n)
    else:
        header = struct.pack("!BBQ", 0x82, 127, n)
    return header + payload


def write_frame(protocol: WebSocketProtocol, frame: Outgoing) -> bool:
    """Write `frame` to this websocket without going through daphne's send. False when only
    daphne's own path will do (not yet open, compression or fragmenting in use, autobahn's send
    queue busy, over the message limit): the caller sends it that way. True also when the
    frame is dropped because the socket is being closed as too slow, as `_handle_reply` does."""
    size = len(frame.data)
    if protocol.state in _GONE:
        return True  # closing or closed: daphne would drop it too (autobahn refuses to send)
    if (
        protocol.state != WebSocketProtocol.STATE_OPEN
        or protocol._perMessageCompress is not None
        or protocol.send_queue
        or 0 < protocol.autoFragmentSize < size
        or 0 < protocol.maxMessagePayloadSize < size
    ):
        return False
    if _too_slow(protocol):
        return True
    _sending(protocol, size)
    if frame.encoded is None:
        frame.encoded = encode_binary(frame.data)
    _write(protocol.transport, frame.encoded)
    return True


def _write(transport, data: bytes) -> None:
    """Into the socket at once when nothing waits in Twisted's buffer (no reactor round trip,
    no registering for writability), the rest into the buffer; Twisted's own write otherwise."""
    if (
        not transport.dataBuffer
        and not getattr(transport, "_tempDataLen", 1)
        and transport.connected
        and not transport.disconnecting
        and isinstance(transport, _TCP_SERVER)
    ):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int):
            if sent >= len(data):
                return
            data = data[sent:]
    transport.write(data)  # also what finds and reports a lost connection


def _tcp_server_class() -> type:
    from twisted.internet import tcp  # daphne installs its reactor before importing us

    return tcp.Server


_TCP_SERVER: type = type("NoTransport", (), {})


def _create_application(original):
    def create_application(self, protocol, scope):
        if isinstance(protocol, WebSocketProtocol):
            scope[SCOPE_KEY] = protocol
        return original(self, protocol, scope)

    create_application.collab_patched = True
    return create_application


def install() -> None:
    global _TCP_SERVER
    WebSocketProtocol.handle_reply = _handle_reply
    WebSocketProtocol.onMessage = _on_message
    # Only inside daphne (which imported its server, and with it the reactor, before the
    # application): importing daphne.server elsewhere would install a reactor.
    server = sys.modules.get("daphne.server")
    if server is not None and not getattr(server.Server.create_application, "collab_patched", False):
        server.Server.create_application = _create_application(server.Server.create_application)
        _TCP_SERVER = _tcp_server_class()
