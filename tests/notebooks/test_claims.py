"""Whose a client id of a notebook's document is (`notebooks.claims`)."""

from __future__ import annotations

from notebooks import claims, updatelog
from notebooks.models import WriterClaim


def test_the_first_person_to_claim_a_client_id_keeps_it(notebook):
    assert claims.claim(notebook.pk, [7, 8], "u:1") == {7: "u:1", 8: "u:1"}
    assert claims.claim(notebook.pk, [8, 9], "u:2") == {8: "u:1", 9: "u:2"}
    assert claims.claim(notebook.pk, [], "u:2") == {}


def test_a_guest_who_signed_in_takes_over_the_ids_of_their_guest_session(notebook):
    claims.claim(notebook.pk, [5], "g:abc")
    assert claims.claim(notebook.pk, [5], "u:3") == {5: "g:abc"}
    assert claims.claim(notebook.pk, [5], "u:3", aliases=["g:abc"]) == {5: "u:3"}
    assert claims.claim(notebook.pk, [5], "u:4", aliases=["g:abc"]) == {5: "u:3"}


def test_a_room_claims_a_fresh_client_id_of_its_own(notebook):
    first, second = claims.room_client(notebook.pk), claims.room_client(notebook.pk)
    assert first != second
    assert claims.claim(notebook.pk, [first, second], "u:1") == {first: claims.ROOM, second: claims.ROOM}
    assert 0 <= first <= claims.CLIENT_MAX


def test_a_replaced_document_starts_without_claims(notebook):
    claims.claim(notebook.pk, [1, 2], "u:1")
    updatelog.replace(notebook.pk, updatelog.load(notebook.pk).state)
    assert not WriterClaim.objects.filter(notebook=notebook).exists()
    assert claims.claim(notebook.pk, [1], "u:2") == {1: "u:2"}
