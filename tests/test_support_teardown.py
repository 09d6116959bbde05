"""A test whose event loop left a query running in asgiref's thread must not break the
emptying of the database after it (on PostgreSQL the two deadlocked): the conftest's
`pytest_runtest_teardown` waits for that query first."""

from __future__ import annotations

import asyncio
import time

import pytest
from channels.db import database_sync_to_async
from django.db import transaction

from accounts.models import User
from notebooks.models import Notebook

pytestmark = pytest.mark.django_db(transaction=True)


def _reads_two_tables_slowly():
    with transaction.atomic():
        list(Notebook.objects.all()[:1])
        time.sleep(0.5)  # the test is over and its teardown empties the tables meanwhile
        list(User.objects.all()[:1])


@pytest.mark.parametrize("run", range(2))
async def test_a_query_left_running_does_not_break_the_next_test(alice, run):
    """The second run's `alice` would already exist if the first run's teardown had failed."""
    left_running = asyncio.ensure_future(database_sync_to_async(_reads_two_tables_slowly)())
    started = time.monotonic()
    while time.monotonic() - started < 0.1:  # let the query start in asgiref's thread
        await asyncio.sleep(0.01)
    assert not left_running.done()  # the test ends with its query still running
