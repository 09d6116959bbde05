"""A test whose event loop left a query running in asgiref's thread must not break the
emptying of the database after it (on PostgreSQL the two deadlocked): the conftest's
`pytest_runtest_teardown` waits for that query first."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from channels.db import database_sync_to_async
from django.db import connection, transaction

from tests.support.waiting import eventually_async

pytestmark = pytest.mark.django_db(transaction=True)


def _reads_two_tables_slowly(started: threading.Event):
    """Holds a lock on the table the teardown's TRUNCATE takes last while it waits, then asks
    for the one TRUNCATE took first: without the conftest's wait, a deadlock on PostgreSQL."""
    tables = connection.introspection.django_table_names(only_existing=True, include_views=False)
    quote = connection.ops.quote_name
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {quote(tables[-1])} LIMIT 1")  # in the order flush uses
        started.set()
        time.sleep(0.5)  # the test is over and its teardown empties the tables meanwhile
        cursor.execute(f"SELECT 1 FROM {quote(tables[0])} LIMIT 1")


@pytest.mark.parametrize("run", range(2))
async def test_a_query_left_running_does_not_break_the_next_test(alice, run):
    """The second run's `alice` would already exist if the first run's teardown had failed."""
    started = threading.Event()
    left_running = asyncio.ensure_future(database_sync_to_async(_reads_two_tables_slowly)(started))
    await eventually_async(started.is_set, what="the query to start in asgiref's thread")
    assert not left_running.done()  # the test ends with its query still running
