"""The bridge's `input()` prompts: the request is shown in the status payload (`input`: cell,
prompt, password flag and `for_user`, the principal key of the person who ran the cell); only
that person's answer is sent to the kernel. Unanswered after `KERNEL_INPUT_TIMEOUT` seconds,
the cell gets a stderr line saying so and the kernel is interrupted. Runs in the event loop.

Needs from the bridge: `channels`, `input`, `_jobs`, and the output sink's `_flush`, `_echo`,
`_broadcast`; `_spawn()`.
"""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings

from kernels.execution import InputRequested
from kernels.jobs import (
    InputRefused,
    Job,
    PendingInput,
    detached,
)
from kernels.jupyter import KernelChannels
from notebooks import access as acl

log = logging.getLogger("kernels.bridge")


class InputPrompts:
    input: PendingInput | None
    channels: KernelChannels | None
    _jobs: dict[str, Job]

    async def answer_input(self, value: str, who: str) -> None:
        """Send `value` as the answer to the pending `input()`; only the person who ran the cell
        may answer. Raises `InputRefused`."""
        await detached(self._answer_input(value, who))

    async def _answer_input(self, value: str, who: str) -> None:
        pending = self.input
        if pending is None or self.channels is None:
            raise InputRefused(409, "No cell is waiting for input.")
        try:
            acl.check_may_answer_input(who, pending.for_user)
        except acl.Refused as exc:
            raise InputRefused(403, str(exc)) from None
        self._drop_input()
        await self.channels.send_input_reply(value)
        shown = "·" * 8 if pending.password else value
        await self._echo(pending.cell_id, "stdout", f"{pending.prompt}{shown}\n")
        await self._broadcast()

    async def _on_input_request(self, event: InputRequested) -> None:
        job = self._jobs.get(event.msg_id)
        if job is None:
            return
        await self._flush()  # what was printed before the prompt comes first
        self._drop_input()
        pending = PendingInput(event.msg_id, job.cell_id, event.prompt, event.password, job.who)
        timeout = settings.KERNEL_INPUT_TIMEOUT
        pending.timer = asyncio.get_running_loop().call_later(
            timeout, lambda: self._spawn(self._input_timed_out(pending))
        )
        self.input = pending
        await self._broadcast()

    async def _input_timed_out(self, pending: PendingInput) -> None:
        if self.input is not pending:
            return
        self._drop_input()
        seconds = settings.KERNEL_INPUT_TIMEOUT
        text = (
            f"No answer to input() within {seconds:g} seconds from the person who ran this cell; "
            "the kernel was interrupted.\n"
        )
        await self._echo(pending.cell_id, "stderr", text)
        await self._broadcast()
        if self.channels is not None:
            await self.channels.interrupt()

    def _drop_input(self) -> None:
        if self.input is not None and self.input.timer is not None:
            self.input.timer.cancel()
        self.input = None
