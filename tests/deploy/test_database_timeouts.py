"""A PostgreSQL server that stops answering does not hold a worker's database thread for good:
a connection attempt gives up after DB_CONNECT_TIMEOUT, and connections probe an idle peer
(keepalives) and close when sent data goes unacknowledged (tcp_user_timeout)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CONNECT = """
import json, time
import django
django.setup()
from django.db import connection
params = connection.get_connection_params()
started = time.monotonic()
try:
    connection.ensure_connection()
    error = None
except Exception as e:
    error = type(e).__name__
print(json.dumps({"error": error, "seconds": time.monotonic() - started,
                  "params": {k: v for k, v in params.items() if isinstance(v, (int, str))}}))
"""


def test_a_database_that_accepts_and_never_answers_is_given_up_on():
    """Before, the attempt waited as long as the server held the connection (for ever here)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # accepts, reads nothing, answers nothing
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"postgres://nobody@127.0.0.1:{port}/hung",
        "DB_CONNECT_TIMEOUT": "2",
    }
    try:
        result = subprocess.run(
            [sys.executable, "-c", CONNECT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
        )
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["error"] == "OperationalError", result.stderr
    assert 1.5 < out["seconds"] < 6, out
    params = out["params"]
    assert params["connect_timeout"] == 2
    assert (params["keepalives"], params["keepalives_idle"], params["tcp_user_timeout"]) == (1, 10, 30_000)


def test_what_the_database_url_sets_wins():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": "postgres://nobody@127.0.0.1:9/x?connect_timeout=1&keepalives_idle=60",
    }
    code = (
        "import json, django; django.setup(); from django.conf import settings; "
        "print(json.dumps(settings.DATABASES['default']['OPTIONS']))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    options = json.loads(result.stdout.strip().splitlines()[-1])
    assert (options["connect_timeout"], options["keepalives_idle"]) == (1, 60)
    assert options["tcp_user_timeout"] == 30_000
