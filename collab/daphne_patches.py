"""Two changes to daphne's websocket protocol. Runs in Twisted's reactor thread; never blocks.

Close reasons: daphne drops the `reason` of an ASGI `websocket.close`; people should read why
they were disconnected, so pass it on to the close frame.

Autobahn's `sendClose` accepts only 1000 and 3000-4999 and a reason of at most 123 UTF-8 bytes,
and raises otherwise: an exception here would escape into whatever task closed the socket (a
room's writer, say), so a code it refuses becomes 4500 and a long reason is cut.

Send buffer: Twisted buffers whatever a client does not read, without limit, so one client that
stops reading would hold every frame of its room in the worker's memory. When more than
`COLLAB_MAX_SEND_BUFFER` bytes wait for a socket, it is closed with 4429 and a reason, and cut
`COLLAB_SLOW_CLOSE_GRACE` seconds later if the close frame is not through by then (a client
that reads nothing never reads it); its buffer is freed with it."""

from __future__ import annotations

import logging

from daphne.ws_protocol import WebSocketProtocol
from django.conf import settings

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
    """Bytes Twisted holds for this connection and has not handed to the kernel yet."""
    return len(getattr(transport, "dataBuffer", b"")) + getattr(transport, "_tempDataLen", 0)


def _too_slow(self) -> bool:
    if getattr(self, "_closing_slow", False):
        return True  # already closing: drop what the room still sends
    limit = settings.COLLAB["MAX_SEND_BUFFER"]
    waiting = buffered_bytes(self.transport)
    if not limit or waiting <= limit:
        return False
    self._closing_slow = True
    log.warning("a client does not read (%d bytes waiting); closing its socket with %d", waiting, TOO_SLOW)
    self.sendClose(code=TOO_SLOW, reason=TOO_SLOW_REASON)
    from twisted.internet import reactor  # daphne installs its reactor before importing us

    transport = self.transport
    reactor.callLater(settings.COLLAB["SLOW_CLOSE_GRACE"], _cut, transport)
    return True


def _cut(transport) -> None:
    if transport.connected:
        transport.abortConnection()


def _handle_reply(self, message):
    if message.get("type") == "websocket.send" and self.state == self.STATE_OPEN and _too_slow(self):
        return None
    if message.get("type") == "websocket.close" and self.state != self.STATE_CONNECTING:
        code, reason = close_args(message.get("code"), message.get("reason"))
        try:
            self.sendClose(code=code, reason=reason)
        except Exception:  # never let a close fail the caller
            log.warning("could not send a close frame (%s); dropping the connection", code, exc_info=True)
            self.dropConnection(abort=True)
        return None
    return _original(self, message)


def install() -> None:
    WebSocketProtocol.handle_reply = _handle_reply
