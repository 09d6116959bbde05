"""CSV / JSON lines exports, the retention command, and the log being append-only."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.core.management import call_command
from django.test import Client

from audit import log as audit
from audit.models import AppendOnlyError, AuditEvent
from tests.support.audit import backdate, many_events


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def export(client, notebook, fmt: str, **filters):
    response = client.get(f"/n/{notebook.pk}/activity", {**filters, "format": fmt})
    assert response.status_code == 200
    assert response.streaming
    body = b"".join(response.streaming_content).decode("utf-8")
    return response, body


def test_it_exports_the_filtered_events_as_csv(notebook, alice):
    audit.record(
        "cell.executed", notebook=notebook, actor=alice, cell_id="c1", code='x = "a,b"\nprint(x)', status="ok"
    )
    many_events(notebook, alice, 3, action="kernel.started")
    response, body = export(client_for(alice), notebook, "csv", action="cell.executed")
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="activity-alices-analysis-')
    assert response["Content-Disposition"].endswith('.csv"')
    rows = list(csv.DictReader(io.StringIO(body.removeprefix("\ufeff"))))
    assert len(rows) == 1
    row = rows[0]
    assert row["action"] == "cell.executed"
    assert row["actor"] == "Alice Smith <alice@example.com>"
    assert row["actor_id"] == str(alice.pk)
    assert row["summary"] == "ran a cell"
    assert json.loads(row["details"])["code"] == 'x = "a,b"\nprint(x)'


def test_it_exports_everything_oldest_first_as_json_lines(notebook, alice):
    ids = many_events(notebook, alice, 30, action="kernel.restarted")
    response, body = export(client_for(alice), notebook, "jsonl")
    assert response["Content-Type"].startswith("application/x-ndjson")
    assert response["Content-Disposition"].endswith('.jsonl"')
    records = [json.loads(line) for line in body.splitlines()]
    assert [r["action"] for r in records] == ["notebook.created", *["kernel.restarted"] * 30]
    assert [r["id"] for r in records[1:]] == ids
    assert records[1]["details"] == {"n": 0}
    assert records[0]["notebook_id"] == str(notebook.pk)


def test_an_export_is_itself_an_event(notebook, alice):
    export(client_for(alice), notebook, "csv", action="link.")
    event = AuditEvent.objects.get(action="audit.exported")
    assert event.actor == alice
    assert event.notebook_id == notebook.pk
    assert event.details == {"format": "csv", "filters": {"action": "link."}}


def test_csv_cells_that_a_spreadsheet_would_run_are_defused(notebook, alice):
    alice.display_name = '=HYPERLINK("http://evil")'
    alice.save()
    _, body = export(client_for(alice), notebook, "csv")
    assert "'=HYPERLINK" in body


def test_purge_audit_removes_only_events_older_than_the_retention(notebook, alice, settings):
    settings.AUDIT_RETENTION_DAYS = 30
    old = many_events(notebook, alice, 5, action="session.joined")
    kept = many_events(notebook, alice, 4, action="session.left")
    backdate(old, days=31)
    backdate(kept[:2], days=29)
    out = io.StringIO()
    call_command("purge_audit", stdout=out)
    assert "Deleted 5 audit events" in out.getvalue()
    assert not AuditEvent.objects.filter(id__in=old).exists()
    assert AuditEvent.objects.filter(id__in=kept).count() == 4
    assert AuditEvent.objects.filter(action="notebook.created").exists()


def test_purge_audit_keeps_everything_when_retention_is_zero(notebook, alice, settings):
    settings.AUDIT_RETENTION_DAYS = 0
    backdate(many_events(notebook, alice, 3), days=5000)
    call_command("purge_audit", stdout=io.StringIO())
    assert AuditEvent.objects.filter(notebook_id=notebook.pk).count() == 4


def test_purge_audit_dry_run_deletes_nothing(notebook, alice, settings):
    settings.AUDIT_RETENTION_DAYS = 1
    backdate(many_events(notebook, alice, 3), days=2)
    out = io.StringIO()
    call_command("purge_audit", "--dry-run", stdout=out)
    assert "3 audit events" in out.getvalue()
    assert AuditEvent.objects.count() == 4


def test_the_app_cannot_change_or_delete_an_event(notebook, alice):
    event = AuditEvent.objects.get(action="notebook.created")
    event.action = "notebook.purged"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(action="x")
    assert AuditEvent.objects.get(pk=event.pk).action == "notebook.created"


def test_deleting_a_user_keeps_their_events(notebook, alice, bob):
    audit.record("session.joined", notebook=notebook, actor=bob)
    bob.delete()
    event = AuditEvent.objects.get(action="session.joined")
    assert event.actor_id is None
    assert event.actor_label == "bob@example.com"


def test_the_admin_is_read_only_and_filters_by_notebook(notebook, alice, admin_client):
    changelist = admin_client.get(
        f"/admin/audit/auditevent/?notebook_id={notebook.pk}&action=notebook.created"
    )
    assert changelist.status_code == 200
    assert b"Alice&#x27;s analysis" in changelist.content or b"Alice's analysis" in changelist.content
    event = AuditEvent.objects.get(action="notebook.created")
    assert admin_client.get("/admin/audit/auditevent/add/").status_code == 403
    assert admin_client.post(f"/admin/audit/auditevent/{event.pk}/delete/").status_code == 403
    detail = admin_client.get(f"/admin/audit/auditevent/{event.pk}/change/")
    assert detail.status_code == 200
    assert b'name="action"' not in detail.content
