"""The nginx configuration in front of the workers, rendered from `deploy/nginx.conf.in`."""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings

TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf.in"
# Debian's libnginx-mod-http-brotli-static (scripts/install_nginx.sh installs it with nginx)
BROTLI_STATIC_MODULE = Path("/usr/lib/nginx/modules/ngx_http_brotli_static_module.so")


def nginx_conf(
    listen: str,
    workers: list[str],
    run_dir: Path | str,
    access_log: str = "",
    max_body: int | None = None,
    static_root: Path | str | None = None,
) -> str:
    """`listen` as nginx takes it ("127.0.0.1:8000"), workers as "host:port"; nginx keeps its
    pid, logs and temporary files (uploads over 128 kB) in `run_dir`, which its workers must be
    able to reach: started as root, they run as www-data (Debian's nginx user). It serves
    /static/ from `static_root` (default STATIC_ROOT) where its user may read it, brotli files
    too when Debian's brotli-static module is installed, else the workers do."""
    brotli = BROTLI_STATIC_MODULE.exists()
    values = {
        "LOAD_MODULES": f"load_module {BROTLI_STATIC_MODULE};\n" if brotli else "",
        "BROTLI_STATIC": "brotli_static on;" if brotli else "# brotli_static: the module is not installed",
        "STATIC_ROOT": str(static_root or settings.STATIC_ROOT).rstrip("/"),
        "USER": "user www-data;\n" if os.geteuid() == 0 else "",
        "LISTEN": listen,
        "UPSTREAMS": "\n".join(f"        server {w} max_fails=1 fail_timeout=5s;" for w in workers),
        "RUN_DIR": str(run_dir),
        "MAX_BODY": str(max_body or settings.REQUEST_MAX_BODY_BYTES),
        "ACCESS_LOG": f"{access_log} app" if access_log else "off",
    }
    text = TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def nginx_argv(conf_path: Path | str, run_dir: Path | str) -> list[str]:
    """nginx in the foreground (its master process stops with the stack)."""
    return ["nginx", "-p", str(run_dir), "-c", str(conf_path), "-g", "daemon off;"]
