"""The whole stack on one machine: N daphne workers on loopback behind nginx, a redis-server for
the channel layer (unless REDIS_URL is set), one local Jupyter Server for all workers (unless
JUPYTER_SERVER_URL is set). The database is DATABASE_URL's (or SQLite). `./run.sh --workers N`
runs this.

It supervises what it started: a daphne worker or the redis-server that exits is started again
with the same arguments (same port, which nginx and the workers know), after a delay that
doubles with each exit within `RESTART_WINDOW` seconds (0.5 s, 1 s, 2 s, ...); one that exits
`RESTART_LIMIT` times within that window, or nginx exiting, stops the whole stack, as does
Ctrl-C or SIGTERM. The local Jupyter Server is restarted by its own keeper
(`LocalJupyterServer.keep_running`). A stack that gave up exits with status 1 and a last line
naming the process (CommandError), so that a process manager (systemd, honcho) can tell it
from one asked to stop, which exits 0.

SIGINT and SIGTERM are handled from the first line, whoever sends them (a terminal's Ctrl-C to
the whole process group, a process manager to this process alone): Python raises
KeyboardInterrupt only if SIGINT was not ignored when it started, and a script that starts the
stack in the background (`./run.sh --workers 2 &`) starts it with SIGINT ignored. Either signal
stops every process of the stack, then the command exits with status 0; while it stops them
signals are ignored, so a second Ctrl-C cannot cut the stopping short and leave orphans."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config.deploy import nginx_argv, nginx_conf
from config.serving import daphne_args, on_stop_signals, raise_interrupt
from notebooks.management.commands.serve import local_server


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CommandError(f"{proc.args[0]} exited before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise CommandError(f"nothing listens on {port} after {timeout} s")


RESTART_LIMIT = 5  # exits of one process within RESTART_WINDOW seconds that stop the stack
RESTART_WINDOW = 30.0
MAX_DELAY = 8.0


class Restarts:
    """When a process that exited is started again: after a delay (`STACK_RESTART_DELAY` at first)
    that doubles with each exit within `window` seconds, or never (None) once it exited `limit`
    times within `window`."""

    def __init__(self, limit: int = RESTART_LIMIT, window: float = RESTART_WINDOW):
        self.limit, self.window = limit, window
        self.first_delay = settings.STACK_RESTART_DELAY
        self.exits: deque[float] = deque()

    def died(self, now: float) -> float | None:
        self.exits.append(now)
        while self.exits[0] <= now - self.window:
            self.exits.popleft()
        if len(self.exits) >= self.limit:
            return None
        return min(self.first_delay * 2 ** (len(self.exits) - 1), MAX_DELAY)


@dataclass
class Child:
    """A process of the stack: what it is called in messages, how to start it again."""

    name: str
    argv: list[str]
    proc: subprocess.Popen
    restart: bool
    restarts: Restarts = field(default_factory=Restarts)
    start_at: float | None = None  # when to start it again, while it is down


class Command(BaseCommand):
    help = "Run N daphne workers behind nginx, with Redis and a Jupyter Server, on this machine."

    def add_arguments(self, parser):
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))

    def handle(self, workers: int, host: str, port: int, **options):
        on_stop_signals(raise_interrupt)
        os.umask(0o077)
        self.children: list[Child] = []
        self.env = dict(os.environ)
        self.env.setdefault("SITE_URL", f"http://{host}:{port}")  # links in emails sent without a request
        run_dir = Path(tempfile.mkdtemp(prefix="confer-nginx-"))
        run_dir.chmod(0o755)  # nginx's workers keep uploads here while they arrive
        server = None
        self.gave_up: str | None = None  # why the stack stopped by itself
        try:
            if not settings.JUPYTER_SERVER_URL:
                server = local_server()
                server.start()
                server.keep_running()  # killed or crashed: back on the same URL and token
                self.env["JUPYTER_SERVER_URL"], self.env["JUPYTER_SERVER_TOKEN"] = server.url, server.token
            if not self.env.get("REDIS_URL"):
                self.env["REDIS_URL"] = self._redis()
            upstreams = [f"127.0.0.1:{self._worker()}" for _ in range(workers)]
            conf = run_dir / "nginx.conf"
            conf.write_text(nginx_conf(f"{host}:{port}", upstreams, run_dir))
            nginx = self._spawn("nginx", nginx_argv(conf, run_dir), restart=False)
            wait_for_port(port, nginx)
            self.stdout.write(
                f"\n  {settings.SITE_NAME} is running at http://{host}:{port}/"
                f" ({workers} workers behind nginx)."
                "\n  Press Ctrl-C to stop.\n\n"
            )
            self.stdout.flush()
            while self._supervise(time.monotonic()):
                time.sleep(0.2)
        except KeyboardInterrupt as stop:  # `raise_interrupt`: the signal's name
            self.stderr.write(f"{stop}: stopping the stack.")
        finally:
            on_stop_signals(signal.SIG_IGN)
            self._stop()
            if server is not None:
                server.stop()
            shutil.rmtree(run_dir, ignore_errors=True)
        if self.gave_up:
            raise CommandError(f"The stack stopped: {self.gave_up}.")

    def _spawn(self, name: str, argv: list[str], restart: bool = True) -> subprocess.Popen:
        proc = self._popen(argv)
        self.children.append(Child(name, argv, proc, restart))
        return proc

    def _popen(self, argv: list[str]) -> subprocess.Popen:
        return subprocess.Popen(argv, env=self.env, cwd=settings.BASE_DIR)  # noqa: S603

    def _redis(self) -> str:
        if shutil.which("redis-server") is None:
            raise CommandError("Several workers need Redis: set REDIS_URL or install redis-server.")
        port = free_port()
        argv = [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        wait_for_port(port, self._spawn("redis-server", argv))
        return f"redis://127.0.0.1:{port}/0"

    def _worker(self) -> int:
        port = free_port()
        proc = self._spawn(
            f"daphne worker on 127.0.0.1:{port}",
            [sys.executable, "-m", "daphne", *daphne_args("127.0.0.1", port, behind_proxy=True)],
        )
        wait_for_port(port, proc)
        return port

    def _supervise(self, now: float) -> bool:
        """Start again what is due, note what exited; False when the stack must stop."""
        for child in self.children:
            if child.start_at is not None:
                if now < child.start_at:
                    continue
                child.start_at = None
                try:
                    child.proc = self._popen(child.argv)
                except OSError as e:
                    if not self._ended(child, f"could not start again ({e})", now):
                        return False
                continue
            code = child.proc.poll()
            if code is not None and not self._ended(child, f"exited with {code}", now):
                return False
        return True

    def _ended(self, child: Child, what: str, now: float) -> bool:
        """Say that `child` ended and when it starts again; False when the stack must stop."""
        if not child.restart:
            self.stderr.write(f"{child.name} {what}; stopping the stack.")
            self.gave_up = f"{child.name} {what}"
            return False
        delay = child.restarts.died(now)
        if delay is None:
            limit, window = child.restarts.limit, child.restarts.window
            self.stderr.write(f"{child.name} {what}, {limit} times within {window:g} s; stopping the stack.")
            self.gave_up = f"{child.name} exited {limit} times within {window:g} s"
            return False
        self.stderr.write(f"{child.name} {what}; starting it again in {delay:g} s.")
        child.start_at = now + delay
        return True

    def _stop(self) -> None:
        procs = [child.proc for child in self.children if child.start_at is None]
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
