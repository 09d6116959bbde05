"""The permission matrix for access requests: who may ask, and who may approve or decline,
for every principal of `tests.test_permission_matrix`, with "people who can edit may share"
off and on."""

from __future__ import annotations

import pytest
from django.test import Client

from notebooks import sharing
from notebooks.models import AccessRequest, Grant, Removal, Role
from tests.support.cast import make_user
from tests.support.principals import PRINCIPALS, owner_access, principal

pytestmark = pytest.mark.django_db(transaction=True)

# asking for "Can edit and run": everyone signed in below that role; anonymous visitors (guests
# of a link included) are sent to sign in first
MAY_ASK_FOR_RUN = {"editor", "viewer", "stranger"}
SIGN_IN_FIRST = {
    "link-viewer",
    "link-editor",
    "link-runner",
    "expired-link",
    "revoked-link",
    "other-notebook-link",
    "anonymous",
}
APPROVE_WHEN_OFF = {"owner"}
APPROVE_WHEN_ON = {"owner", "editor", "runner"}  # a guest never, a viewer never


@pytest.mark.parametrize("kind", PRINCIPALS)
def test_request_access(notebook, kind):
    client = principal(kind, notebook)
    response = client.post(f"/n/{notebook.pk}/request-access", {"role": "runner", "message": "please"})
    filed = AccessRequest.objects.filter(notebook=notebook, role="runner").exists()
    assert filed == (kind in MAY_ASK_FOR_RUN)
    assert response.status_code == 302
    if kind in SIGN_IN_FIRST:
        assert response["Location"] == f"/accounts/login/?next=/n/{notebook.pk}/"


def test_request_access_as_a_signed_in_guest_of_a_link(notebook):
    _, token = sharing.create_link(owner_access(notebook), label="Lab", role=Role.EDITOR)
    erin = make_user("erin@example.com", "Erin")
    client = Client()
    client.force_login(erin)
    assert client.get(f"/s/{token}").status_code == 302
    client.post(f"/n/{notebook.pk}/request-access", {"role": "editor"})
    assert not AccessRequest.objects.exists()  # the link already gives edit
    client.post(f"/n/{notebook.pk}/request-access", {"role": "runner"})
    assert AccessRequest.objects.get().user == erin


def _dana_asks(notebook, role: Role = Role.EDITOR) -> AccessRequest:
    dana = make_user("dana@example.com", "Dana")
    return AccessRequest.objects.create(notebook=notebook, user=dana, role=role)


@pytest.mark.parametrize("editors_can_share", [False, True])
@pytest.mark.parametrize("kind", PRINCIPALS)
def test_approve(notebook, kind, editors_can_share):
    notebook.editors_can_share = editors_can_share
    notebook.save(update_fields=["editors_can_share"])
    req = _dana_asks(notebook)
    client = principal(kind, notebook)
    client.post(f"/n/{notebook.pk}/requests/{req.pk}", {"decision": "approve", "role": "editor"})
    allowed = APPROVE_WHEN_ON if editors_can_share else APPROVE_WHEN_OFF
    assert Grant.objects.filter(user=req.user, role="editor").exists() == (kind in allowed)
    assert AccessRequest.objects.get().status == ("approved" if kind in allowed else "pending")


@pytest.mark.parametrize("editors_can_share", [False, True])
@pytest.mark.parametrize("kind", PRINCIPALS)
def test_decline(notebook, kind, editors_can_share):
    notebook.editors_can_share = editors_can_share
    notebook.save(update_fields=["editors_can_share"])
    req = _dana_asks(notebook)
    principal(kind, notebook).post(f"/n/{notebook.pk}/requests/{req.pk}", {"decision": "decline"})
    allowed = APPROVE_WHEN_ON if editors_can_share else APPROVE_WHEN_OFF
    assert AccessRequest.objects.get().status == ("declined" if kind in allowed else "pending")


@pytest.mark.parametrize("kind", ["owner", "editor", "runner"])
def test_approving_is_capped_at_ones_own_role(notebook, kind):
    notebook.editors_can_share = True
    notebook.save(update_fields=["editors_can_share"])
    req = _dana_asks(notebook, Role.RUNNER)
    client = principal(kind, notebook)
    client.post(f"/n/{notebook.pk}/requests/{req.pk}", {"decision": "approve", "role": "runner"})
    assert Grant.objects.filter(user=req.user, role="runner").exists() == (kind != "editor")
    if kind == "editor":  # the editor can give at most edit
        page = client.get(f"/n/{notebook.pk}/share").content.decode()
        assert 'value="runner"' not in page.split('data-testid="access-requests"')[1].split("</section>")[0]


@pytest.mark.parametrize("kind", ["owner", "editor", "runner"])
def test_only_an_owner_lets_back_someone_removed(notebook, kind):
    notebook.editors_can_share = True
    notebook.save(update_fields=["editors_can_share"])
    req = _dana_asks(notebook)
    Removal.objects.create(notebook=notebook, user=req.user, removed_by=notebook.owner)
    principal(kind, notebook).post(
        f"/n/{notebook.pk}/requests/{req.pk}", {"decision": "approve", "role": "viewer"}
    )
    assert Grant.objects.filter(user=req.user).exists() == (kind == "owner")


def test_a_request_of_another_notebook_is_not_found(notebook, alice):
    from notebooks import actions

    other = actions.create_blank(alice, title="Other")
    req = _dana_asks(other)
    client = principal("owner", notebook)
    response = client.post(
        f"/n/{notebook.pk}/requests/{req.pk}", {"decision": "approve", "role": "editor"}, follow=True
    )
    assert "no such pending access request" in response.content.decode()
    assert not Grant.objects.exists()
