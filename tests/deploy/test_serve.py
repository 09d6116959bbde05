"""`manage.py serve` (what `./run.sh` runs): SIGINT stops it and the local Jupyter Server it
started, also when it was started with SIGINT ignored."""

from __future__ import annotations

import contextlib
import os
import signal

import pytest

from tests.support.processes import PYTHON, Stack, alive, descendants, free_port, wait_for_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.processes


def test_sigint_to_serve_alone_stops_it_and_its_jupyter_server():
    # Started as a script starts a command in the background (`./run.sh &`): with SIGINT
    # ignored, which Python keeps (no KeyboardInterrupt) and Twisted then leaves alone (it puts
    # its own handler only in place of Python's); a process manager sends SIGINT to serve alone.
    stack = Stack(redis=False, KERNEL_SANDBOX="off")
    for name in ("JUPYTER_SERVER_URL", "JUPYTER_SERVER_TOKEN", "REDIS_URL"):
        stack.env.pop(name, None)
    stack.env["KERNEL_HOMES_DIR"] = str(stack.tmp / "homes")
    started: dict[int, list[str]] = {}
    try:
        port = free_port()
        argv = [PYTHON, "manage.py", "serve", "127.0.0.1", str(port)]
        ours = signal.signal(signal.SIGINT, signal.SIG_IGN)  # SIG_IGN outlives exec
        try:
            proc = stack._spawn(argv, log="serve.log")
        finally:
            signal.signal(signal.SIGINT, ours)
        wait_for_port(port, proc, timeout=60)  # the local Jupyter Server answers before daphne listens
        started = descendants(proc.pid)
        assert any("jupyter_server" in argv for argv in started.values()), started
        proc.send_signal(signal.SIGINT)
        assert proc.wait(5) == 0, (stack.tmp / "serve.log").read_text(errors="replace")
        eventually(
            lambda: not [argv for pid, argv in started.items() if alive(pid)],
            timeout=5,
            what="the local Jupyter Server to end",
        )
    finally:
        stack.close()
        for pid in started:  # in a session of its own: what serve left, the stack cannot stop
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
