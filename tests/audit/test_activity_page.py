"""The owner's Activity page: who may see it, filters, keyset pages."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from audit import log as audit
from audit.models import AuditEvent
from notebooks.models import Grant, Role
from tests.support.audit import backdate, many_events


def url(notebook, **params) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"/n/{notebook.pk}/activity" + (f"?{query}" if query else "")


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def shown_ids(response) -> list[int]:
    return [e.id for e in response.context["page"].events]


def test_it_shows_the_owner_the_notebooks_events(notebook, alice):
    response = client_for(alice).get(url(notebook))
    assert response.status_code == 200
    assert b"Created the notebook" in response.content
    assert b"Alice Smith" in response.content
    assert [e.action for e in response.context["page"].events] == ["notebook.created"]


@pytest.mark.parametrize("role", [Role.VIEWER, Role.EDITOR, Role.RUNNER])
def test_it_refuses_people_the_notebook_is_shared_with(notebook, bob, role):
    Grant.objects.create(notebook=notebook, user=bob, role=role)
    assert client_for(bob).get(url(notebook)).status_code == 403
    assert client_for(bob).get(url(notebook, format="csv")).status_code == 403


def test_it_is_404_for_people_without_access_and_missing_notebooks(notebook, alice, charlie):
    assert client_for(charlie).get(url(notebook)).status_code == 403
    assert client_for(alice).get(f"/n/{uuid.uuid4()}/activity").status_code == 404


def test_it_sends_anonymous_visitors_to_log_in(notebook):
    response = Client().get(url(notebook))
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_it_is_404_for_a_trashed_notebook(notebook, alice):
    notebook.deleted_at = notebook.created_at
    notebook.save(update_fields=["deleted_at"])
    assert client_for(alice).get(url(notebook)).status_code == 404


def test_it_shows_only_this_notebooks_events(notebook, alice):
    from notebooks import actions

    other = actions.create_blank(alice, title="Other")
    many_events(other, alice, 5)
    response = client_for(alice).get(url(notebook))
    assert {e.notebook_id for e in response.context["page"].events} == {notebook.pk}


def test_it_filters_by_person(notebook, alice, bob):
    Grant.objects.create(notebook=notebook, user=bob, role=Role.EDITOR)
    many_events(notebook, bob, 3)
    response = client_for(alice).get(url(notebook, person=f"u{bob.pk}"))
    events = response.context["page"].events
    assert len(events) == 3
    assert {e.actor_id for e in events} == {bob.pk}
    assert (f"u{bob.pk}", "Bob Jones (bob@example.com)") in response.context["people"]


def test_it_filters_link_guests_by_their_link(notebook, alice):
    from notebooks import sharing
    from notebooks.access import access_notebook, principal_from_session

    owner = access_notebook(principal_from_session(alice, None), notebook.pk)
    link, token = sharing.create_link(owner, label="Seminar", role=Role.EDITOR, require_login=False)
    guest = Client()
    assert guest.get(f"/s/{token}").status_code == 302
    response = client_for(alice).get(url(notebook, person=f"g{link.pk}"))
    events = response.context["page"].events
    assert [e.action for e in events] == ["link.used"]
    assert events[0].actor_label == "Guest via Seminar"
    assert b"Guest via Seminar" in response.content
    assert (f"g{link.pk}", "Guest via Seminar") in response.context["people"]


def test_it_filters_by_action_and_by_action_group(notebook, alice):
    many_events(notebook, alice, 4, action="link.created", link_label="x", role="viewer")
    many_events(notebook, alice, 2, action="link.revoked", link_label="x")
    many_events(notebook, alice, 3, action="session.joined")
    client = client_for(alice)
    exact = client.get(url(notebook, action="link.revoked")).context["page"].events
    assert [e.action for e in exact] == ["link.revoked"] * 2
    group = client.get(url(notebook, action="link.")).context["page"].events
    assert sorted({e.action for e in group}) == ["link.created", "link.revoked"]
    assert len(group) == 6
    # an unknown value is ignored rather than an error
    assert len(client.get(url(notebook, action="drop table")).context["page"].events) == 10


def test_it_filters_by_date_range(notebook, alice):
    old = many_events(notebook, alice, 3, action="kernel.started")
    backdate(old, days=10)
    client = client_for(alice)
    today = timezone.localdate()
    recent = client.get(url(notebook, **{"from": today.isoformat()})).context["page"].events
    assert "kernel.started" not in {e.action for e in recent}
    day = (today - timedelta(days=10)).isoformat()
    only_old = client.get(url(notebook, **{"from": day, "to": day})).context["page"].events
    assert sorted(e.id for e in only_old) == old
    # a malformed date is ignored
    assert client.get(url(notebook, **{"from": "yesterday"})).status_code == 200


def test_it_pages_through_120_events_by_keyset_without_gaps_or_repeats(notebook, alice):
    ids = many_events(notebook, alice, 120, action="cell.executed", code="x = 1", status="ok")
    expected = sorted(AuditEvent.objects.filter(notebook_id=notebook.pk).values_list("id", flat=True))[::-1]
    assert len(expected) == 121
    assert set(ids) <= set(expected)
    client = client_for(alice)
    seen, pages, response = [], [], client.get(url(notebook))
    while True:
        pages.append(shown_ids(response))
        seen += pages[-1]
        older = response.context["page"].older
        if older is None:
            break
        response = client.get(url(notebook, before=older))
        assert response.context["page"].newer is not None
        assert b"Newer" in response.content
    assert seen == expected
    assert [len(p) for p in pages] == [50, 50, 21]
    # and back again with "← Newer"
    page = response.context["page"]
    back = client.get(url(notebook, after=page.newer))
    assert shown_ids(back) == pages[1]
    back = client.get(url(notebook, after=back.context["page"].newer))
    assert shown_ids(back) == pages[0]
    assert back.context["page"].newer is None


def test_pagination_keeps_filters_in_its_links(notebook, alice):
    many_events(notebook, alice, 60, action="kernel.started")
    response = client_for(alice).get(url(notebook, action="kernel."))
    older = re.search(rb'href="\?([^"]*)" data-testid="page-older"', response.content).group(1)
    assert b"action=kernel." in older
    page2 = client_for(alice).get(f"/n/{notebook.pk}/activity?" + older.decode().replace("&amp;", "&"))
    assert [e.action for e in page2.context["page"].events] == ["kernel.started"] * 10


def test_a_page_does_a_fixed_number_of_queries(notebook, alice, django_assert_max_num_queries):
    many_events(notebook, alice, 200, action="cell.executed", code="print(1)")
    client = client_for(alice)
    client.get(url(notebook))
    with django_assert_max_num_queries(12):
        response = client.get(url(notebook, before=150))
    assert response.status_code == 200


def test_it_renders_details_readably(notebook, alice):
    audit.record(
        "cell.executed",
        notebook=notebook,
        actor=alice,
        cell_id="c1",
        code="for i in range(3):\n    print('<b>hi</b>')",
        code_sha256="0" * 64,
        status="error",
        duration_ms=1530,
        execution_count=7,
    )
    audit.record(
        "grant.changed", notebook=notebook, actor=alice, email="bob@example.com", old="viewer", new="runner"
    )
    audit.record("session.left", notebook=notebook, actor=alice, updates=12, denied=0, cells=["c1", "c2"])
    html = client_for(alice).get(url(notebook)).content.decode()
    assert "<details" in html
    assert "&lt;b&gt;hi&lt;/b&gt;" in html
    assert "<b>hi</b>" not in html
    assert "Code · 2 lines" in html
    assert "1.5 s" in html
    assert "[7]" in html
    assert "Changed the role of bob@example.com from can view to can edit and run" in html
    assert "12 changes" in html
    assert "2 cells touched: c1, c2" in html


def test_the_page_is_not_in_the_append_only_log_twice(notebook, alice):
    """Viewing the page is not itself an event (exports are)."""
    before = AuditEvent.objects.count()
    client_for(alice).get(url(notebook))
    assert AuditEvent.objects.count() == before
