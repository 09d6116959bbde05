"""Whose a client id of a notebook's document is (`notebooks.claims`)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

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


def _held(notebook, person: str) -> set[int]:
    return set(WriterClaim.objects.filter(notebook=notebook, person=person).values_list("client", flat=True))


def test_a_person_holds_at_most_cap_ids_without_content_the_oldest_unused_released(notebook):
    for client in range(1, 11):
        claims.claim(notebook.pk, [client], "u:1", cap=3, in_use={1})
    assert _held(notebook, "u:1") == {1, 9, 10}  # 1 is in use: kept
    assert claims.claim(notebook.pk, [2], "u:2", cap=3) == {2: "u:2"}  # released ids are free again


def test_ids_with_content_stay_and_count_no_more(notebook):
    claims.claim(notebook.pk, [1, 2], "u:1", cap=2)
    for client in range(3, 9):
        claims.claim(notebook.pk, [client], "u:1", cap=2, written={1, 2, 3})
    assert _held(notebook, "u:1") == {1, 2, 3, 7, 8}
    assert set(WriterClaim.objects.filter(has_content=True).values_list("client", flat=True)) == {1, 2, 3}


def test_a_new_id_beyond_the_cap_with_all_in_use_is_refused(notebook):
    claims.claim(notebook.pk, [1, 2], "u:1", cap=2)
    with pytest.raises(claims.TooMany):
        claims.claim(notebook.pk, [3], "u:1", cap=2, in_use={1, 2})
    assert _held(notebook, "u:1") == {1, 2}
    assert claims.claim(notebook.pk, [1], "u:1", cap=2, in_use={1, 2}) == {1: "u:1"}  # its own again: fine


def test_ids_without_content_unused_for_a_while_are_released(notebook):
    claims.claim(notebook.pk, [1, 2, 3, 4], "g:old")
    room = claims.room_client(notebook.pk)
    WriterClaim.objects.update(seen_at=timezone.now() - timedelta(days=2))
    claims.claim(
        notebook.pk, [5], "u:1", written={1}, in_use={2}, unused_before=timezone.now() - timedelta(days=1)
    )
    assert _held(notebook, "g:old") == {1, 2}  # 1 has content, 2 is in use
    assert _held(notebook, claims.ROOM) == {room}  # a room's: only the room releases it
    assert _held(notebook, "u:1") == {5}


def test_a_room_releases_its_own_id_only_without_content(notebook):
    room = claims.room_client(notebook.pk)
    claims.claim(notebook.pk, [7], "u:1")
    assert claims.release(notebook.pk, 7, claims.ROOM) == 0
    WriterClaim.objects.filter(client=room).update(has_content=True)
    assert claims.release(notebook.pk, room, claims.ROOM) == 0
    WriterClaim.objects.filter(client=room).update(has_content=False)
    assert claims.release(notebook.pk, room, claims.ROOM) == 1
