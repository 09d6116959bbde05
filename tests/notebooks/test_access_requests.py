"""Asking for access, deciding requests, and the emails sharing sends."""

from __future__ import annotations

import re
import threading
import time

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.db import connections
from django.test import Client

from audit.models import AuditEvent
from notebooks import emails, sharing
from notebooks import requests as access_requests
from notebooks.access import Action, Refused, access_notebook, principal_from_session
from notebooks.models import AccessRequest, Grant, Invitation, Removal, Role
from tests.support.cast import make_user
from tests.support.locks import waiting_for_a_lock

pytestmark = pytest.mark.django_db(transaction=True)
HOST = "localhost:8765"


class ServedClient(Client):
    """Requests as they reach a server listening on `port` (the test client says 80)."""

    def __init__(self, port: str = "8765", **defaults):
        super().__init__(**defaults)
        self.port = port

    def generic(self, *args, **extra):
        return super().generic(*args, **{"SERVER_PORT": self.port, **extra})


def client_for(user) -> Client:
    client = ServedClient(HTTP_HOST=HOST)
    client.force_login(user)
    return client


def ask(client, notebook, role="editor", message="", json=False):
    headers = {"Accept": "application/json"} if json else {}
    return client.post(
        f"/n/{notebook.pk}/request-access", {"role": role, "message": message}, headers=headers
    )


def owner_access(notebook):
    return access_notebook(principal_from_session(notebook.owner, None), notebook.pk, Action.OWN)


def test_the_403_page_offers_to_request_access(notebook, charlie):
    page = client_for(charlie).get(f"/n/{notebook.pk}/")
    assert page.status_code == 403
    html = page.content.decode()
    assert 'data-testid="request-access"' in html
    assert f'action="/n/{notebook.pk}/request-access"' in html
    assert 'value="runner"' in html
    assert 'value="owner"' not in html


def test_a_request_mails_the_owner_with_who_what_and_a_link_to_the_share_page(notebook, charlie):
    response = ask(client_for(charlie), notebook, "runner", "I'm in the Tuesday lab group")
    assert response.status_code == 302
    req = AccessRequest.objects.get(notebook=notebook, user=charlie)
    assert (req.role, req.status) == ("runner", "pending")
    [sent] = mail.outbox
    assert sent.to == ["alice@example.com"]
    assert "Charlie Brown" in sent.subject
    assert "Alice's analysis" in sent.subject
    assert "charlie@example.com" in sent.body
    assert "Tuesday lab group" in sent.body
    assert f"http://{HOST}/n/{notebook.pk}/share#access-requests" in sent.body
    assert AuditEvent.objects.filter(action="access.requested", actor=charlie).count() == 1
    # the 403 page now says the request is waiting
    assert 'data-testid="request-pending"' in client_for(charlie).get(f"/n/{notebook.pk}/").content.decode()


def test_asking_again_updates_the_one_request_without_mailing_again(notebook, charlie):
    client = client_for(charlie)
    ask(client, notebook, "viewer", "first")
    ask(client, notebook, "editor", "second")
    req = AccessRequest.objects.get(notebook=notebook, user=charlie)
    assert (req.role, req.message) == ("editor", "second")
    assert len(mail.outbox) == 1
    assert AuditEvent.objects.filter(action="access.requested").count() == 2


def test_asking_is_throttled(notebook, charlie):
    client = client_for(charlie)
    for _ in range(access_requests.REQUESTS_PER_HOUR):
        assert ask(client, notebook, json=True).status_code == 200
    response = ask(client, notebook, json=True)
    assert response.status_code == 429
    assert "at most" in response.json()["error"]


@pytest.mark.parametrize(
    ("role", "message", "words"),
    [
        ("owner", "", "view, edit, or edit and run"),
        ("admin", "", "not a role"),
        ("editor", "x" * (emails.MESSAGE_MAX_CHARS + 1), "at most 1,000"),
    ],
)
def test_bad_requests_are_named_not_500(notebook, charlie, role, message, words):
    response = ask(client_for(charlie), notebook, role, message, json=True)
    assert response.status_code == 400
    assert words in response.json()["error"]
    assert not AccessRequest.objects.exists()


