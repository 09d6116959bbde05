"""Write the nginx configuration for workers already running (Procfile, systemd units)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand

from config.deploy import nginx_conf


class Command(BaseCommand):
    help = "Write RUN_DIR/nginx.conf: nginx on LISTEN in front of the given workers."

    def add_arguments(self, parser):
        parser.add_argument("--listen", default="127.0.0.1:8000")
        parser.add_argument("--workers", default="127.0.0.1:8001,127.0.0.1:8002", help="host:port,...")
        parser.add_argument("--run-dir", required=True, help="pid, logs and upload buffers of nginx")
        parser.add_argument("--access-log", default="", help="a file; default: no access log")

    def handle(self, listen: str, workers: str, run_dir: str, access_log: str, **options):
        path = Path(run_dir)
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        upstreams = [w.strip() for w in workers.split(",") if w.strip()]
        (path / "nginx.conf").write_text(nginx_conf(listen, upstreams, path.resolve(), access_log))
        self.stdout.write(str(path / "nginx.conf"))
