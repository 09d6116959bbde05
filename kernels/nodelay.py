"""Loaded INSIDE the Jupyter Server process that `kernels.local_server` launches.

Tornado leaves Nagle's algorithm on for websockets. A kernel message is written as several small
TCP segments; with Nagle on, the second waits for the peer's delayed ACK (~40 ms on Linux), so a
trivial execute costs ~50 ms instead of ~10 ms. This connection class turns TCP_NODELAY on for
every kernel websocket as it opens. Selected with
`--ServerApp.kernel_websocket_connection_class=kernels.nodelay.NoDelayWebsocketConnection`.

Imports jupyter_server, so only the server process may import this module.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection


class NoDelayWebsocketConnection(ZMQChannelsWebsocketConnection):
    """The stock ZMQ <-> websocket bridge with TCP_NODELAY on its socket."""

    def connect(self) -> asyncio.Future[Any] | None:  # type: ignore[override]
        # `open()` calls connect() after the handshake, so ws_connection exists here.
        handler = self.websocket_handler
        if handler is not None and handler.ws_connection is not None:
            handler.set_nodelay(True)
        return super().connect()
