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
