"""Pages answer forms with unusable values with a message, never a 500."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"action": "revoke_link", "link_id": "abc"}, "“abc” is not a valid link id."),
        ({"action": "revoke_link"}, "is not a valid link id."),
        ({"action": "revoke_link", "link_id": "999999"}, "There is no such link on this notebook."),
        ({"action": "change_role", "grant_id": "1", "role": "emperor"}, "“emperor” is not a role."),
        ({"action": "remove_grant", "grant_id": "-1"}, "There is no such person on this notebook."),
        ({"action": "resend", "invitation_id": "1e9"}, "“1e9” is not a valid invitation id."),
        ({"action": "create_link", "max_uses": "lots"}, "The use limit must be a whole number of people."),
    ],
)
def test_the_share_page_answers_bad_ids_with_a_message(client, alice, notebook, data, message):
    client.force_login(alice)
    response = client.post(f"/n/{notebook.pk}/share", data, follow=True)
    assert response.status_code == 200
    assert message in response.content.decode()


@pytest.mark.parametrize("server", ["abc", "", "99999", "1.5"])
def test_the_kernel_settings_page_answers_bad_server_ids(client, alice, notebook, server):
    client.force_login(alice)
    response = client.post(f"/n/{notebook.pk}/kernel/settings", {"action": "choose", "server": server})
    assert response.status_code in (200, 302)


def test_a_kernel_request_nested_past_the_parsers_depth_is_a_400(client, alice, notebook):
    client.force_login(alice)
    response = client.post(
        f"/n/{notebook.pk}/kernel/run", data=b"[" * 100_000, content_type="application/json"
    )
    assert response.status_code == 400
