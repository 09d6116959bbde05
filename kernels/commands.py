"""The kernel requests a websocket sends (COMMAND messages), answered through the cluster like
the HTTP endpoints are; registered with `collab.commands` when the app starts."""

from __future__ import annotations

from typing import Any

from audit import log as audit
from kernels import cluster


class KernelCommands:
    def invalid(self, op: str, args: Any) -> str | None:
        return cluster.invalid_args(op, args)

    async def call(self, notebook_id: str, op: str, args: dict, principal: Any, scope: dict) -> dict:
        user = principal.user
        who = {"user_id": getattr(user, "pk", None), "key": principal.key, "meta": audit.client_info(scope)}
        return await cluster.call(notebook_id, op, args, who, user)

    async def socket_joined(self) -> None:
        await cluster.node().start()  # this worker may now take over orphaned kernels
