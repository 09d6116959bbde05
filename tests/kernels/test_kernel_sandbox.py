"""The default set-up (`manage.py serve`, which starts its own Jupyter Server) runs strangers'
code: each notebook's kernel reaches nothing but itself (kernels.sandbox).

Mallory is a brand-new account; her notebook's one cell tries every way out it can think of and
prints one line per attempt. Alice's notebook is the neighbour she tries to read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.kernel_http import Browserish, texts, write_code_notebook
from tests.support.processes import PYTHON, ROOT, Stack, free_port, wait_for_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.processes

MEMORY_MB = 1024
MAX_PROCESSES = 40
CPU_SECONDS = 5  # of CPU time: the spinning cell takes this long (a kernel starts in about 1 s)

ALICE_WRITES = """
import os
open("alice-secret.txt", "w").write("alice's secret 7f3a")
print("uid", os.getuid(), "home", os.getcwd())
"""
ALICE_READS = 'print(open("alice-secret.txt").read())'
PROBE = """
import os
print("uid", os.getuid())
print("pids", len([p for p in os.listdir("/proc") if p.isdigit()]))
print("home", sorted(os.listdir("/home")), sorted(os.listdir(".")))
"""

ATTACK = r"""
import glob, os, socket, subprocess, time

def attempt(name, action):
    try:
        print(name, "LEAKED", repr(action())[:300])
    except BaseException as exc:
        print(name, "BLOCKED", type(exc).__name__)

def read(path):
    with open(path, "rb") as f:
        return f.read(200)

def find_alice():
    hits = glob.glob(HOMES + "/*/alice-secret.txt") + glob.glob(HOMES + "/.scratch/*/alice-secret.txt")
    for top in ("/home", "/tmp", "/work", "/root", "/var", "/srv", "/mnt"):
        hits += glob.glob(top + "/**/alice-secret.txt", recursive=True)
    return read(hits[0])

def processes():
    seen = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            for name in ("cmdline", "environ"):
                try:
                    seen.append(read(f"/proc/{pid}/{name}"))
                except OSError:
                    pass
    text = b" ".join(seen)
    if b"token" in text.lower() or len([p for p in os.listdir("/proc") if p.isdigit()]) > 4:
        return text
    raise PermissionError("only the sandbox's own processes")

def connect(port):
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    return f"connected to {port}"

def rest_api():
    import urllib.request
    return urllib.request.urlopen(f"http://127.0.0.1:{JUPYTER_PORT}/api/kernels", timeout=2).read()

def fork_bomb():
    children = []
    try:
        for _ in range(300):
            pid = os.fork()
            if pid == 0:
                time.sleep(3)
                os._exit(0)
            children.append(pid)
        return f"forked {len(children)}"
    finally:
        for pid in children:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        print("forked before refusal:", len(children))

attempt("secret_key", lambda: read(SECRET_KEY))
attempt("database", lambda: read(DATABASE))
attempt("alice_files", find_alice)
attempt("processes", processes)
attempt("jupyter_api", rest_api)
attempt("redis", lambda: connect(REDIS_PORT))
attempt("postgres", lambda: connect(5432))
attempt("app", lambda: connect(APP_PORT))
def settings_in_environment():
    found = {k: v for k, v in os.environ.items() if any(w in k for w in ("SECRET", "TOKEN", "DATABASE"))}
    if found:
        return found
    raise LookupError("no settings")

