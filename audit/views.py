from __future__ import annotations

from itertools import islice

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.text import slugify

from audit import activity, present
from audit import log as audit
from notebooks import access as acl
from notebooks.views.common import get_access

EXPORTS = {
    "csv": ("text/csv; charset=utf-8", activity.csv_lines),
    "jsonl": ("application/x-ndjson; charset=utf-8", activity.jsonl_lines),
}


def notebook_activity(request, notebook_id):
    """The owner's view of everything that happened to one notebook."""
    access = get_access(request, notebook_id, acl.Action.OWN)
    filters = activity.Filters.from_query(request.GET)
    events = activity.events_for(access.notebook.pk, filters)
    if request.GET.get("format") in EXPORTS:
        return _export(request, access, filters, events, request.GET["format"])
    page = activity.page(events, before=_int(request.GET.get("before")), after=_int(request.GET.get("after")))
    context = {
        "notebook": access.notebook,
        "filters": filters,
        "query": filters.query(),
        "page": page,
        "rows": present.rows(page.events, timezone.localdate()),
        "people": activity.people(access.notebook),
        "action_choices": present.action_choices(),
        "today": timezone.localdate(),
        "retention_days": settings.AUDIT_RETENTION_DAYS,
        "time_zone": settings.TIME_ZONE,
    }
    return render(request, "audit/activity.html", context)


def _int(value: str | None) -> int | None:
    return activity.id_number(value)


def _export(request, access, filters, events, fmt: str) -> StreamingHttpResponse:
    content_type, render_lines = EXPORTS[fmt]
    exported = audit.record(
        "audit.exported",
        notebook=access.notebook,
        actor=access.principal.user,
        request=request,
        format=fmt,
        filters=filters.query(),
    )
    # The export is a snapshot of the log up to this request (so without its own event).
    lines = render_lines(activity.export_rows(events.filter(id__lt=exported.id)))
    response = StreamingHttpResponse(_streamed(lines, request), content_type=content_type)
    name = slugify(access.notebook.title)[:60] or "notebook"
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="activity-{name}-{stamp}.{fmt}"'
    response["Cache-Control"] = "no-store"
    return response


def _streamed(lines, request):
    """Under ASGI Django would read a plain iterator into memory before sending it; an async
    iterator that pulls batches in the request's database thread streams for real."""
    if not isinstance(request, ASGIRequest):
        return lines

    def batch() -> str:
        return "".join(islice(lines, 500))

    async def chunks():
        pull = sync_to_async(batch, thread_sensitive=True)
        while chunk := await pull():
            yield chunk

    return chunks()
