"""Daphne drops the `reason` of an ASGI `websocket.close`; people should read why they were
disconnected, so pass it on to the close frame.

Autobahn's `sendClose` accepts only 1000 and 3000-4999 and a reason of at most 123 UTF-8 bytes,
and raises otherwise: an exception here would escape into whatever task closed the socket (a
room's writer, say), so a code it refuses becomes 4500 and a long reason is cut."""

from __future__ import annotations

import logging

from daphne.ws_protocol import WebSocketProtocol

log = logging.getLogger(__name__)

_original = WebSocketProtocol.handle_reply
SERVER_ERROR = 4500  # an application close code for "something failed on the server"
MAX_REASON_BYTES = 123


def close_args(code: int | None, reason: str | None) -> tuple[int, str | None]:
    code = code or 1000
    if code != 1000 and not 3000 <= code <= 4999:
        code = SERVER_ERROR
    if reason:
        reason = reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")
    return code, reason or None


def _handle_reply(self, message):
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
