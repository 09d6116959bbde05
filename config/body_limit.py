"""Request bodies are bounded in the worker before they are buffered.

Daphne's HTTP layer (Twisted) receives a whole request body before the app sees any of it, and
Twisted then parses a multipart or form body in memory (a 60 MB upload grew a worker by ~700 MB
and stalled its event loop for seconds). So, at the Twisted level:
- a declared Content-Length over `REQUEST_MAX_BODY_BYTES` is answered 413 at once, from the
  headers, and the body is discarded as it arrives; a chunked body is counted and refused the
  same way when it passes the limit;
- Twisted no longer parses bodies itself (Django does, streaming files over 2 MB to disk);
  what Twisted keeps of a body over 100 kB is in a temporary file.
Installed by `config.asgi` (every worker imports it); the proxy enforces the same limit.
"""

from __future__ import annotations

from daphne.http_protocol import WebRequest
from django.conf import settings
from twisted.internet import reactor

_original_init = WebRequest.__init__
_original_got_length = WebRequest.gotLength
_original_chunk = WebRequest.handleContentChunk
_original_received = WebRequest.requestReceived


def limit() -> int:
    return settings.REQUEST_MAX_BODY_BYTES


def _init(self, *args, **kwargs) -> None:
    _original_init(self, *args, **kwargs)
    self._parsePOSTFormSubmission = False  # never parse a body in the event loop
    self.body_received = 0
    self.refused = False


def _got_length(self, length) -> None:
    _original_got_length(self, length)
    if length is not None and length > limit():
        _refuse(self)


def _handle_content_chunk(self, data: bytes) -> None:
    if self.refused:
        return
    self.body_received += len(data)
    if self.body_received > limit():
        _refuse(self)
        return
    _original_chunk(self, data)


def _request_received(self, command, path, version) -> None:
    if self.refused:
        self.channel.transport.loseConnection()
        return
    _original_received(self, command, path, version)


def _refuse(self) -> None:
    """Answer 413 now, on the raw transport (the request is not complete, so Twisted's own
    response machinery is not ready), and close the connection when the body is over or soon."""
    self.refused = True
    self.content.close()
    megabytes = limit() / (1024 * 1024)
    body = f"Request body too large: the server accepts at most {megabytes:.1f} MB.\n".encode()
    head = (
        "HTTP/1.1 413 Payload Too Large\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    transport = self.channel.transport
    transport.write(head + body)
    reactor.callLater(settings.REQUEST_BODY_LINGER, transport.loseConnection)


def install() -> None:
    WebRequest.__init__ = _init
    WebRequest.gotLength = _got_length
    WebRequest.handleContentChunk = _handle_content_chunk
    WebRequest.requestReceived = _request_received
