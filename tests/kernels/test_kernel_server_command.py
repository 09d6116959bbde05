"""`python -m kernels.local_server`: a local Jupyter Server in the foreground until SIGINT or
SIGTERM, also when it was started with SIGINT ignored. # no Django"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.processes import alive, descendants
from tests.support.waiting import eventually

REPO = Path(__file__).resolve().parents[2]


def test_sigint_to_the_command_alone_stops_it_and_its_server(tmp_path):
    # Started in the background by a script: with SIGINT ignored, which Python keeps (no
    # KeyboardInterrupt); a process manager then sends SIGINT to the command alone.
    env = {**os.environ, "KERNEL_SANDBOX": "off", "KERNEL_HOMES_DIR": str(tmp_path / "homes")}
    log = tmp_path / "out.log"
    started: dict[int, list[str]] = {}
    argv = [sys.executable, "-m", "kernels.local_server"]
    ours = signal.signal(signal.SIGINT, signal.SIG_IGN)  # SIG_IGN outlives exec
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    finally:
        signal.signal(signal.SIGINT, ours)
    try:
        eventually(
            lambda: "Jupyter Server at http://127.0.0.1:" in log.read_text() or proc.poll() is not None,
            timeout=60,
            what="the server's URL",
        )
        started = descendants(proc.pid)
        assert any("jupyter_server" in argv for argv in started.values()), log.read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(5) == 0, log.read_text()
        eventually(
            lambda: not [argv for pid, argv in started.items() if alive(pid)],
            timeout=5,
            what="the Jupyter Server to end",
        )
    finally:
        for pid in [proc.pid, *started]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
