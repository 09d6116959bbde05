"""The whole stack on one machine: N daphne workers on loopback behind nginx, a redis-server for
the channel layer (unless REDIS_URL is set), one local Jupyter Server for all workers (unless
JUPYTER_SERVER_URL is set). The database is DATABASE_URL's (or SQLite). Runs until Ctrl-C or
until a process of it exits; then stops the others. `./run.sh --workers N` runs this."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config.deploy import nginx_argv, nginx_conf
from config.serving import daphne_args
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


class Command(BaseCommand):
    help = "Run N daphne workers behind nginx, with Redis and a Jupyter Server, on this machine."

    def add_arguments(self, parser):
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))

    def handle(self, workers: int, host: str, port: int, **options):
        os.umask(0o077)
        self.procs: list[subprocess.Popen] = []
        self.env = dict(os.environ)
        self.env.setdefault("SITE_URL", f"http://{host}:{port}")  # links in emails sent without a request
        run_dir = Path(tempfile.mkdtemp(prefix="colab-nginx-"))
        run_dir.chmod(0o755)  # nginx's workers keep uploads here while they arrive
        server = None
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
            nginx = self._spawn(nginx_argv(conf, run_dir))
            wait_for_port(port, nginx)
            self.stdout.write(
                f"\n  {settings.SITE_NAME} is running at http://{host}:{port}/"
                f" ({workers} workers behind nginx)."
                "\n  Press Ctrl-C to stop.\n\n"
            )
            self.stdout.flush()
            self._wait()
        finally:
            self._stop()
            if server is not None:
                server.stop()
            shutil.rmtree(run_dir, ignore_errors=True)

    def _spawn(self, argv: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(argv, env=self.env, cwd=settings.BASE_DIR)  # noqa: S603
        self.procs.append(proc)
        return proc

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
        wait_for_port(port, self._spawn(argv))
        return f"redis://127.0.0.1:{port}/0"

    def _worker(self) -> int:
        port = free_port()
        proc = self._spawn(
            [sys.executable, "-m", "daphne", *daphne_args("127.0.0.1", port, behind_proxy=True)]
        )
        wait_for_port(port, proc)
        return port

    def _wait(self) -> None:
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        try:
            while not stop and all(p.poll() is None for p in self.procs):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        for proc in self.procs:
            if proc.poll() is not None:
                self.stderr.write(f"{proc.args[0]} exited with {proc.returncode}; stopping the stack.")

    def _stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
