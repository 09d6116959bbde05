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
