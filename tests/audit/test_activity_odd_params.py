"""The activity page's filters and paging read the query string; values a person can type but
that are not usable (digits Python's `int` does not read, numbers past the database's integers,
the last day of the calendar) are dropped like other malformed values, never a server error."""

from __future__ import annotations

import pytest

from tests.support.http import client_for

pytestmark = pytest.mark.django_db

ODD = [
    "before=%C2%B2",  # "²": str.isdigit() says yes, int() says no
    "after=%C2%B2",
    "person=u%C2%B2",
    "person=u99999999999999999999999",
    "person=g99999999999999999999999",
    "before=99999999999999999999999",
    "to=9999-12-31",
    "format=csv&to=9999-12-31",
    "format=jsonl&person=u%C2%B2",
]


@pytest.mark.parametrize("query", ODD)
def test_odd_filter_values_are_dropped_not_a_server_error(notebook, alice, query):
    response = client_for(alice).get(f"/n/{notebook.pk}/activity?{query}")
    assert response.status_code == 200, query
