"""Run the app with daphne (pages, static files and websockets from one process).

When `JUPYTER_SERVER_URL` is unset, a local Jupyter Server is started first (its URL and token
are put into the environment and settings) and stopped when daphne exits. Its kernels run in the
sandbox the `KERNEL_*` settings describe (`kernels.sandbox`), with their homes in
`KERNEL_HOMES_DIR`.
"""

from __future__ import annotations

import os

from daphne.cli import CommandLineInterface
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config.serving import daphne_args
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
        server = None
        if not settings.JUPYTER_SERVER_URL:
            self.stdout.write("  Starting a local Jupyter Server (JUPYTER_SERVER_URL is unset)...\n")
            self.stdout.flush()
            server = local_server()
            try:
                server.start()
            except SandboxUnavailable as exc:
                raise CommandError(str(exc)) from exc
            server.keep_running()  # killed or crashed: back on the same URL and token
            os.environ["JUPYTER_SERVER_URL"] = settings.JUPYTER_SERVER_URL = server.url
            os.environ["JUPYTER_SERVER_TOKEN"] = settings.JUPYTER_SERVER_TOKEN = server.token
        try:
            CommandLineInterface().run(daphne_args(host, port, behind_proxy))
        finally:
            if server is not None:
                server.stop()
