"""Daphne drops the `reason` of an ASGI `websocket.close`; people should read why they were
disconnected, so pass it on to the close frame."""

from __future__ import annotations

from daphne.ws_protocol import WebSocketProtocol

_original = WebSocketProtocol.handle_reply


def _handle_reply(self, message):
    if message.get("type") == "websocket.close" and self.state != self.STATE_CONNECTING:
        reason = message.get("reason") or None
        self.sendClose(code=message.get("code") or 1000, reason=reason)
        return None
    return _original(self, message)


def install() -> None:
    WebSocketProtocol.handle_reply = _handle_reply
