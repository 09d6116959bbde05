"""A Django shell that stays up for a stack: `Stack.django(code)` hands its Python to it over a
pipe instead of starting `manage.py shell -c` for each call (about 1 s each, ~120 calls).

The server (`python -m tests.support.django_shell`, in the stack's environment) sets Django up
once, then forks for each piece of code: every call starts from the same state, as a new process
would, with no database connection, no Redis client nor fan-out left from an earlier call's
event loop, no cache that gave up on a Redis that was stopped meanwhile. The forked process
closes its database connections before it ends. A server whose environment is no longer the
stack's (a test changed `stack.env`), or that died, is replaced at the next call.

Messages are JSON, each preceded by its length: {"code"} to the server, {"stdout", "error"}
back, "error" being the code's traceback when it raised."""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import traceback
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
_LENGTH = struct.Struct("!I")
# Imported by the server before it forks, so that each call does not import them again.
_PRELOAD = ("tests.support.processes", "notebooks.actions", "allauth.account.models")


class ShellError(RuntimeError):
    """The code raised (the message is its traceback), or the server ended without answering."""


class DjangoShell:
    def __init__(self, log: Path):
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] = {}

    def run(self, code: str, env: dict[str, str]) -> str:
        """Run `code` in Django with `env`; return what it printed."""
        if self.proc is None or self.proc.poll() is not None or self.env != env:
            self._start(env)
        try:
            _send(self.proc.stdin, {"code": code})
            reply = _receive(self.proc.stdout)
        except BrokenPipeError:
            reply = None
        except BaseException:  # interrupted: its reply, when it comes, must not be the next call's
            self.proc.kill()
            self.proc.wait(10)
            raise
        if reply is None:
            status = self.proc.wait(10)
            raise ShellError(f"the Django shell ended with {status}; its log:\n{self._log_tail()}")
        if reply.get("error"):
            raise ShellError(f"{reply['error']}\nprinted before:\n{reply['stdout']}")
        return reply["stdout"]

    def _start(self, env: dict[str, str]) -> None:
        self.close()
        self.env = dict(env)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.django_shell"],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def close(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        with contextlib.suppress(OSError):
            proc.stdin.close()  # the server ends at the end of its input
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()


def _send(stream: IO[bytes], message: dict[str, Any]) -> None:
    data = json.dumps(message).encode()
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> dict[str, Any] | None:
    """The next message, or None at the end of the stream."""
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return None
    data = stream.read(_LENGTH.unpack(header)[0])
    return json.loads(data)


def serve() -> None:
    """Answer each piece of code read from stdin. Replies go to the original stdout; anything
    else written to file descriptor 1 (a subprocess, C code) goes to stderr, the log."""
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    import importlib

    import django

    django.setup()
    from django.core.management.commands import shell

    # What `manage.py shell -c` runs code in: its module's globals and its automatic imports.
    namespace = {**vars(shell), **shell.Command().get_namespace(verbosity=0)}
    for module in _PRELOAD:
        importlib.import_module(module)
    while (request := _receive(requests)) is not None:
        _send(replies, _run_forked(request["code"], namespace, replies))


def _run_forked(code: str, namespace: dict[str, Any], replies: IO[bytes]) -> dict[str, Any]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: runs the code, writes its reply, ends without Python's clean-up
        os.close(read_end)
        replies.close()
        with open(os.devnull, "rb") as nothing:
            os.dup2(nothing.fileno(), 0)
        with os.fdopen(write_end, "wb") as out:
            out.write(json.dumps(_run(code, namespace)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        data = answer.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        return {"stdout": "", "error": f"the process running the code ended without a reply ({status})"}
    return json.loads(data)


def _run(code: str, namespace: dict[str, Any]) -> dict[str, Any]:
    from django.db import connections

    printed = io.StringIO()
    error = None
    try:
        with contextlib.redirect_stdout(printed):
            exec(code, dict(namespace))
    except SystemExit as exit:
        if exit.code not in (None, 0):
            error = traceback.format_exc()
    except BaseException:
        error = traceback.format_exc()
    finally:
        with contextlib.suppress(Exception):  # a database that is away: the process ends anyway
            connections.close_all()
        sys.stdout.flush()
        sys.stderr.flush()
    return {"stdout": printed.getvalue(), "error": error}


if __name__ == "__main__":
    serve()
