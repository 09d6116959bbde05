"""General access changed on the share page reaches a connected guest at once; an owner removes
a guest who came through the link (their socket closes, the page says so, the link refuses
them). Screenshots of the share page at 1280 and 390 px go to SHOTS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.browser import logged_in_page

pytestmark = [pytest.mark.browser, pytest.mark.processes]

SHOTS = Path(os.environ.get("SHARE_SHOTS", "var/screenshots"))


def guest_page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(60_000)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    return page


def set_general(owner, level: str, role: str) -> None:
    owner.select_option('[data-testid="general-level"]', level)
    owner.select_option('[data-testid="general-role"]', role)
    owner.click('[data-testid="general-save"]')
    owner.wait_for_selector(
        f'[data-testid="general-level"] option[value="{level}"][selected]', state="attached"
    )


def open_to_anyone(owner, stack, notebook_id: str) -> str:
    owner.goto(f"{stack.base}/n/{notebook_id}/share")
    set_general(owner, "anyone", "editor")
    with owner.expect_navigation():
        owner.click('[data-testid="general-copy"]')
    return owner.text_content('[data-testid="shown-link"]')


def join(guest, url: str) -> None:
    guest.goto(url)
    guest.wait_for_function("window.__editor && window.__editor.provider.synced")


def test_a_general_access_change_is_seen_live_by_a_connected_guest(browser, stack):
    alice = stack.user_with_notebook("alice@example.com", title="Seminar notes")
    owner = logged_in_page(browser, stack, alice["cookie"], width=1280, height=900)
    url = open_to_anyone(owner, stack, alice["notebook_id"])
    guest = guest_page(browser)
    join(guest, url)
    assert guest.is_hidden('[data-testid="readonly-banner"]')

    set_general(owner, "anyone", "viewer")  # a downgrade: the guest's editor turns read-only
    guest.wait_for_selector('[data-testid="readonly-banner"]', state="visible")

    SHOTS.mkdir(parents=True, exist_ok=True)
    owner.goto(f"{stack.base}/n/{alice['notebook_id']}/share")
    owner.screenshot(path=str(SHOTS / "share-general-1280.png"), full_page=True)

    set_general(owner, "signed_in", "viewer")  # guests need an account now: the socket closes
    guest.wait_for_selector('[data-testid="access-banner"]:has-text("no longer valid")', state="visible")
    assert owner.errors == []
    assert guest.errors == []
    owner.context.close()
    guest.context.close()


def test_the_owner_removes_a_guest_who_came_through_the_link(browser, stack):
    bea = stack.user_with_notebook("bea@example.com", title="A notebook with a fairly long title for a phone")
    owner = logged_in_page(browser, stack, bea["cookie"], width=390, height=844)
    url = open_to_anyone(owner, stack, bea["notebook_id"])
    guest = guest_page(browser)
    join(guest, url)

    owner.goto(f"{stack.base}/n/{bea['notebook_id']}/share")
    row = owner.locator('[data-testid="person-row"]:has-text("Guest via")')
    assert row.locator('[data-testid="live"]').get_attribute("data-live") == "1"
    assert owner.evaluate("document.documentElement.scrollWidth") <= 390
    SHOTS.mkdir(parents=True, exist_ok=True)
    owner.screenshot(path=str(SHOTS / "share-people-390.png"), full_page=True)

    owner.once("dialog", lambda d: d.accept())
    row.locator('[data-testid="remove-guest"]').click()
    owner.wait_for_selector('[data-testid="person-row"]', state="detached")
    guest.wait_for_selector('[data-testid="access-banner"]:has-text("removed you")', state="visible")

    guest.goto(url)
    assert "removed you" in guest.text_content("body")
    assert owner.errors == []
    owner.context.close()
    guest.context.close()
