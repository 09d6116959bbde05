"""Pages answer forms with unusable values with a message, never a 500."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "data",
    [
        {"action": "revoke_link", "link_id": "abc"},
        {"action": "revoke_link"},
        {"action": "revoke_link", "link_id": "999999"},
        {"action": "change_role", "grant_id": "1", "role": "emperor"},
        {"action": "remove_grant", "grant_id": "-1"},
        {"action": "resend", "invitation_id": "1e9"},
        {"action": "create_link", "max_uses": "lots"},
    ],
)
def test_the_share_page_answers_bad_ids_with_a_message(client, alice, notebook, data):
    client.force_login(alice)
    response = client.post(f"/n/{notebook.pk}/share", data, follow=True)
    assert response.status_code == 200
    text = response.content.decode()
    assert "no longer there" in text or "not understood" in text


@pytest.mark.parametrize("server", ["abc", "", "99999", "1.5"])
def test_the_kernel_settings_page_answers_bad_server_ids(client, alice, notebook, server):
    client.force_login(alice)
    response = client.post(f"/n/{notebook.pk}/kernel/settings", {"action": "choose", "server": server})
    assert response.status_code in (200, 302)