def test_a_request_without_a_role_says_to_choose_one(notebook, charlie):
    response = client_for(charlie).post(
        f"/n/{notebook.pk}/request-access", {"message": "hi"}, headers={"Accept": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "Choose the access you ask for: view, edit, or edit and run."


def test_asking_for_what_one_has_is_refused(notebook, bob):
    Grant.objects.create(notebook=notebook, user=bob, role=Role.RUNNER)
    response = ask(client_for(bob), notebook, "editor", json=True)
    assert response.status_code == 400
    assert response.json()["code"] == "has_role"


def test_an_anonymous_visitor_signs_in_first_and_comes_back(notebook):
    response = Client().post(f"/n/{notebook.pk}/request-access", {"role": "editor"})
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next=/n/{notebook.pk}/"


def test_approve_gives_the_grant_through_sharing_and_is_audited(notebook, charlie):
    ask(client_for(charlie), notebook, "runner")
    req = AccessRequest.objects.get()
    owner = client_for(notebook.owner)
    share = owner.get(f"/n/{notebook.pk}/share").content.decode()
    assert 'data-testid="access-request"' in share
    assert "charlie@example.com" in share
    response = owner.post(f"/n/{notebook.pk}/requests/{req.pk}", {"decision": "approve", "role": "editor"})
    assert response.status_code == 302
    grant = Grant.objects.get(notebook=notebook, user=charlie)
    assert (grant.role, grant.granted_by) == ("editor", notebook.owner)
    assert AccessRequest.objects.get().status == "approved"
    event = AuditEvent.objects.get(action="access.approved")
    assert event.details["role"] == "editor"
    assert event.details["asked"] == "runner"
    assert "shared the notebook" in mail.outbox[-1].body
    assert mail.outbox[-1].to == ["charlie@example.com"]
    assert client_for(charlie).get(f"/n/{notebook.pk}/").status_code == 200


def test_approving_an_unverified_address_sends_an_invitation_not_a_grant(notebook):
    dana = make_user("dana@example.com", "Dana")
    EmailAddress.objects.filter(user=dana).update(verified=False)
    ask(client_for(dana), notebook, "editor")
    req = AccessRequest.objects.get()
    client_for(notebook.owner).post(
        f"/n/{notebook.pk}/requests/{req.pk}", {"decision": "approve", "role": "editor"}
    )
    assert not Grant.objects.filter(user=dana).exists()
    assert Invitation.objects.filter(email="dana@example.com", role="editor").exists()


def test_decline_is_audited_and_gives_nothing(notebook, charlie):
    ask(client_for(charlie), notebook, "editor")
    req = AccessRequest.objects.get()
    client_for(notebook.owner).post(f"/n/{notebook.pk}/requests/{req.pk}", {"decision": "decline"})
    assert AccessRequest.objects.get().status == "declined"
    assert AuditEvent.objects.filter(action="access.declined").exists()
    assert not Grant.objects.filter(user=charlie).exists()


def test_a_removed_person_may_ask_and_the_request_says_so(notebook, charlie):
    Removal.objects.create(notebook=notebook, user=charlie, removed_by=notebook.owner)
    ask(client_for(charlie), notebook, "viewer")
    assert "removed this person" in mail.outbox[0].body
    share = client_for(notebook.owner).get(f"/n/{notebook.pk}/share").content.decode()
    assert 'data-testid="request-removed"' in share


def test_bad_decisions_are_named(notebook, charlie):
    owner = client_for(notebook.owner)
    for rid, post in [("abc", {"decision": "approve", "role": "editor"}), ("999", {"decision": "decline"})]:
        response = owner.post(f"/n/{notebook.pk}/requests/{rid}", post, follow=True)
        assert response.status_code == 200
        assert "request" in response.content.decode()


# invitations


def test_the_invitation_names_notebook_inviter_message_and_links_on_the_served_host(notebook):
    owner = client_for(notebook.owner)
    owner.post(
        f"/n/{notebook.pk}/share",
        {"action": "invite", "emails": "dana@example.com", "role": "editor", "message": "See section 3"},
    )
    [sent] = mail.outbox
    assert "Alice Smith" in sent.subject
    assert "Alice's analysis" in sent.subject
    assert "See section 3" in sent.body
    assert re.search(rf"http://{re.escape(HOST)}/invite/\S+", sent.body)


@pytest.mark.parametrize("host", ["127.0.0.1:6666", "localhost:6666", "localhost"])
def test_the_invitation_link_ignores_a_host_naming_another_port(notebook, settings, host):
    """Someone else listening on another port of the same machine does not receive the token
    by inviting with a forged Host: the link then goes to SITE_URL."""
    settings.SITE_URL = "http://127.0.0.1:8765"
    owner = ServedClient(HTTP_HOST=host)
    owner.force_login(notebook.owner)
    invite = {"action": "invite", "emails": "dana@example.com", "role": "viewer"}
    owner.post(f"/n/{notebook.pk}/share", invite)
    [sent] = mail.outbox
    assert re.search(r"http://127\.0\.0\.1:8765/invite/\S+", sent.body), sent.body


def test_one_bad_address_is_named_kept_in_the_form_and_the_rest_invited(notebook):
    owner = client_for(notebook.owner)
    response = owner.post(
        f"/n/{notebook.pk}/share",
        {"action": "invite", "emails": "dana@example.com, not-an-address, eve@example.com", "role": "viewer"},
        follow=True,
    )
    html = response.content.decode()
    assert "Not an email address: “not-an-address”" in html
    assert ">not-an-address</textarea>" in html
    assert set(Invitation.objects.values_list("email", flat=True)) == {"dana@example.com", "eve@example.com"}


def test_signing_up_through_the_invitation_needs_no_second_verification(notebook, settings):
    settings.ACCOUNT_EMAIL_VERIFICATION = "mandatory"
    sharing.invite(owner_access(notebook), ["dana@example.com"], Role.EDITOR)
    link = re.search(r"http://\S+(/invite/\S+)", mail.outbox[0].body).group(1)
    dana = Client()
    first = dana.get(link)
    assert first.status_code == 302
    assert first["Location"] == "/invite/"
    signup = dana.get("/invite/")
    assert signup["Location"] == "/accounts/signup/?next=/invite/"
    form = {"display_name": "Dana", "email": "dana@example.com", "password1": "a long passphrase 42"}
    response = dana.post(signup["Location"], {**form, "password2": form["password1"]}, follow=True)
    assert response.redirect_chain[-1][0] == f"/n/{notebook.pk}/"
    assert response.status_code == 200
    assert EmailAddress.objects.get(email="dana@example.com").verified
    assert Grant.objects.get(notebook=notebook, user__email="dana@example.com").role == "editor"
    assert len(mail.outbox) == 1  # no confirmation email


def test_the_invitation_does_not_verify_another_address(notebook, settings):
    settings.ACCOUNT_EMAIL_VERIFICATION = "mandatory"
    sharing.invite(owner_access(notebook), ["dana@example.com"], Role.EDITOR)
    link = re.search(r"http://\S+(/invite/\S+)", mail.outbox[0].body).group(1)
    other = Client()
    other.get(link)
    other.get("/invite/")
    form = {"display_name": "Eve", "email": "eve@example.com", "password1": "a long passphrase 42"}
    other.post("/accounts/signup/?next=/invite/", {**form, "password2": form["password1"]})
    assert not EmailAddress.objects.filter(email="dana@example.com").exists()
    assert not EmailAddress.objects.get(email="eve@example.com").verified
    assert not Grant.objects.filter(notebook=notebook).exists()


def test_a_withdrawn_invitation_link_says_so(notebook):
    sharing.invite(owner_access(notebook), ["dana@example.com"], Role.EDITOR)
    link = re.search(r"http://\S+(/invite/\S+)", mail.outbox[0].body).group(1)
    Invitation.objects.update(withdrawn_at="2020-01-01T00:00:00Z")
    response = Client().get(link, follow=True)
    assert response.status_code == 404
    assert "withdrawn" in response.content.decode()


def test_emails_sent_without_a_request_use_site_url(notebook, settings):
    settings.SITE_URL = "http://127.0.0.1:9123"
    sharing.invite(owner_access(notebook), ["dana@example.com"], Role.VIEWER)
    assert "http://127.0.0.1:9123/invite/" in mail.outbox[0].body


def test_invitation_tokens_stay_out_of_logs():
    from config.logformat import redact

    assert redact('"GET /invite/AbC_d-9xYz HTTP/1.1" 302') == '"GET /invite/<token> HTTP/1.1" 302'


def test_approving_never_lowers_a_role(notebook, bob):
    Grant.objects.create(notebook=notebook, user=bob, role=Role.EDITOR, granted_by=notebook.owner)
    ask(client_for(bob), notebook, "runner")
    req = AccessRequest.objects.get()
    owner = client_for(notebook.owner)
    share = owner.get(f"/n/{notebook.pk}/share").content.decode()
    section = share.split('data-testid="access-requests"')[1].split("</section>")[0]
    assert 'value="viewer"' not in section
    assert 'value="editor"' not in section
    response = owner.post(
        f"/n/{notebook.pk}/requests/{req.pk}", {"decision": "approve", "role": "viewer"}, follow=True
    )
    assert "already has “can edit”" in response.content.decode()
    assert Grant.objects.get(user=bob).role == "editor"
    assert AccessRequest.objects.get().status == "pending"


# two people deciding the same request at once


def test_a_decline_while_an_approval_is_under_way_waits_and_finds_it_decided(notebook, charlie, monkeypatch):
    if connections["default"].vendor != "postgresql":
        pytest.skip("row locks: PostgreSQL")
    ask(client_for(charlie), notebook, "editor")
    req = AccessRequest.objects.get()
    results = {}

    def decline_elsewhere():
        try:
            access_requests.decline(owner_access(notebook), req.pk)
            results["decline"] = "declined"
        except Refused as e:
            results["decline"] = e.code
        finally:
            connections.close_all()

    real_invite = sharing.invite

    def invite_while_someone_declines(*args, **kwargs):
        done = real_invite(*args, **kwargs)
        other = threading.Thread(target=decline_elsewhere)
        other.start()
        # the decline either finishes (nothing stops it) or waits for this transaction's lock
        deadline = time.monotonic() + 30
        while other.is_alive() and not waiting_for_a_lock() and time.monotonic() < deadline:
            other.join(0.01)
        results["blocked"] = other.is_alive()
        results["thread"] = other
        return done

    monkeypatch.setattr(sharing, "invite", invite_while_someone_declines)
    access_requests.approve(owner_access(notebook), req.pk, Role.EDITOR)
    results["thread"].join(30)
    assert results["blocked"]
    assert results["decline"] == "not_found"
    assert AccessRequest.objects.get().status == "approved"
    assert not AuditEvent.objects.filter(action="access.declined").exists()


def test_a_declined_request_cannot_be_approved_afterwards(notebook, charlie):
    ask(client_for(charlie), notebook, "editor")
    req = AccessRequest.objects.get()
    owner = client_for(notebook.owner)
    owner.post(f"/n/{notebook.pk}/requests/{req.pk}", {"decision": "decline"})
    response = owner.post(
        f"/n/{notebook.pk}/requests/{req.pk}", {"decision": "approve", "role": "editor"}, follow=True
    )
    assert "no such pending access request" in response.content.decode()
    assert not Grant.objects.filter(user=charlie).exists()
    assert AccessRequest.objects.get().status == "declined"


def test_asking_and_deciding_need_the_csrf_token(notebook, charlie):
    stranger = Client(enforce_csrf_checks=True)
    stranger.force_login(charlie)
    assert stranger.post(f"/n/{notebook.pk}/request-access", {"role": "editor"}).status_code == 403
    assert not AccessRequest.objects.exists()
    ask(client_for(charlie), notebook, "editor")
    req = AccessRequest.objects.get()
    owner = Client(enforce_csrf_checks=True)
    owner.force_login(notebook.owner)
    response = owner.post(f"/n/{notebook.pk}/requests/{req.pk}", {"decision": "approve", "role": "editor"})
    assert response.status_code == 403
    assert AccessRequest.objects.get().status == "pending"


def test_asking_again_right_after_a_decline_does_not_mail_again(notebook, charlie):
    client = client_for(charlie)
    ask(client, notebook, "editor")
    req = AccessRequest.objects.get()
    client_for(notebook.owner).post(f"/n/{notebook.pk}/requests/{req.pk}", {"decision": "decline"})
    ask(client, notebook, "editor", "please, really")
    assert AccessRequest.objects.get().status == "pending"  # on the share page again
    assert len(mail.outbox) == 1


def test_a_counter_expiring_between_its_add_and_its_increment_is_no_error(notebook, charlie, monkeypatch):
    """The hour's counter can expire right after `add` found it there; `incr` then has nothing."""
    from django.core.cache import cache

    monkeypatch.setattr(cache, "add", lambda *args, **kwargs: False)  # "it is there" (and then gone)
    client = client_for(charlie)
    client.raise_request_exception = False
    assert ask(client, notebook, "editor", json=True).status_code == 200
    owner = client_for(notebook.owner)
    owner.raise_request_exception = False
    invite = {"action": "invite", "emails": "dana@example.com", "role": "viewer"}
    assert owner.post(f"/n/{notebook.pk}/share", invite).status_code == 302
    assert Invitation.objects.filter(email="dana@example.com").exists()
