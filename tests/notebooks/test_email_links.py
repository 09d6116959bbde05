"""Links in emails that carry a secret (invitation, address confirmation, password reset) go to
this server: a Host naming another port (anyone can send one) gets SITE_URL instead."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.test import Client

from tests.support.cast import make_user

pytestmark = pytest.mark.django_db(transaction=True)
SITE = "http://127.0.0.1:8765"


class ServedClient(Client):
    """Requests as they reach a server listening on port 8765 (the test client says 80)."""

    def generic(self, *args, **extra):
        return super().generic(*args, **{"SERVER_PORT": "8765", **extra})


@pytest.fixture(autouse=True)
def _site_url(settings):
    settings.SITE_URL = SITE


def links(body: str) -> list[str]:
    return re.findall(r"https?://\S+", body)


@pytest.mark.parametrize(
    ("host", "base"), [("127.0.0.1:6666", SITE), ("localhost:8765", "http://localhost:8765")]
)
def test_the_password_reset_link(host, base):
    make_user("dana@example.com", "Dana")
    ServedClient(HTTP_HOST=host).post("/accounts/password/reset/", {"email": "dana@example.com"})
    [sent] = mail.outbox
    assert [link for link in links(sent.body) if "/password/reset/key/" in link]
    assert all(link.startswith(base + "/") for link in links(sent.body)), sent.body


@pytest.mark.parametrize(
    ("host", "base"), [("127.0.0.1:6666", SITE), ("localhost:8765", "http://localhost:8765")]
)
def test_the_address_confirmation_link(settings, host, base):
    settings.ACCOUNT_EMAIL_VERIFICATION = "mandatory"
    form = {"display_name": "Eve", "email": "dana@example.com", "password1": "a long passphrase 42"}
    ServedClient(HTTP_HOST=host).post("/accounts/signup/", {**form, "password2": form["password1"]})
    [sent] = mail.outbox
    assert [link for link in links(sent.body) if "/confirm-email/" in link]
    assert all(link.startswith(base + "/") for link in links(sent.body)), sent.body
