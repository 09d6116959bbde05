"""How daphne is started, shared by `manage.py serve`, the tests and the benchmarks, and how
the commands that run servers stop on SIGINT and SIGTERM."""

from __future__ import annotations

import signal

from django.conf import settings

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def on_stop_signals(handler) -> None:
    """`handler` for SIGINT and SIGTERM: `raise_interrupt` from a command's first line (Python
    raises KeyboardInterrupt only if SIGINT was not ignored when it started, and a script
    starts a background job with SIGINT ignored), `signal.SIG_IGN` while it stops what it
    started (a second Ctrl-C must not cut that short and leave processes behind)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)


def raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def daphne_args(host: str, port: int, behind_proxy: bool = False) -> list[str]:
    """Daphne's command-line arguments. Its websocket message limit (1 MiB by default, and
    autobahn applies it to what the server sends too) is raised above the largest document,
    which a joining client receives in one message, and above COLLAB["MAX_MESSAGE_BYTES"], so
    that the app's own check answers oversized client messages with a readable 4413. Behind the
    proxy (workers on loopback only) the client's address comes from X-Forwarded-For."""
    collab = settings.COLLAB
    limit = str(max(collab["MAX_MESSAGE_BYTES"], collab["MAX_DOCUMENT_BYTES"]) + 1024 * 1024)
    return [
        "-b",
        host,
        "-p",
        str(port),
        "--websocket-max-message-size",
        limit,
        "--websocket-max-frame-size",
        limit,
        *(["--proxy-headers"] if behind_proxy else []),
        "config.asgi:application",
    ]
