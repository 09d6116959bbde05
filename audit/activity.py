"""Reading one notebook's log: filters, keyset pages, the people who appear in it, exports.

Pages are keyset pages on `id` (newest first), so page 2,000 costs what page 1 costs: each
page is one index range scan on `(notebook_id, -id)` (or the `action` / `actor` indexes)
with `LIMIT size + 1`. Nothing here counts rows.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import User
from audit import present
from audit.models import AuditEvent
from notebooks.models import ShareLink


@dataclass(frozen=True)
class Filters:
    person: str = ""  # "u<user id>" or "g<link id>" (guests who came through that link)
    action: str = ""  # an action ("cell.executed") or a group prefix ("link.")
    since: date | None = None
    until: date | None = None  # inclusive

    @classmethod
    def from_query(cls, params) -> Filters:
        """Unknown or malformed values are dropped rather than answered with an error."""
        person = params.get("person", "").strip()
        if not (len(person) > 1 and person[0] in "ug" and id_number(person[1:]) is not None):
            person = ""
        action = params.get("action", "").strip()
        if not present.is_known_filter(action):
            action = ""
        until = _date(params.get("to"))
        if until == date.max:  # no day after it to end the range at: the same as no end
            until = None
        return cls(person, action, _date(params.get("from")), until)

    def apply(self, qs: QuerySet) -> QuerySet:
        if self.person.startswith("u"):
            qs = qs.filter(actor_id=int(self.person[1:]))
        elif self.person.startswith("g"):
            qs = qs.filter(actor__isnull=True, link_id=int(self.person[1:]))
        if self.action.endswith("."):
            # An IN list (not LIKE) lets the database use the (notebook, action, -id) index;
            # so every action must be listed in `present.LABELS`.
            qs = qs.filter(action__in=[a for a in present.LABELS if a.startswith(self.action)])
        elif self.action:
            qs = qs.filter(action=self.action)
        if self.since:
            qs = qs.filter(at__gte=_midnight(self.since))
        if self.until:
            qs = qs.filter(at__lt=_midnight(self.until + timedelta(days=1)))
        return qs

    def query(self) -> dict[str, str]:
        """The non-empty filters as query parameters (for links that keep them)."""
        out = {"person": self.person, "action": self.action}
        out["from"] = self.since.isoformat() if self.since else ""
        out["to"] = self.until.isoformat() if self.until else ""
        return {k: v for k, v in out.items() if v}

    def __bool__(self) -> bool:
        return any(asdict(self).values())


MAX_ID = 2**63 - 1  # the largest key any supported database stores


def id_number(value: str | None) -> int | None:
    """A database id typed into a query string, or None: ASCII digits only (`str.isdigit`
    also accepts "²", which `int` refuses) and within the database's integers."""
    if not value or not (value.isascii() and value.isdigit()):
        return None
    number = int(value)
    return number if number <= MAX_ID else None


