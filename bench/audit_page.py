"""How fast is the owner's Activity page with 100,000 events?

    .venv/bin/python bench/audit_page.py                       # SQLite (a temporary file)
    DATABASE_URL=postgres://user@127.0.0.1:5432/postgres .venv/bin/python bench/audit_page.py
                                                               # SQLite, then PostgreSQL (a new database)
    options: --events 100000 --noise 100000 --runs 20

Each backend runs in a child process (settings are read once per process): migrate a fresh
database, write the events through `bulk_create` (one notebook with --events, spread over the
last year, and --noise events spread over 20 other notebooks, interleaved so the notebook's ids
are not contiguous), then time the page through Django's test Client (the whole view: access
check, the people list, the keyset query, template rendering), median and p95 over --runs
requests after two warm-ups. Prints one Markdown table per backend. Target: under 200 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ACTIONS = [  # (action, weight) of a busy notebook's log
    ("cell.executed", 45),
    ("session.joined", 19),
    ("session.left", 19),
    ("kernel.started", 2),
    ("kernel.restarted", 2),
    ("kernel.interrupted", 1),
    ("notebook.downloaded", 3),
    ("access.denied", 2),
    ("link.used", 1.5),
    ("link.created", 0.3),
    ("link.revoked", 0.2),
    ("grant.added", 0.3),
    ("grant.changed", 0.2),
    ("grant.removed", 0.1),
    ("invitation.sent", 0.2),
    ("notebook.renamed", 0.2),
]
CODE = "import pandas as pd\ndf = pd.read_csv('data.csv')\ndf.groupby('region').sales.sum().plot()\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--noise", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--child", choices=["sqlite", "postgres"])
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    passed = [f"--events={args.events}", f"--noise={args.noise}", f"--runs={args.runs}"]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        env["SQLITE_PATH"] = str(Path(tmp) / "bench.sqlite3")
        run_child("sqlite", passed, env)
    if os.environ.get("DATABASE_URL"):
        with postgres_database(os.environ["DATABASE_URL"]) as url:
            run_child("postgres", passed, {**os.environ, "DATABASE_URL": url})


def run_child(backend: str, passed: list[str], env: dict) -> None:
    env = {**env, "DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "false", "LOG_LEVEL": "ERROR"}
    subprocess.run([sys.executable, __file__, "--child", backend, *passed], cwd=ROOT, env=env, check=True)


class postgres_database:
    """A new database next to the one DATABASE_URL names, dropped afterwards."""

    def __init__(self, url: str):
        self.admin, self.name = url, f"audit_bench_{uuid.uuid4().hex[:8]}"

    def _sql(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(sql)

    def __enter__(self) -> str:
        self._sql(f"CREATE DATABASE {self.name}")
        return urlunsplit(urlsplit(self.admin)._replace(path="/" + self.name))

    def __exit__(self, *exc) -> None:
        self._sql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


# ---- in the child process ------------------------------------------------------------------


def child(args) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    world = seed(args.events, args.noise)
    seeded = time.perf_counter() - started
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE audit_auditevent")
    rows = measure(world, args.runs)
    version = (
        connection.cursor().connection.execute("select sqlite_version()").fetchone()[0]
        if (connection.vendor == "sqlite")
        else connection.cursor().connection.info.server_version
    )
    print(
        f"\n### {connection.vendor} {version}: {args.events:,} events in the notebook, "
        f"{args.noise:,} in 20 others (seeded in {seeded:.0f} s), {args.runs} requests each\n"
    )
    print("| request | events shown | median ms | p95 ms |")
    print("|---|---:|---:|---:|")
    for name, shown, median, p95 in rows:
        print(f"| {name} | {shown} | {median:.1f} | {p95:.1f} |")
    sys.stdout.flush()


def seed(n: int, noise: int) -> dict:
    from django.utils import timezone

    from accounts.models import User
    from audit.models import AuditEvent
    from notebooks import actions
    from notebooks.models import ShareLink

    rng = random.Random(42)
    alice = User.objects.create_user("alice@example.com", None, display_name="Alice")
    people = [alice] + [
        User.objects.create_user(f"user{i}@example.com", None, display_name=f"User {i}") for i in range(11)
    ]
    notebook = actions.create_blank(alice, title="Busy notebook")
    others = [actions.create_blank(people[i % 12], title=f"Other {i}") for i in range(20)]
    links = [
        ShareLink.objects.create(
            notebook=notebook,
            token_hash=uuid.uuid4().hex * 2,
            label=f"Group {i}",
            role="editor",
            require_login=False,
        )
        for i in range(3)
    ]
    # Alice and user1 do most things; user11 almost nothing; 3% are link guests.
    weights = [30, 25, 10, 8, 6, 5, 4, 3, 2, 2, 1.5, 0.5]
    names, action_weights = zip(*ACTIONS, strict=True)
    field = AuditEvent._meta.get_field("at")
    field.auto_now_add = False  # bench only: spread `at` over the last year
    now, year = timezone.now(), 365 * 86400
    targets = [notebook] * n + [others[i % 20] for i in range(noise)]
    rng.shuffle(targets)
    batch = []
    for i, target in enumerate(targets):
        action = rng.choices(names, action_weights)[0]
        at = now - timedelta(seconds=year * (1 - i / len(targets)))
        if rng.random() < 0.03:
            link = rng.choice(links)
            who = {"actor": None, "link_id": link.pk, "actor_label": f"Guest via {link.label}"}
        else:
            user = rng.choices(people, weights)[0]
            who = {"actor": user, "actor_label": user.email}
        details = {"via": "grant", "role": "editor"}
        if action == "cell.executed":
            details = {
                "cell_id": f"c{i % 50}",
                "code": CODE,
                "status": "ok",
                "duration_ms": 120,
                "execution_count": i % 300,
            }
        elif action == "session.left":
            details = {"updates": i % 40, "denied": 0, "cells": [f"c{i % 50}"]}
        batch.append(
            AuditEvent(
                notebook_id=target.pk,
                notebook_title=target.title,
                action=action,
                details=details,
                ip="203.0.113.5",
                user_agent="Mozilla/5.0",
                at=at,
                **who,
            )
        )
        if len(batch) == 5000:
            AuditEvent.objects.bulk_create(batch)
            batch = []
    AuditEvent.objects.bulk_create(batch)
    field.auto_now_add = True
    ids = list(
        AuditEvent.objects.filter(notebook_id=notebook.pk).order_by("-id").values_list("id", flat=True)
    )
    return {"notebook": notebook, "alice": alice, "people": people, "links": links, "ids": ids, "now": now}


def measure(world: dict, runs: int) -> list[tuple[str, int, float, float]]:
    from django.test import Client

    client = Client(HTTP_HOST="localhost")
    client.force_login(world["alice"])
    base = f"/n/{world['notebook'].pk}/activity"
    ids, people, links = world["ids"], world["people"], world["links"]
    half_year_ago = (world["now"] - timedelta(days=180)).date()
    cases = [
        ("first page", {}),
        ("page 2 (keyset)", {"before": ids[50]}),
        (f"deep page: {int(len(ids) * 0.9):,} events back", {"before": ids[int(len(ids) * 0.9)]}),
        ("last page", {"before": ids[-10]}),
        ("← newer from deep", {"after": ids[int(len(ids) * 0.9)]}),
        ("action = cell.executed (45%)", {"action": "cell.executed"}),
        ("action group link.* (2%)", {"action": "link."}),
        ("action = grant.removed (0.1%)", {"action": "grant.removed"}),
        ("person: Alice (30%)", {"person": f"u{people[0].pk}"}),
        ("person: User 11 (0.5%)", {"person": f"u{people[11].pk}"}),
        ("person: guest via link (1%)", {"person": f"g{links[0].pk}"}),
        ("person + action", {"person": f"u{people[1].pk}", "action": "cell.executed"}),
        ("one week, 6 months ago", {"from": half_year_ago, "to": half_year_ago + timedelta(days=6)}),
    ]
    rows = []
    for name, params in cases:
        timings = []
        for i in range(runs + 2):
            started = time.perf_counter()
            response = client.get(base, params)
            elapsed = (time.perf_counter() - started) * 1000
            assert response.status_code == 200, response.status_code
            if i >= 2:
                timings.append(elapsed)
        shown = response.content.count(b'data-testid="event"')
        timings.sort()
        p95 = timings[min(len(timings) - 1, round(0.95 * (len(timings) - 1)))]
        rows.append((name, shown, statistics.median(timings), p95))
    started = time.perf_counter()
    response = client.get(base, {"format": "csv"})
    size = sum(len(chunk) for chunk in response.streaming_content)
    elapsed = (time.perf_counter() - started) * 1000
    rows.append((f"CSV export of all ({size / 1e6:.1f} MB, once)", len(ids), elapsed, elapsed))
    return rows


if __name__ == "__main__":
    main()
