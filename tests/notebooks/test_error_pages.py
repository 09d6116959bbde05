"""403, 404 and 500 pages in the site's layout, with its name and a way on."""

from __future__ import annotations

import pytest
from django.test import RequestFactory

from config.views import server_error
from notebooks import actions

pytestmark = pytest.mark.django_db


def test_it_shows_charlie_a_styled_403_that_says_how_to_get_access(client, alice, charlie, settings):
    settings.SITE_NAME = "Confer Test"
    notebook = actions.create_blank(alice, title="Alice's analysis")
    client.force_login(charlie)
    response = client.get(f"/n/{notebook.pk}/")
    page = response.content.decode()
    assert response.status_code == 403
    assert "Confer Test" in page
    assert 'class="topbar"' in page
    assert "ask them to share the notebook with you" in page
    assert charlie.email in page
    assert "Alice&#x27;s analysis" not in page  # nothing about a notebook one may not see


def test_it_shows_a_styled_404(client, alice):
    client.force_login(alice)
    response = client.get("/n/00000000-0000-4000-8000-000000000000/")
    page = response.content.decode()
    assert response.status_code == 404
    assert "This page does not exist" in page
    assert 'class="topbar"' in page
    assert "My notebooks" in page


def test_the_500_page_needs_neither_the_session_nor_the_database(settings):
    settings.SITE_NAME = "Confer Test"
    response = server_error(RequestFactory().get("/n/x/"))
    page = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong" in page
    assert "Confer Test" in page
    assert 'data-testid="error-retry"' in page  # not "Log in": the page cannot know who is signed in
    assert "?next=" not in page


def test_a_page_asked_for_while_the_database_is_unreachable_says_so_in_one_log_line(alice, monkeypatch):
    """An outage is not a bug in the page: 503 with a retry, one log line, no traceback each."""
    import io
    import logging

    from django.db import OperationalError
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.test import Client

    client = Client(raise_request_exception=False)
    client.force_login(alice)

    def unreachable(self):
        raise OperationalError('connection to server at "127.0.0.1", port 5432 failed: refused')

    handlers = logging.getLogger().handlers
    [console] = [h for h in handlers if any(type(f).__name__ == "QuietRefusals" for f in h.filters)]
    stream = io.StringIO()
    old = console.setStream(stream)
    monkeypatch.setattr(BaseDatabaseWrapper, "ensure_connection", unreachable)
    try:
        response = client.get("/notebooks/")
    finally:
        monkeypatch.undo()
        console.setStream(old)
    page = response.content.decode()
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert "cannot reach its database" in page
    assert "Traceback" not in page
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "Service Unavailable" in lines[0]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        # a multipart body without its boundary (django.request logs it)
        (b"--x\r\nContent-Disposition: form-data", "multipart/form-data"),
        # more fields than DATA_UPLOAD_MAX_NUMBER_FIELDS (django.security.TooManyFieldsSent logs it)
        ("&".join(f"f{i}=1" for i in range(1200)).encode(), "application/x-www-form-urlencoded"),
    ],
)
def test_a_malformed_request_is_one_log_line_without_a_traceback(alice, body, content_type):
    """Anyone can send a broken form: a 400 and one line, not a traceback per request."""
    import io
    import logging

    from django.test import Client

    client = Client(raise_request_exception=False, enforce_csrf_checks=True)  # reads the form
    client.force_login(alice)
    client.cookies["csrftoken"] = "a" * 32  # so that the check goes on to read the form
    handlers = logging.getLogger().handlers
    [console] = [h for h in handlers if any(type(f).__name__ == "QuietRefusals" for f in h.filters)]
    stream = io.StringIO()
    old = console.setStream(stream)
    try:
        response = client.generic("POST", "/notebooks/new", body, content_type=content_type)
    finally:
        console.setStream(old)
    assert response.status_code == 400
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in stream.getvalue()