def _date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _midnight(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def events_for(notebook_id, filters: Filters) -> QuerySet:
    return filters.apply(AuditEvent.objects.filter(notebook_id=notebook_id))


@dataclass
class Page:
    events: list[AuditEvent]
    older: int | None  # pass as ?before= to get the next older page
    newer: int | None  # pass as ?after= to get the next newer page


def page(qs: QuerySet, before: int | None = None, after: int | None = None, size: int | None = None) -> Page:
    """One page (`AUDIT_PAGE_SIZE` events unless `size` says), newest first: the events older
    than `before`, or newer than `after`."""
    size = settings.AUDIT_PAGE_SIZE if size is None else size
    qs = qs.select_related("actor")
    if after is not None:
        rows = list(qs.filter(id__gt=after).order_by("id")[: size + 1])
        more_newer = len(rows) > size
        events = rows[:size][::-1]
        older = events[-1].id if events else after + 1
        return Page(events, older, events[0].id if more_newer and events else None)
    qs_page = qs.filter(id__lt=before) if before is not None else qs
    rows = list(qs_page.order_by("-id")[: size + 1])
    events = rows[:size]
    older = events[-1].id if len(rows) > size else None
    newer = None
    if before is not None:
        top = events[0].id if events else before - 1
        if qs.filter(id__gt=top).order_by("id").exists():
            newer = top
    return Page(events, older, newer)


def people(notebook) -> list[tuple[str, str]]:
    """(filter value, name) of everyone in this notebook's log: signed-in actors, then guests by link."""
    ids = {*actor_ids(notebook.pk), notebook.owner_id}
    users = User.objects.filter(pk__in=ids).order_by("display_name", "email")
    out = [(f"u{u.pk}", f"{u.name} ({u.email})") for u in users]
    links = ShareLink.objects.filter(notebook=notebook, require_login=False).order_by("created_at")
    out += [(f"g{link.pk}", f"Guest via {link.label}") for link in links]
    return out


# A loose index scan: one index seek per distinct actor on (notebook_id, actor_id, -id), where
# SELECT DISTINCT would read every event of the notebook (100,000 rows: ~100 ms on SQLite).
_ACTOR_IDS = """
WITH RECURSIVE actors(id) AS (
    SELECT MIN(actor_id) FROM {table} WHERE notebook_id = %s AND actor_id IS NOT NULL
    UNION ALL
    SELECT (SELECT MIN(actor_id) FROM {table} WHERE notebook_id = %s AND actor_id > actors.id)
    FROM actors WHERE actors.id IS NOT NULL
)
SELECT id FROM actors WHERE id IS NOT NULL LIMIT {limit}
"""


def actor_ids(notebook_id, limit: int = 500) -> list[int]:
    field = AuditEvent._meta.get_field("notebook_id")
    key = field.get_db_prep_value(notebook_id, connection)
    sql = _ACTOR_IDS.format(table=connection.ops.quote_name(AuditEvent._meta.db_table), limit=int(limit))
    with connection.cursor() as cursor:
        cursor.execute(sql, [key, key])
        return [row[0] for row in cursor.fetchall()]


# exports


FIELDS = ["id", "time", "action", "summary", "actor_id", "actor", "link_id", "details", "ip", "user_agent"]


def as_record(event: AuditEvent) -> dict:
    actor = event.actor
    return {
        "id": event.id,
        "time": event.at.isoformat(),
        "notebook_id": str(event.notebook_id) if event.notebook_id else None,
        "action": event.action,
        "summary": present.words(event.action, event.details or {}),
        "actor_id": event.actor_id,
        "actor": f"{actor.name} <{actor.email}>" if actor is not None else event.actor_label,
        "link_id": event.link_id,
        "details": event.details,
        "ip": event.ip,
        "user_agent": event.user_agent,
    }


def export_rows(qs: QuerySet) -> Iterator[AuditEvent]:
    """Oldest first, like a log file; a server-side cursor read in chunks."""
    return qs.select_related("actor").order_by("id").iterator(chunk_size=settings.AUDIT_EXPORT_CHUNK)


def jsonl_lines(events: Iterator[AuditEvent]) -> Iterator[str]:
    for event in events:
        yield json.dumps(as_record(event), ensure_ascii=False, separators=(",", ":")) + "\n"


def csv_lines(events: Iterator[AuditEvent]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(values) -> str:
        writer.writerow(values)
        out = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return out

    yield "\ufeff" + line(FIELDS)  # the BOM makes spreadsheet programs read UTF-8
    for event in events:
        record = as_record(event)
        record["details"] = json.dumps(record["details"], ensure_ascii=False, sort_keys=True)
        yield line([_cell(record[f]) for f in FIELDS])


def _cell(value) -> str:
    """Spreadsheets run cells starting with = + - @ as formulas; names and labels are
    user-chosen, so such cells get a leading apostrophe (OWASP's CSV injection advice)."""
    if value is None:
        return ""
    value = str(value)
    if value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
