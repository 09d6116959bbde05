"""Sessions on two real daphne workers are both in the log, with the right person."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.processes import Stack
from tests.support.waiting import eventually_async
from tests.support.yclient import open_client

pytestmark = pytest.mark.processes


@pytest.fixture(scope="module")
def stack():
    stack = Stack(redis=True)
    yield stack
    stack.close()


def session_events(stack: Stack, notebook_id: str) -> list[list]:
    return stack.django(
        "import json\nfrom audit.models import AuditEvent\n"
        f"rows = AuditEvent.objects.filter(notebook_id={notebook_id!r}, action__startswith='session.')"
        ".order_by('id').values_list('action', 'actor_id', 'actor_label', 'details')\n"
        "print(json.dumps({'rows': [list(r) for r in rows]}))"
    )["rows"]


async def test_joins_on_two_workers_are_both_recorded(stack):
    alice = stack.user_with_notebook("alice-workers@example.com")
    a_port, b_port = stack.start_worker(), stack.start_worker()
    first = await open_client(a_port, alice["notebook_id"], alice["cookie"])
    first.text().insert(0, "x = 1")
    await first.flush()

    async def saved() -> bool:
        return "x = 1" in await asyncio.to_thread(stack.stored_source, alice["notebook_id"])

    await eventually_async(saved, timeout=30, what="the edit to be saved")
    await first.ws.close()
    second = await open_client(b_port, alice["notebook_id"], alice["cookie"])
    await second.ws.close()

    async def four_rows() -> list | None:
        rows = await asyncio.to_thread(session_events, stack, alice["notebook_id"])
        return rows if len(rows) == 4 else None

    rows = await eventually_async(four_rows, timeout=30, what="two joins and two leaves", every=0.1)
    # worker A's "left" and worker B's "joined" may be written in either order
    assert sorted(r[0] for r in rows) == ["session.joined"] * 2 + ["session.left"] * 2
    assert rows[0][0] == "session.joined"
    assert {r[1] for r in rows} == {alice["user_id"]}
    assert {r[2] for r in rows} == {"Alice-Workers"}
    assert sorted(r[3]["updates"] for r in rows if r[0] == "session.left") == [0, 1]
