"""The pages a person uses: sign-up, lists, upload, rename, trash, download."""

from __future__ import annotations

import json
import re

import pytest
from django.core import mail

from audit.models import AuditEvent
from notebooks import nbio
from notebooks.models import Grant, Notebook, NotebookUpdate, Role
from tests.support.corpus import CORPUS, IMPORTED, REFUSED
from tests.support.http import upload

pytestmark = pytest.mark.django_db


def test_it_signs_up_verifies_and_logs_in(client):
    response = client.post(
        "/accounts/signup/",
        {
            "display_name": "Dana Scully",
            "email": "dana@example.com",
            "password1": "a long passphrase 42",
            "password2": "a long passphrase 42",
        },
        follow=True,
    )
    assert response.status_code == 200
    assert "Verify" in response.content.decode() or "verif" in response.content.decode().lower()
    assert client.get("/notebooks/").status_code == 302  # not logged in until verified
    link = re.search(r"http://\S+/accounts/confirm-email/\S+/", mail.outbox[0].body).group(0)
    response = client.get(link.replace("http://testserver", ""), follow=True)
    assert response.status_code == 200
    response = client.get("/notebooks/")
    assert response.status_code == 200
    assert "Dana Scully" in response.content.decode()


def test_it_logs_in_and_out(client, alice):
    response = client.post(
        "/accounts/login/", {"login": "alice@example.com", "password": "correct horse battery"}
    )
    assert response.status_code == 302
    assert client.get("/notebooks/").status_code == 200
    client.post("/accounts/logout/")
    assert client.get("/notebooks/").status_code == 302


def test_it_sends_a_password_reset_email(client, alice):
    client.post("/accounts/password/reset/", {"email": "alice@example.com"})
    assert "password" in mail.outbox[0].body.lower()
    assert "/accounts/password/reset/key/" in mail.outbox[0].body


def test_it_changes_the_display_name(client, alice):
    client.force_login(alice)
    client.post("/accounts/profile/", {"display_name": "Alice S."})
    alice.refresh_from_db()
    assert alice.display_name == "Alice S."


def test_it_uploads_the_whole_corpus_at_once_and_lists_it(client, alice):
    client.force_login(alice)
    files = [(name, (CORPUS / name).read_bytes()) for name in IMPORTED + list(REFUSED)]
    response = upload(client, *files)
    page = response.content.decode()
    assert Notebook.objects.filter(owner=alice).count() == len(IMPORTED)
    for name in IMPORTED:
        assert Notebook.objects.filter(title=name.removesuffix(".ipynb")).exists()
    for name, words in REFUSED.items():
        message = re.search(re.escape(name) + r" was not imported: ([^<]*)", page)
        assert message, name
        assert json.dumps(words)[1:-1].replace("'", "&#x27;") in message.group(1)
    listing = client.get("/notebooks/").content.decode()
    assert listing.count('data-testid="notebook-row"') == len(IMPORTED)


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.ipynb", b"", "The file is empty."),
        ("text.ipynb", b"hello", "The file is not valid JSON"),
        ("array.ipynb", b"[]", "The file holds a JSON array"),
        ("latin1.ipynb", b'{"a": "\xe9"}', "The file is not UTF-8 text"),
    ],
)
def test_it_refuses_a_bad_file_with_its_reason_and_creates_nothing(client, alice, name, data, reason):
    client.force_login(alice)
    response = upload(client, (name, data))
    assert f"{name} was not imported: {reason}" in response.content.decode()
    assert Notebook.objects.count() == 0
    assert NotebookUpdate.objects.count() == 0
    assert not AuditEvent.objects.filter(action="notebook.imported").exists()


def test_it_refuses_a_file_over_the_limit(client, alice, settings):
    settings.NOTEBOOK_MAX_UPLOAD_BYTES = 1000
    client.force_login(alice)
    response = upload(client, ("big.ipynb", (CORPUS / "test4.ipynb").read_bytes()))
    assert "big.ipynb was not imported: The file is" in response.content.decode()
    assert "the largest notebook accepted is" in response.content.decode()
    assert Notebook.objects.count() == 0


