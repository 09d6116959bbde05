"""Real processes for tests: redis-server and daphne workers on free loopback ports, sharing
a fresh database (a temporary SQLite file, or a new PostgreSQL database when DATABASE_URL is set,
each a copy of one migrated once: `tests.support.databases`). Everything started here is stopped
by `close()`."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from django.conf import settings

from config.deploy import BROTLI_STATIC_MODULE, nginx_argv, nginx_conf
from config.serving import daphne_args
from tests.support import databases
from tests.support.django_shell import DjangoShell
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
_static_root: Path | None = None


def static_root() -> Path:
    """One folder of collected static files for every stack of this test run: a `serve` collects
    into it only when the sources changed (`config.static_collect`), so only the first one pays
    the seconds of hashing and compressing. Not the checkout's var/: files collected there
    earlier would be served instead of the sources under test."""
    global _static_root
    if _static_root is None:
        _static_root = Path(tempfile.mkdtemp(prefix="collab-test-static-"))
        atexit.register(shutil.rmtree, _static_root, ignore_errors=True)
    return _static_root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    eventually(listening, timeout=timeout, what=f"something to listen on port {port}")


class Stack:
    def __init__(self, redis: bool = True, **env: str):
        self.tmp = Path(tempfile.mkdtemp(prefix="collab-test-"))
        self.procs: list[subprocess.Popen] = []
        self.workers: dict[int, subprocess.Popen] = {}
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "SECRET_KEY": "test-" + uuid.uuid4().hex,
            "ACCOUNT_EMAIL_VERIFICATION": "none",
            "COLLAB_ROOM_UNLOAD_DELAY": "2",
            "COLLAB_RESYNC_INTERVAL": "0.5",
            "PYTHONUNBUFFERED": "1",
            "STATIC_ROOT": str(static_root()),
            # The production policy, plus eval for Playwright's evaluate/wait_for_function: inline
            # scripts and handlers stay refused (tests/deploy/test_csp_browser.py: no eval either).
            "CONTENT_SECURITY_POLICY": settings.CONTENT_SECURITY_POLICY.replace(
                "script-src 'self'", "script-src 'self' 'unsafe-eval'"
            ),
            **env,
        }
        self._pg_db = None
        if os.environ.get("DATABASE_URL"):
            self._pg_db = f"collab_proc_{uuid.uuid4().hex[:10]}"
            self.env["DATABASE_URL"] = databases.create_postgres(self._pg_db, self.env)
        else:
            self.env["SQLITE_PATH"] = str(self.tmp / "db.sqlite3")
            databases.copy_sqlite(self.tmp / "db.sqlite3", self.env)
        self._shell = DjangoShell(self.tmp / "django-shell.log")
        self.redis: subprocess.Popen | None = None
        if redis:
            self.redis_port = free_port()
            self.start_redis()
            self.env["REDIS_URL"] = f"redis://127.0.0.1:{self.redis_port}/0"

    def start_redis(self) -> None:
        """Start (or start again, empty, on the same port) the stack's redis-server."""
        port, where = str(self.redis_port), str(self.tmp)
        args = ["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--dir", where]
        self.redis = self._spawn([*args, "--appendonly", "no"])
        wait_for_port(self.redis_port, self.redis)

    def kill_redis(self) -> None:
        self.redis.send_signal(signal.SIGKILL)
        self.redis.wait(10)

    def _spawn(
        self, args: list[str], log: str | None = None, env: dict | None = None, **popen
    ) -> subprocess.Popen:
        out = open(self.tmp / log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        env = {**self.env, **(env or {})}
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, **popen)
        self.procs.append(proc)
        return proc

    def manage(self, *args: str) -> str:
        """Run a management command in the stack's environment; return its output."""
        return subprocess.run(
            [PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, check=True, capture_output=True, text=True
        ).stdout

    def django(self, code: str) -> dict:
        """Run Python in Django against the stack's database, as `manage.py shell -c` would, with
        the stack's environment as it is now; it prints one JSON line. Raises `ShellError` with
        the traceback if the code raises."""
        return json.loads(self._shell.run(code, self.env).strip().splitlines()[-1])

    @property
    def database_url(self) -> str | None:
        return self.env.get("DATABASE_URL")

    def start_worker(self, behind_proxy: bool = False, **env: str) -> int:
        """Start a daphne worker; `env` overrides the stack's environment for it alone. Behind a
        proxy it takes the client's address from X-Forwarded-For, as `manage.py stack` runs it."""
        port = free_port()
        proc = self._spawn(
            [PYTHON, "-m", "daphne", *daphne_args("127.0.0.1", port, behind_proxy)],
            log=f"daphne-{port}.log",
            env=env,
        )
        wait_for_port(port, proc)
        self.workers[port] = proc
        return port

    def kill_worker(self, port: int) -> None:
        proc = self.workers.pop(port)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def log(self, port: int) -> str:
        return (self.tmp / f"daphne-{port}.log").read_text(errors="replace")

    def user_with_notebook(self, email: str, **notebook) -> dict:
        """Create a user (and a notebook of theirs unless notebook=None); return ids and a cookie."""
        return self.django(
            "import json\n"
            "from tests.support.processes import make_user_and_notebook\n"
            f"print(json.dumps(make_user_and_notebook({email!r}, {json.dumps(notebook)!r})))"
        )

    def call(self, function: str, *args) -> dict:
        """Call a function of this module inside the stack's Django; it returns a dict."""
        imports = f"import json\nfrom tests.support.processes import {function}\n"
        return self.django(f"{imports}print(json.dumps({function}(*{list(args)!r})))")

    def stored_source(self, notebook_id: str, index: int = 0) -> str:
        """The source of cell `index` as the database holds it now."""
        return self.django(
            "import json\nfrom notebooks.actions import current_notebook\n"
            f"print(json.dumps({{'source': current_notebook({notebook_id!r}).cells[{index}].source}}))"
        )["source"]

    def close(self) -> None:
        self._shell.close()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self._pg_db:
            databases.drop_postgres(self._pg_db)
        shutil.rmtree(self.tmp, ignore_errors=True)


def start_proxy(stack: Stack, workers: int = 2, max_body: int | None = None, **env: str) -> tuple[int, Path]:
    """nginx from the repo's configuration in front of `workers` new workers of `stack` (`env`
    overrides the stack's environment for them); nginx is stopped with the stack, its directory
    (the caller removes it) is reachable by nginx's workers."""
    nginx_missing = shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists()
    if nginx_missing or not BROTLI_STATIC_MODULE.exists():
        subprocess.run(["scripts/install_nginx.sh"], check=True)
    port = free_port()
    stack.env.setdefault("SITE_URL", f"http://127.0.0.1:{port}")  # as `manage.py stack` sets it
    upstreams = [f"127.0.0.1:{stack.start_worker(behind_proxy=True, **env)}" for _ in range(workers)]
    run_dir = Path(tempfile.mkdtemp(prefix="collab-nginx-"))
    run_dir.chmod(0o755)  # nginx's workers (www-data when started as root) keep uploads here
    (run_dir / "static").mkdir(mode=0o755)  # its static root: empty, so the workers serve them
    conf = run_dir / "nginx.conf"
    access_log = str(run_dir / "access.log")
    conf.write_text(
        nginx_conf(f"127.0.0.1:{port}", upstreams, run_dir, access_log, max_body, run_dir / "static")
    )
    argv = nginx_argv(conf, run_dir)
    argv[0] = shutil.which("nginx") or "/usr/sbin/nginx"
    wait_for_port(port, stack._spawn(argv, log="nginx.log"))
    return port, run_dir


def rss_mb(pid: int) -> float:
    """A process's resident memory in MB, from /proc."""
    return _status_mb(pid, "VmRSS")


def reset_peak_rss(pid: int) -> float:
    """Reset a process's peak resident memory to its current one (Linux clear_refs); in MB."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return peak_rss_mb(pid)


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory in MB since it started or `reset_peak_rss`."""
    return _status_mb(pid, "VmHWM")


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field}")


