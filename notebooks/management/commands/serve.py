"""Run the app with daphne (pages, static files and websockets from one process).

When `JUPYTER_SERVER_URL` is unset, a local Jupyter Server is started first (its URL and token
are put into the environment and settings) and stopped when daphne exits. Its kernels run in the
sandbox the `KERNEL_*` settings describe (`kernels.sandbox`), with their homes in
`KERNEL_HOMES_DIR`.

SIGINT stops it whoever sends it (a terminal's Ctrl-C, a process manager to this process alone),
also when it was started with SIGINT ignored, as a script starts a command in the background
(`./run.sh &`): Python then raises no KeyboardInterrupt, and Twisted, which stops daphne on
SIGINT, puts its handler only in place of Python's. So Python's handler is put back first; daphne
exits on SIGINT or SIGTERM, and either one during startup stops what was started. The Jupyter
Server is stopped with signals ignored, so a second Ctrl-C cannot leave it (and its kernels,
in a session of their own) behind. The exit status is 0.
"""

from __future__ import annotations

import os
import signal

from daphne.cli import CommandLineInterface
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config.serving import daphne_args, on_stop_signals, raise_interrupt
from config.static_collect import collect_if_changed
from kernels.local_server import LocalJupyterServer, Sandbox, SandboxUnavailable


def local_server() -> LocalJupyterServer:
    """The local Jupyter Server as the settings describe it."""
    sandbox = None
    if settings.KERNEL_SANDBOX != "off":
        sandbox = Sandbox(
            memory_mb=settings.KERNEL_MEMORY_MB,
            cpu_seconds=settings.KERNEL_CPU_SECONDS,
            max_processes=settings.KERNEL_MAX_PROCESSES,
            max_file_mb=settings.KERNEL_MAX_FILE_MB,
            tmp_mb=settings.KERNEL_TMP_MB,
            home_quota_mb=settings.KERNEL_HOME_QUOTA_MB,
            quota_interval=settings.KERNEL_HOME_QUOTA_INTERVAL,
            home_max_files=settings.KERNEL_HOME_MAX_FILES,
            network=settings.KERNEL_NETWORK,
        )
    return LocalJupyterServer(sandbox=sandbox, homes=settings.KERNEL_HOMES_DIR)


class Command(BaseCommand):
    help = "Serve the app with daphne."

    def add_arguments(self, parser):
        parser.add_argument("host", nargs="?", default="127.0.0.1")
        parser.add_argument("port", nargs="?", type=int, default=8000)
        parser.add_argument(
            "--behind-proxy", action="store_true", help="take the client address from X-Forwarded-For"
        )

    def handle(self, host: str, port: int, behind_proxy: bool = False, **options):
        # Until daphne's reactor runs and takes both signals over (see the module's docstring).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, raise_interrupt)
        server = None
        try:
            server = self._start(host, port)
            CommandLineInterface().run(daphne_args(host, port, behind_proxy))
        except KeyboardInterrupt:
            pass  # during startup; once daphne runs, it stops on either signal itself
        finally:
            on_stop_signals(signal.SIG_IGN)
            if server is not None:
                server.stop()

    def _start(self, host: str, port: int) -> LocalJupyterServer | None:
        """Say where the app runs and start the local Jupyter Server, unless
        `JUPYTER_SERVER_URL` names one; the server started, kept running."""
        # hashed, gzip-compressed static files (WhiteNoise serves them with a far-future cache),
        # collected again only when the sources changed
        collect_if_changed()
        os.umask(0o077)  # the database, emails and kernel homes it creates are the app's alone
        url = f"http://{host}:{port}/"
        if not os.environ.get("SITE_URL"):  # links in emails sent without a request point here
            os.environ["SITE_URL"] = settings.SITE_URL = url.rstrip("/")
        verification = settings.ACCOUNT_EMAIL_VERIFICATION
        emails = {
            "config.mail.PrivateConsoleBackend": "shown here with their links' keys hidden,\n  each whole in",
            "django.core.mail.backends.filebased.EmailBackend": "written to",
        }.get(settings.EMAIL_BACKEND)
        emails = f"{emails} {settings.EMAIL_FILE_PATH}/" if emails else "sent through EMAIL_URL"
        self.stdout.write(
            f"\n  {settings.SITE_NAME} is running at {url}\n"
            f"  Sign up at {url}accounts/signup/ (email verification: {verification};\n"
            f"  emails are {emails}).\n  Press Ctrl-C to stop.\n\n"
        )
        self.stdout.flush()
        if settings.JUPYTER_SERVER_URL:
            return None
        self.stdout.write("  Starting a local Jupyter Server (JUPYTER_SERVER_URL is unset)...\n")
        self.stdout.flush()
        server = local_server()
        try:
            server.start()
            server.keep_running()  # killed or crashed: back on the same URL and token
        except SandboxUnavailable as exc:
            raise CommandError(str(exc)) from exc
        except BaseException:
            server.stop()
            raise
        os.environ["JUPYTER_SERVER_URL"] = settings.JUPYTER_SERVER_URL = server.url
        os.environ["JUPYTER_SERVER_TOKEN"] = settings.JUPYTER_SERVER_TOKEN = server.token
        return server
