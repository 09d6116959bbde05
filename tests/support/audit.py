"""Audit events for tests: many at once, moved into the past, and a small, varied log for the
browser test (`seed_activity` runs inside a stack's Django, `Stack.django`)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from audit import log as audit
from audit.models import AuditEvent


def many_events(notebook, actor, n: int, action: str = "session.joined", **details) -> list[int]:
    """n events in one INSERT; returns their ids, oldest first."""
    events = [audit.build(action, notebook=notebook, actor=actor, n=i, **details) for i in range(n)]
    AuditEvent.objects.bulk_create(events)
    return list(
        AuditEvent.objects.filter(notebook_id=notebook.pk, action=action)
        .order_by("id")
        .values_list("id", flat=True)
    )


def backdate(event_ids, days: float) -> None:
    """Move events into the past. Tests only: the app has no way to change an event."""
    from django.db.models import QuerySet

    QuerySet.update(
        AuditEvent._base_manager.filter(id__in=event_ids), at=timezone.now() - timedelta(days=days)
    )


CODE = 'import pandas as pd\ndf = pd.read_csv("data.csv")\ndf.describe()'


def seed_activity(notebook_id: str) -> dict:
    from accounts.models import User
    from audit import log as audit
    from notebooks.models import Notebook, ShareLink

    nb = Notebook.objects.get(pk=notebook_id)
    alice = nb.owner
    bob = User.objects.create_user("bob@example.com", None, display_name="Bob Jones")
    link = ShareLink.objects.create(
        notebook=nb, token_hash="x" * 64, label="Seminar", role="editor", require_login=False
    )
    audit.record("grant.added", notebook=nb, actor=alice, email="bob@example.com", role="editor")
    audit.record(
        "link.created", notebook=nb, actor=alice, link_label="Seminar", role="editor", require_login=False
    )
    audit.record("session.joined", notebook=nb, actor=bob, via="direct", role="editor")
    run = {"status": "ok", "duration_ms": 412, "execution_count": 3}
    audit.record("cell.executed", notebook=nb, actor=bob, cell_id="c1", code=CODE, **run)
    run = {"status": "error", "duration_ms": 8, "execution_count": 4}
    audit.record("cell.executed", notebook=nb, actor=bob, cell_id="c2", code="1/0", **run)
    audit.record("link.used", notebook=nb, link=link, role="editor")
    audit.record("session.joined", notebook=nb, link=link, via="link", role="editor")
    audit.record("session.left", notebook=nb, link=link, updates=5, denied=0, cells=["c1"])
    audit.record("session.left", notebook=nb, actor=bob, updates=17, denied=0, cells=["c1", "c2"])
    return {"link_id": link.pk}
