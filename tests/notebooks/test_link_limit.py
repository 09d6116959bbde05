"""A link's use limit holds under a crowd: 30 people open a 3-use link at the same moment, on two
daphne workers sharing one database (SQLite or PostgreSQL), and exactly 3 get in. The workers'
access logs never show the token."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.processes import Stack

PEOPLE, LIMIT = 30, 3


@pytest.fixture(scope="module")
def stack():
    stack = Stack(redis=False)
    yield stack
    stack.close()


def limited_link(stack: Stack, notebook_id: str) -> str:
    return stack.django(
        "import json\n"
        "from notebooks import access, sharing\n"
        "from notebooks.models import Notebook, Role\n"
        f"nb = Notebook.objects.get(pk={notebook_id!r})\n"
        "owner = access.access_notebook(access.principal_from_session(nb.owner, None), nb.pk)\n"
        "_, token = sharing.create_link(owner, label='Crowd', role=Role.VIEWER, require_login=False,"
        f" max_uses={LIMIT})\n"
        "print(json.dumps({'token': token}))"
    )["token"]


def test_thirty_people_at_once_on_two_workers_get_exactly_three_uses(stack):
    alice = stack.user_with_notebook("crowd@example.com")
    ports = [stack.start_worker(), stack.start_worker()]
    for port in ports:  # warm up: the first request of a worker does its start-up work
        httpx.get(f"http://127.0.0.1:{port}/", timeout=30)
    token = limited_link(stack, alice["notebook_id"])
    start = threading.Barrier(PEOPLE)

    def open_link(i: int) -> int:
        with httpx.Client(base_url=f"http://127.0.0.1:{ports[i % 2]}", timeout=60) as client:
            start.wait()
            return client.get(f"/s/{token}").status_code

    with ThreadPoolExecutor(PEOPLE) as pool:
        statuses = list(pool.map(open_link, range(PEOPLE)))
    assert sorted(statuses) == [302] * LIMIT + [404] * (PEOPLE - LIMIT), statuses
    stored = stack.django(
        "import json\nfrom notebooks.models import LinkJoin, ShareLink\nlink = ShareLink.objects.get()\n"
        "print(json.dumps({'uses': link.use_count, 'joins': LinkJoin.objects.count()}))"
    )
    assert stored == {"uses": LIMIT, "joins": LIMIT}
    for port in ports:  # daphne's access log shows the path without the token
        assert token not in stack.log(port)
        assert "/s/<token>" in stack.log(port)
