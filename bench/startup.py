"""Worker start: process start to the first 200 from /healthz, and what a worker imports.

    .venv/bin/python bench/startup.py            # 5 runs of each, about 1 minute on 2 cores
    .venv/bin/python bench/startup.py --runs 9 --baseline /tmp/base   # interleaved with another checkout

Two ways a worker starts, each against a fresh database and its own redis-server (loopback):
- `daphne config.asgi:application`, as `manage.py stack` and the tests start workers;
- `manage.py serve 127.0.0.1 PORT --behind-proxy`, as the Procfile and the systemd unit do
  (it runs `collectstatic` first; JUPYTER_SERVER_URL points at a port that accepts
  connections, so that no local Jupyter Server is started and /healthz can answer 200).
Then `python -X importtime` of `django.setup(); import config.asgi`: the slowest modules
(cumulative) and which heavy optional modules got imported. Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django

django.setup()

from config.serving import daphne_args  # noqa: E402
from tests.support.processes import PYTHON, Stack, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOG = None  # stderr of the started workers (set to subprocess.DEVNULL to hide it)
HEAVY = (
    "nbformat",
    "jsonschema",
    "jupyter_ydoc",
    "jupyter_client",
    "pycrdt_websocket",
    "httpx",
    "websockets",
)


def first_answer(argv: list[str], port: int, env: dict[str, str], tree: Path = ROOT) -> float:
    """Seconds from spawning `argv` in the checkout `tree` to the first 200 from its /healthz."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=LOG)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - start
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() - start > 300:
                raise RuntimeError(f"{argv[:4]} exited or did not answer within 300 s")
            time.sleep(0.01)
    finally:
        proc.terminate()
        proc.wait(10)


def imports(
    env: dict[str, str], count: int, tree: Path = ROOT
) -> tuple[float, list[tuple[str, float]], list[str]]:
    """(total s, the `count` slowest modules by cumulative time, heavy modules imported)."""
    code = (
        "import django; django.setup(); import config.asgi, sys; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", code],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
        if m:
            rows.append((m.group(3), int(m.group(1)) / 1e6, len(m.group(2))))
    total = sum(s for _, s, depth in rows if depth <= 1)
    top = sorted(((n, s) for n, s, _ in rows), key=lambda r: -r[1])[:count]
    return total, top, [m for m in done.stdout.strip().split(",") if m]


def argv_for(how: str, port: int) -> list[str]:
    if how == "daphne":
        return [PYTHON, "-m", "daphne", *daphne_args("127.0.0.1", port)]
    return [PYTHON, "manage.py", "serve", "127.0.0.1", str(port), "--behind-proxy"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (e.g. `git worktree add /tmp/base main`) measured in turn with this one",
    )
    args = parser.parse_args()
    trees = {"this checkout": ROOT}
    if args.baseline:
        trees = {f"baseline ({args.baseline})": args.baseline.resolve(), **trees}
    stack = Stack()
    listener = socket.create_server(("127.0.0.1", 0))  # stands in for the kernel server
    env = {**stack.env, "JUPYTER_SERVER_URL": f"http://127.0.0.1:{listener.getsockname()[1]}"}
    env["JUPYTER_SERVER_TOKEN"] = "unused"
    loads = []
    try:
        results: dict[tuple[str, str], list[float]] = {}
        for how in ("daphne", "serve"):
            for _ in range(args.runs):  # in turn, so that both see the same machine
                for label, tree in trees.items():
                    port = free_port()
                    results.setdefault((label, how), []).append(
                        first_answer(argv_for(how, port), port, env, tree)
                    )
                    loads.append(float(Path("/proc/loadavg").read_text().split()[0]))
        print(f"\n/proc/loadavg (1 min) during the runs: {min(loads):.1f} to {max(loads):.1f}\n")
        print(
            f"| start to first /healthz 200 ({args.runs} runs) | median ms | min | max |\n|---|---|---|---|"
        )
        labels = {"daphne": "`daphne config.asgi:application`", "serve": "`manage.py serve`"}
        for (label, how), times in results.items():
            ms = [1000 * t for t in times]
            print(f"| {label}: {labels[how]} | {statistics.median(ms):.0f} | {min(ms):.0f} | {max(ms):.0f} |")
        for label, tree in trees.items():
            total, top, heavy = imports(env, 8, tree)
            print(f"\n{label}: imports of `django.setup(); import config.asgi` {total:.2f} s at top level.")
            print("Heavy optional modules imported:", ", ".join(heavy) or "none")
            print("Slowest (cumulative):", ", ".join(f"{n} {s:.2f} s" for n, s in top))
    finally:
        listener.close()
        stack.close()


if __name__ == "__main__":
    main()