@pytest.mark.parametrize("name", IMPORTED)
def test_it_downloads_what_was_uploaded(client, alice, name):
    client.force_login(alice)
    data = (CORPUS / name).read_bytes()
    upload(client, (name, data))
    notebook = Notebook.objects.get(owner=alice)
    response = client.get(f"/n/{notebook.pk}/download")
    assert response["Content-Disposition"].startswith(f'attachment; filename="{name}";')
    downloaded = json.loads(response.content)
    expected = nbio.normalise(nbio.read_ipynb(data, 10**8))
    ids = [cell.get("id") for cell in json.loads(data).get("cells", [{}])]
    if None in ids or len(set(ids)) != len(ids):
        # missing or duplicate cell ids are replaced by fresh random ones on import
        for cell in expected["cells"] + downloaded["cells"]:
            cell.pop("id")
    assert downloaded == expected


def test_it_creates_renames_duplicates_trashes_restores_and_purges(client, alice):
    client.force_login(alice)
    response = client.post("/notebooks/new")
    notebook = Notebook.objects.get()
    assert response["Location"] == f"/n/{notebook.pk}/"
    client.post(f"/n/{notebook.pk}/rename", {"title": "Results"})
    notebook.refresh_from_db()
    assert notebook.title == "Results"
    client.post(f"/n/{notebook.pk}/duplicate")
    assert Notebook.objects.filter(title="Copy of Results").exists()
    assert "Move to trash" in client.get(f"/n/{notebook.pk}/delete").content.decode()
    client.post(f"/n/{notebook.pk}/delete")
    notebook.refresh_from_db()
    assert notebook.in_trash
    assert client.get(f"/n/{notebook.pk}/").status_code == 404
    assert "Results" in client.get("/notebooks/trash/").content.decode()
    client.post(f"/n/{notebook.pk}/restore")
    notebook.refresh_from_db()
    assert not notebook.in_trash
    client.post(f"/n/{notebook.pk}/delete")
    client.post(f"/n/{notebook.pk}/purge")
    assert not Notebook.objects.filter(pk=notebook.pk).exists()
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions == [
        "notebook.created",
        "notebook.renamed",
        "notebook.created",
        "notebook.deleted",
        "notebook.restored",
        "notebook.deleted",
        "notebook.purged",
    ]


def test_it_lists_notebooks_shared_with_me(client, alice, bob, notebook):
    Grant.objects.create(notebook=notebook, user=bob, role=Role.EDITOR)
    client.force_login(bob)
    page = client.get("/notebooks/shared/").content.decode()
    assert "Alice&#x27;s analysis" in page
    assert "Alice Smith" in page


def test_charlie_has_no_access_to_alices_notebook(client, charlie, notebook):
    client.force_login(charlie)
    assert client.get(f"/n/{notebook.pk}/").status_code == 403
    assert client.get(f"/n/{notebook.pk}/download").status_code == 403
    assert client.post(f"/n/{notebook.pk}/rename", {"title": "x"}).status_code == 403
    assert client.post(f"/n/{notebook.pk}/delete").status_code == 403
    client.post(f"/n/{notebook.pk}/restore")
    notebook.refresh_from_db()
    assert notebook.title == "Alice's analysis"
    assert not notebook.in_trash


def test_an_anonymous_visitor_is_sent_to_log_in(client, notebook):
    response = client.get(f"/n/{notebook.pk}/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_a_viewer_can_open_and_download_but_not_rename(client, bob, notebook):
    Grant.objects.create(notebook=notebook, user=bob, role=Role.VIEWER)
    client.force_login(bob)
    assert client.get(f"/n/{notebook.pk}/download").status_code == 200
    assert client.post(f"/n/{notebook.pk}/rename", {"title": "x"}).status_code == 403
