"""Processes for bench/realtime.py: redis, the app's daphne workers and the pycrdt-websocket
server, on free ports of 127.0.0.1, with their data in one temporary directory.

Every process is started in its own session and remembered, and `Processes.stop_all()` ends
exactly those (terminate, then kill), whatever happened before.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = str(ROOT / ".venv" / "bin" / "python")


# daphne refuses websocket messages over 1 MiB in both directions by default, which makes a
# 2 MB notebook impossible to open (see bench/README.md); both servers get the same, larger limit.
DAPHNE_LIMITS = ["--websocket-max-message-size", str(256 << 20), "--websocket-max-frame-size", str(256 << 20)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s:\n{tail(log)}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Processes:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.started: list[subprocess.Popen] = []

    def start(
        self, name: str, args: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT
    ) -> tuple[subprocess.Popen, Path]:
        log = self.tmp / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started.append(proc)
        return proc, log

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5
        for proc in self.started:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.started.clear()


@dataclass
class Target:
    """A server under test, as the scenarios see it."""

    name: str
    ports: list[int]
    pids: list[int]
    headers_for: dict[int, dict[str, str]] = field(default_factory=dict)

    def url(self, worker: int, room: str) -> str:
        raise NotImplementedError

    def headers(self, worker: int) -> dict[str, str]:
        return self.headers_for[self.ports[worker % len(self.ports)]]

    def persisted(self, room: str) -> int:
        raise NotImplementedError

    def stored_bytes(self, room: str) -> int:
        """Bytes of document data the server keeps for the room (snapshot and update log)."""
        raise NotImplementedError


@dataclass
class AppTarget(Target):
    db: str = ""
    notebooks: dict[str, str] = field(default_factory=dict)  # room name -> notebook uuid

    def url(self, worker: int, room: str) -> str:
        return f"ws://127.0.0.1:{self.ports[worker % len(self.ports)]}/ws/notebooks/{self.notebooks[room]}"

    def persisted(self, room: str) -> int:
        """The notebook's last sequence number: rows may already be compacted into the snapshot."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5) as db:
            row = db.execute(
                "SELECT seq FROM notebooks_notebook WHERE id = ?", (self.notebooks[room].replace("-", ""),)
            ).fetchone()
        return row[0]

    def stored_bytes(self, room: str) -> int:
        notebook = self.notebooks[room].replace("-", "")
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5) as db:
            snapshot = db.execute(
                "SELECT length(snapshot) FROM notebooks_notebook WHERE id = ?", (notebook,)
            ).fetchone()[0]
            log = db.execute(
                "SELECT coalesce(sum(length(data)), 0) FROM notebooks_notebookupdate WHERE notebook_id = ?",
                (notebook,),
            ).fetchone()[0]
        return snapshot + log


@dataclass
class PycrdtTarget(Target):
    db: str = ""

    def url(self, worker: int, room: str) -> str:
        return f"ws://127.0.0.1:{self.ports[0]}/{room}"

    def persisted(self, room: str) -> int:
        if not Path(self.db).exists():
            return 0
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5) as db:
            try:
                return db.execute("SELECT count(*) FROM yupdates WHERE path = ?", (f"/{room}",)).fetchone()[0]
            except sqlite3.OperationalError:  # the store has not created its table yet
                return 0

    def stored_bytes(self, room: str) -> int:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5) as db:
            return db.execute(
                "SELECT coalesce(sum(length(yupdate) + length(metadata)), 0) FROM yupdates WHERE path = ?",
                (f"/{room}",),
            ).fetchone()[0]


def app_env(tmp: Path, redis_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        SQLITE_PATH=str(tmp / "app.sqlite3"),
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        SECRET_KEY="realtime-benchmark-" + "x" * 40,
        ALLOWED_HOSTS="127.0.0.1,localhost",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


def daphne(port: int, app: str) -> list[str]:
    return [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *DAPHNE_LIMITS, app]


def start_redis(procs: Processes) -> tuple[int, int]:
    port = free_port()
    no_disk = ["--save", "", "--appendonly", "no"]
    proc, log = procs.start("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", *no_disk])
    wait_for_port(port, proc, log)
    return port, proc.pid


def make_fixture(env: dict[str, str], out: Path, blanks: list[str], typical: int, big_cells: int) -> dict:
    """Migrate the app's database and create the user, session and notebooks (bench/rt_setup.py)."""
    subprocess.run([PYTHON, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, env=env, check=True)
    out.mkdir()
    args = [
        PYTHON,
        str(BENCH / "rt_setup.py"),
        str(out),
        "--typical",
        str(typical),
        "--big-cells",
        str(big_cells),
    ]
    for name in blanks:
        args += ["--blank", name]
    subprocess.run(args, cwd=ROOT, env=env, check=True)
    return json.loads((out / "fixture.json").read_text())


def start_app(
    procs: Processes, workers: int, blanks: list[str], typical: int, big_cells: int
) -> tuple[AppTarget, list[int]]:
    """redis, the database with its fixtures, then `workers` daphne processes. Returns the target
    and the pids of helper processes (redis) whose CPU counts as the server's."""
    redis_port, redis_pid = start_redis(procs)
    env = app_env(procs.tmp, redis_port)
    fixture = make_fixture(env, procs.tmp / "fixture", blanks, typical, big_cells)
    ports = [free_port() for _ in range(workers)]
    started = [
        procs.start(f"daphne{i}", daphne(port, "config.asgi:application"), env)
        for i, port in enumerate(ports)
    ]
    for port, (proc, log) in zip(ports, started, strict=True):
        wait_for_port(port, proc, log)
    pids = [proc.pid for proc, _ in started]
    notebooks = {name: nb["id"] for name, nb in fixture["notebooks"].items()}
    target = AppTarget(name="app", ports=ports, pids=pids, db=env["SQLITE_PATH"], notebooks=notebooks)
    target.headers_for = {p: {"Cookie": fixture["cookie"], "Origin": f"http://127.0.0.1:{p}"} for p in ports}
    return target, [redis_pid]


def start_pycrdt(procs: Processes, name: str = "pycrdt") -> PycrdtTarget:
    """The comparison server (bench/pycrdt_server.py); its store lives in procs.tmp, so a second
    start serves what the first one stored."""
    db = procs.tmp / "ystore.sqlite3"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(PYCRDT_BENCH_STORE=str(db), PYTHONUNBUFFERED="1")
    port = free_port()
    proc, log = procs.start(name, daphne(port, "pycrdt_server:application"), env, cwd=BENCH)
    wait_for_port(port, proc, log)
    target = PycrdtTarget(name="pycrdt-websocket", ports=[port], pids=[proc.pid], db=str(db))
    target.headers_for = {port: {"Origin": f"http://127.0.0.1:{port}"}}
    return target