attempt("environment", settings_in_environment)
attempt("fork_bomb", fork_bomb)
attempt("memory", lambda: len(bytearray(MEMORY_MB * 2**20 + 2**20)))
print("uid", os.getuid())
"""

ATTEMPTS = [
    "secret_key",
    "database",
    "alice_files",
    "processes",
    "jupyter_api",
    "redis",
    "postgres",
    "app",
    "environment",
    "fork_bomb",
    "memory",
]


def _jupyter_of(serve: psutil.Process) -> tuple[int, str]:
    """The port and token of the Jupyter Server that `serve` started (read as root, from outside)."""
    [server] = [p for p in serve.children() if "jupyter_server" in " ".join(p.cmdline())]
    token = server.environ()["JUPYTER_TOKEN"]
    ports = [c.laddr.port for c in server.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
    return ports[0], token


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[Stack]:
    """`manage.py serve` as `run.sh` starts it (its own sandboxed Jupyter Server), plus Redis."""
    tmp = tmp_path_factory.mktemp("sandbox")
    stack = Stack(
        redis=True,
        KERNEL_HOMES_DIR=str(tmp / "homes"),
        KERNEL_MEMORY_MB=str(MEMORY_MB),
        KERNEL_MAX_PROCESSES=str(MAX_PROCESSES),
        KERNEL_CPU_SECONDS=str(CPU_SECONDS),
    )
    for name in ("JUPYTER_SERVER_URL", "JUPYTER_SERVER_TOKEN", "KERNEL_SANDBOX"):
        stack.env.pop(name, None)
    try:
        stack.port = free_port()
        serve = stack._spawn([PYTHON, "manage.py", "serve", "127.0.0.1", str(stack.port)], log="serve.log")
        wait_for_port(stack.port, serve, timeout=60)
        stack.jupyter_port, stack.jupyter_token = _jupyter_of(psutil.Process(serve.pid))
        stack.homes = tmp / "homes"
        stack.alice = stack.user_with_notebook(
            "alice@example.com",
            title="Alice",
            ipynb=write_code_notebook(tmp / "a.ipynb", {"w": ALICE_WRITES, "r": ALICE_READS, "probe": PROBE}),
        )
        yield stack
    finally:
        stack.close()


def _mallory(app: Stack, tmp: Path, email: str) -> Browserish:
    settings = {
        "HOMES": str(app.homes),
        "SECRET_KEY": str(ROOT / "var" / "secret_key"),
        "DATABASE": app.env.get("SQLITE_PATH", str(ROOT / "var" / "db.sqlite3")),
        "JUPYTER_PORT": app.jupyter_port,
        "REDIS_PORT": app.redis_port,
        "APP_PORT": app.port,
        "MEMORY_MB": MEMORY_MB,
    }
    prelude = "".join(f"{name} = {value!r}\n" for name, value in settings.items())
    cells = {
        "attack": prelude + ATTACK,
        "alive": "print('still here', 6 * 7)",
        "spin": "while True: pass",
        "probe": PROBE,
    }
    mallory = app.user_with_notebook(
        email, title="Innocent", ipynb=write_code_notebook(tmp / "m.ipynb", cells)
    )
    return Browserish(app.port, mallory["cookie"], mallory["notebook_id"])


def _run(client: Browserish, cell_id: str, last_words: str, timeout: float = 60) -> dict:
    """Run one cell, wait for the run to end and for `last_words` (what the cell prints last)
    to be in its saved outputs: a download reads the database, whose writes follow the run's
    end by a few milliseconds (the execution count arrives first, with the run's start)."""
    assert client.post("run", {"cell_ids": [cell_id]}).status_code == 202
    seen: list[dict] = []

    def finished() -> dict | None:
        status = client.status()
        if status["running"] == cell_id or cell_id in status["queue"]:
            return None
        seen[:] = [client.cell(cell_id)]
        return seen[0] if last_words in texts(seen[0]) + json.dumps(seen[0]["outputs"]) else None

    try:
        return eventually(finished, timeout=timeout, what=f"cell {cell_id} to finish")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the cell: {json.dumps(seen[-1:])[:3000]}") from None


def test_a_strangers_cell_reaches_nothing_but_its_own_kernel(app, tmp_path):
    alice = Browserish(app.port, app.alice["cookie"], app.alice["notebook_id"])
    assert "uid 2" in texts(_run(alice, "w", "home"))  # Alice's home now holds her file
    assert (ROOT / "var" / "secret_key").exists()

    mallory = _mallory(app, tmp_path, "mallory@example.com")
    cell = _run(mallory, "attack", "\nuid ", timeout=120)
    out = texts(cell) or json.dumps(cell["outputs"])
    lines = {line.split(" ", 1)[0]: line for line in out.splitlines() if " " in line}
    for name in ATTEMPTS:
        assert f"{name} BLOCKED" in lines.get(name, ""), out
    assert "memory BLOCKED MemoryError" in out
    forked = int(out.split("forked before refusal:")[1].split()[0])
    assert forked < MAX_PROCESSES, out
    assert app.jupyter_token not in out
    assert (ROOT / "var" / "secret_key").read_text().strip()[:12] not in out
    assert "alice's secret" not in out

    # the kernel survived all of it, and the app and the neighbour kept going
    assert "still here 42" in texts(_run(mallory, "alive", "still here"))
    assert httpx.get(f"http://127.0.0.1:{app.port}/accounts/login/").status_code == 200
    assert "alice's secret 7f3a" in texts(_run(alice, "r", "secret"))


def test_two_notebooks_kernels_are_different_users_that_cannot_see_each_other(app, tmp_path):
    alice = Browserish(app.port, app.alice["cookie"], app.alice["notebook_id"])
    mallory = _mallory(app, tmp_path, "mallory2@example.com")
    mine = texts(_run(mallory, "probe", "home"))
    theirs = texts(_run(alice, "probe", "home"))  # both kernels are running now
    uid_m, uid_a = (int(text.split("uid ")[1].split()[0]) for text in (mine, theirs))
    assert uid_m != uid_a
    assert min(uid_m, uid_a) >= 200000
    for text in (mine, theirs):
        assert int(text.split("pids ")[1].split()[0]) <= 4  # bubblewrap's init, the kernel, ps
        assert "home ['notebook']" in text
    assert "alice-secret.txt" in theirs
    assert "alice-secret.txt" not in mine
    homes = sorted(p.stat().st_uid for p in app.homes.iterdir() if not p.name.startswith("."))
    assert {uid_m, uid_a} <= set(homes)
    assert all(oct(p.stat().st_mode)[-3:] == "700" for p in app.homes.iterdir())


def test_a_kernel_killed_by_its_cpu_limit_says_so_in_the_cell(app, tmp_path):
    mallory = _mallory(app, tmp_path, "mallory3@example.com")
    cell = _run(mallory, "spin", "The kernel died", timeout=CPU_SECONDS * 6)
    error = json.dumps(cell["outputs"])
    assert "The kernel died while this cell was running" in error
    assert f"{CPU_SECONDS} s of CPU time" in error
    assert "still here 42" in texts(_run(mallory, "alive", "still here"))  # the next run has a kernel


def test_the_apps_secrets_are_readable_by_the_app_only():
    var = ROOT / "var"
    assert oct(var.stat().st_mode)[-3:] == "700"
    assert oct((var / "secret_key").stat().st_mode)[-3:] == "600"
