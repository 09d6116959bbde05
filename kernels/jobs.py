"""What the kernel bridge's parts share: a run (`Job`), a pending `input()`, the errors and
sentences shown to people, and the helpers every part uses to start work. Pure data and
helpers; runs in the event loop where it touches asyncio.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from accounts.models import User
from audit import log as audit
from kernels.jupyter import KernelGone, KernelServerError
from notebooks.models import Notebook

log = logging.getLogger("kernels.bridge")
# In the cell, which everyone who can open the notebook sees; the reason goes to the kernel
# status, which only the people who may run receive (`collab.rooms.Room.set_kernel_state`).
CELL_NOT_RUN = "Could not run: the kernel could not be started or reached. The kernel status says why."


def load_user(user_id: int | None) -> Any:
    return User.objects.filter(pk=user_id).first() if user_id is not None else None


def died_message(sandboxed: bool) -> str:
    """A run's error when its kernel died: on the deployment's own server, name the sandbox's
    limits (a kernel over its CPU time is killed; one over its memory usually just fails)."""
    text = "The kernel died while this cell was running."
    if sandboxed and settings.KERNEL_SANDBOX != "off":
        text += (
            " It may have gone past this site's limits for a kernel:"
            f" {settings.KERNEL_MEMORY_MB} MB of memory, {settings.KERNEL_CPU_SECONDS} s of CPU time,"
            f" {settings.KERNEL_MAX_PROCESSES} processes. Run it again to start a new kernel."
        )
    return text


def quota_messages() -> tuple[str, str]:
    """(the running cell's error, the kernel status message) when the local server stopped the
    kernel because the notebook's home went past `KERNEL_HOME_QUOTA_MB` (`kernels.diskuse`)."""
    quota = f"this site's quota of {settings.KERNEL_HOME_QUOTA_MB} MB"
    return (
        f"The kernel was stopped: this notebook's files (in /home/notebook) went past {quota}."
        " Delete files to make room: the kernel runs again, but it is stopped whenever its files"
        " grow while they are over the quota.",
        f"The kernel was stopped: this notebook's files went past {quota}; delete some to make room.",
    )


def connection_lost_message(exc: Exception, sandboxed: bool) -> tuple[str, str]:
    """(the running cell's error, the kernel status message) when the kernel's connection ended
    for good: its server stopped answering (stopped, killed), or the kernel is gone from a
    server that answers (e.g. one restarted since)."""
    if isinstance(exc, KernelGone):
        return (
            "The kernel is gone from its kernel server (stopped, or the server was restarted) while"
            " this cell was running. Run it again to start a new kernel.",
            "The kernel is gone from its kernel server; the next run starts a new one.",
        )
    if isinstance(exc, KernelServerError):
        return (
            "The kernel server stopped answering while this cell was running, and its kernel is"
            " lost. Run it again to start a new kernel once the server is back.",
            "The kernel server stopped answering; the next run starts a new kernel once it is back.",
        )
    return died_message(sandboxed), "The kernel is gone; the next run starts a new one."


NOT_REACHED = "Not run: the kernel server was lost before this cell's turn. Run it again."


@dataclass
class Job:
    cell_id: str
    user: Any
    request_meta: dict[str, Any]
    who: str = ""  # principal key ("u:<pk>", "g:<guest>") of the person who ran it
    msg_id: str = ""
    code: str = ""
    started: float = 0.0
    done: asyncio.Future | None = None
    outcome: str = ""
    execution_count: int | None = None

    def record(self) -> dict[str, Any]:
        """What the lease row keeps of a run in flight (`leases.Remembered.running`)."""
        return {
            "msg_id": self.msg_id,
            "cell_id": self.cell_id,
            "user_id": getattr(self.user, "pk", None),
            "who": self.who,
            "code": self.code,
        }


@dataclass
class PendingInput:
    """An `input()` the kernel waits on, for the person who ran the cell."""

    msg_id: str
    cell_id: str
    prompt: str
    password: bool
    for_user: str
    timer: asyncio.TimerHandle | None = None

    def public(self) -> dict[str, Any]:
        return {
            "cell_id": self.cell_id,
            "prompt": self.prompt,
            "password": self.password,
            "for_user": self.for_user,
        }


class InputRefused(Exception):
    """`answer_input` was refused: `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def principal_key(user: Any) -> str:
    pk = getattr(user, "pk", None)
    return f"u:{pk}" if pk is not None else ""


async def settle(tasks: list[asyncio.Task], notebook_id: Any) -> None:
    """Wait for the tasks to end, at most `KERNEL_SHUTDOWN_GRACE` seconds; cancel what is left
    (once, with a log line), so a shutdown can never hang on a task that waits for something
    that is gone."""
    grace = settings.KERNEL_SHUTDOWN_GRACE
    _, pending = await asyncio.wait(tasks, timeout=grace)
    if pending:
        log.warning(
            "kernel bridge of %s: %d task(s) still running at shutdown; cancelled", notebook_id, len(pending)
        )
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=grace)


def reason(exc: Exception) -> str:
    """Why a run failed, for the people who may run (the kernel status): a `KernelServerError`
    is one of a fixed set of sentences; anything else may hold what a server sent, so it is
    only logged."""
    if isinstance(exc, KernelServerError):
        return str(exc)
    return "the kernel server's reply could not be used."


async def detached(coro: Any) -> Any:
    """Run `coro` in a fresh context (see the module rules) and wait for it."""
    return await asyncio.get_running_loop().create_task(coro, context=contextvars.Context())


def log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("kernel bridge background task failed", exc_info=task.exception())


def write_audit(
    action: str, notebook_id: str, user: Any, meta: dict[str, Any], details: dict[str, Any]
) -> None:
    notebook = Notebook.objects.filter(pk=notebook_id).first()
    event = audit.build(action, notebook=notebook or notebook_id, actor=user, **details)
    event.ip = meta.get("ip")
    event.user_agent = str(meta.get("user_agent", ""))[:300]
    event.save()


def request_meta(request: Any) -> dict[str, Any]:
    """What the audit log keeps of an HTTP request (IP address, user agent)."""
    return audit.client_info(request)