def child_processes(pid: int) -> dict[int, list[str]]:
    """The live (not zombie) children of process `pid`: their pids and command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(stat[1]) == pid and stat[0] != "Z":
            found[int(entry.name)] = argv
    return found


def descendants(pid: int) -> dict[int, list[str]]:
    """The live processes below `pid`: its children, theirs (nginx's workers, a Jupyter
    Server's kernels), and so on."""
    found = child_processes(pid)
    for child in list(found):
        found.update(descendants(child))
    return found


def alive(pid: int) -> bool:
    """Process `pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def make_user_and_notebook(email: str, notebook_json: str) -> dict:
    """Runs inside a stack's Django (`Stack.django`)."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from accounts.models import User
    from notebooks import actions

    # Signed in by the session made below: no password to hash (0.3-1 s of PBKDF2 per user).
    user = User.objects.create_user(email, None, display_name=email.split("@")[0].title())
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    out = {"user_id": user.pk, "cookie": f"sessionid={session.session_key}"}
    spec = json.loads(notebook_json)
    if spec is not None and spec.get("ipynb"):
        data = Path(spec["ipynb"]).read_bytes()
        out["notebook_id"] = str(actions.import_ipynb(user, spec.get("title", "Test") + ".ipynb", data).pk)
    elif spec is not None:
        out["notebook_id"] = str(actions.create_blank(user, title=spec.get("title", "Test")).pk)
    return out


def share_with(notebook_id: str, email: str, role: str) -> dict:
    """Runs inside a stack's Django (`Stack.django`)."""
    from notebooks.models import Grant

    grant = Grant.objects.create(notebook_id=notebook_id, user=user_by_email(email), role=role)
    return {"grant_id": grant.pk}


def user_by_email(email: str):
    from accounts.models import User

    return User.objects.get(email=email)
