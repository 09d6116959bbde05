"""Who answers a socket's COMMAND messages (kernel requests). The real-time engine knows only
this interface; the kernels app registers its implementation at start-up (its AppConfig.ready),
so collab never imports kernels. Runs in the event loop.
"""

from __future__ import annotations

from typing import Any, Protocol


class CommandHandler(Protocol):
    def invalid(self, op: str, args: Any) -> str | None:
        """Why `op` with `args` is not a request (shown to the client), or None."""

    async def call(self, notebook_id: str, op: str, args: dict, principal: Any, scope: dict) -> dict:
        """Carry out a checked request for a principal who may run code: `{"status", "body"}`."""

    async def socket_joined(self) -> None:
        """A socket that speaks the extension joined this worker (it may start work here)."""


_handler: CommandHandler | None = None

NO_HANDLER = {"status": 503, "body": {"error": "Kernels are not available on this server."}}


def register(handler: CommandHandler) -> None:
    global _handler
    _handler = handler


def handler() -> CommandHandler | None:
    return _handler
