"""Writing audit events.

`record()` writes inside the caller's transaction, so an action and its event commit together
(and a request failing after the action still leaves the event). The real-time engine, which
must never wait on the log, hands events to `record_many()` from its persistence thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from audit.models import AuditEvent


def client_info(request) -> dict[str, Any]:
    """IP address and user agent of an HTTP request or a websocket scope."""
    if request is None:
        return {}
    if isinstance(request, dict):  # ASGI scope
        client = request.get("client") or (None, None)
        headers = dict(request.get("headers", []))
        return {
            "ip": client[0],
            "user_agent": headers.get(b"user-agent", b"").decode("latin-1")[:300],
        }
    return {
        "ip": request.META.get("REMOTE_ADDR"),
        "user_agent": request.META.get("HTTP_USER_AGENT", "")[:300],
    }


def build(
    action: str,
    *,
    notebook=None,
    actor=None,
    link=None,
    label: str = "",
    request=None,
    **details: Any,
) -> AuditEvent:
    """An unsaved event. `actor` is a User, `link` the ShareLink a guest came through."""
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    if not label:
        label = actor.email if actor is not None else (f"Guest via {link.label}" if link else "")
    return AuditEvent(
        notebook_id=getattr(notebook, "pk", notebook),
        notebook_title=getattr(notebook, "title", "") or "",
        actor=actor,
        link_id=getattr(link, "pk", None),
        actor_label=label[:200],
        action=action,
        details=details,
        **client_info(request),
    )


def record(action: str, **kwargs: Any) -> AuditEvent:
    event = build(action, **kwargs)
    event.save()
    return event


def record_many(events: Iterable[AuditEvent]) -> None:
    AuditEvent.objects.bulk_create(list(events))
