"""A fresh, migrated database for each stack, copied from one migrated once per test process:
`manage.py migrate` took about 1.6 s for each of the suite's stacks, a copy takes milliseconds.

SQLite: the template is a file in a temporary folder of this process, copied file to file.
PostgreSQL: the template is a database `collab_proc_tpl_<uuid>` that takes no connection once
migrated (a connection to a template makes `CREATE DATABASE ... TEMPLATE` fail); each stack's
database is `CREATE DATABASE <name> TEMPLATE <template>`. A template that cannot be used (gone,
or still held by a connection after a few seconds) is made again. Each test process (pytest-xdist)
has its own template, removed when the process exits."""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
_sqlite_template: Path | None = None
_postgres_template: str | None = None


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )


def copy_sqlite(dest: Path, env: dict[str, str]) -> None:
    """A migrated SQLite database at `dest`; `env` is the environment to migrate the template in."""
    global _sqlite_template
    if _sqlite_template is None or not _sqlite_template.exists():
        folder = Path(tempfile.mkdtemp(prefix="collab-test-db-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        template = folder / "template.sqlite3"
        migrate({**env, "SQLITE_PATH": str(template)})
        # Everything into the database file itself: the write-ahead log is not copied.
        with contextlib.closing(sqlite3.connect(template)) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _sqlite_template = template
    shutil.copyfile(_sqlite_template, dest)


def create_postgres(name: str, env: dict[str, str]) -> str:
    """Create the migrated database `name` on the server of DATABASE_URL; return its URL. `env`
    is the environment to migrate the template in."""
    global _postgres_template
    import psycopg

    for _ in range(2):
        if _postgres_template is None:
            _postgres_template = _make_postgres_template(env)
        template = _postgres_template
        try:
            eventually(
                functools.partial(_create_from, name, template),
                what=f"template {template} to have no connection",
                timeout=5,
            )
            return _url_for(name)
        except (AssertionError, psycopg.errors.InvalidCatalogName):
            _drop_postgres(template)
            _postgres_template = None
    raise RuntimeError(f"no usable template to create {name} from")


def drop_postgres(name: str) -> None:
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _make_postgres_template(env: dict[str, str]) -> str:
    template = f"collab_proc_tpl_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{template}"')
    atexit.register(_drop_postgres, template)
    migrate({**env, "DATABASE_URL": _url_for(template)})
    _admin(f'ALTER DATABASE "{template}" WITH ALLOW_CONNECTIONS false')
    return template


def _create_from(name: str, template: str) -> bool:
    """False while a connection to the template remains (a migrate's server process may still
    be ending after the client is gone)."""
    import psycopg

    try:
        _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    except psycopg.errors.ObjectInUse:
        return False
    return True


def _drop_postgres(name: str) -> None:
    import psycopg

    with contextlib.suppress(psycopg.OperationalError):  # the server is gone: nothing to drop
        drop_postgres(name)


def _url_for(name: str) -> str:
    return urlunsplit(urlsplit(os.environ["DATABASE_URL"])._replace(path="/" + name))


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(sql)
