"""Asking for access in the browser: a stranger asks from the 403 page, the owner approves on
the share page, the stranger reloads and is in; an editor who presses Shift-Enter is told they
cannot run code and asks for "Can edit and run" from that message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.browser import logged_in_page
from tests.support.seed import seed

pytestmark = [pytest.mark.browser, pytest.mark.processes]

SHOTS = Path("/tmp/shots-shareB")


@pytest.fixture(scope="module")
def people(stack):
    data = seed(
        stack,
        ["alice@example.com", "carol@example.com", "eddie@example.com", "vera@example.com"],
        [
            {
                "owner": "alice@example.com",
                "title": "Lab notes",
                "share": {"eddie@example.com": "editor", "vera@example.com": "viewer"},
            }
        ],
    )
    stack.django(  # sharing gives grants to verified addresses only
        "from allauth.account.models import EmailAddress\nfrom tests.support.processes import user_by_email\n"
        "for e in ['carol@example.com', 'eddie@example.com', 'vera@example.com']:\n"
        "    EmailAddress.objects.create(user=user_by_email(e), email=e, verified=True, primary=True)\n"
        "print('{}')"
    )
    return data


def pending_requests(stack, notebook_id: str) -> list:
    return stack.django(
        "import json\nfrom notebooks.models import AccessRequest\n"
        f"print(json.dumps({{'rows': list(AccessRequest.objects.filter(notebook_id={notebook_id!r},"
        " status='pending').values_list('user__email', 'role'))}))"
    )["rows"]


def test_a_stranger_asks_the_owner_approves_and_the_stranger_gets_in(browser, stack, people):
    SHOTS.mkdir(exist_ok=True)
    nb = people["notebooks"][0]
    url = f"{stack.base}/n/{nb}/"
    carol_cookie = people["users"]["carol@example.com"]["cookie"]
    narrow = logged_in_page(browser, stack, carol_cookie, width=390, height=844)
    assert narrow.goto(url).status == 403
    narrow.wait_for_selector('[data-testid="request-access"]')
    narrow.screenshot(path=str(SHOTS / "403-request-390.png"), full_page=True)
    width = narrow.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the 403 page is {width} px wide at 390 px"
    narrow.context.close()

    carol = logged_in_page(browser, stack, carol_cookie, width=1280, height=860)
    assert carol.goto(url).status == 403
    carol.screenshot(path=str(SHOTS / "403-request-1280.png"), full_page=True)
    carol.select_option('[data-testid="request-role"]', "editor")
    carol.fill('[data-testid="request-message"]', "I'm in Tuesday's lab group")
    carol.click('[data-testid="request-submit"]')
    carol.wait_for_selector('[data-testid="request-pending"]')
    assert "was sent" in carol.inner_text(".messages")

    alice_cookie = people["users"]["alice@example.com"]["cookie"]
    small = logged_in_page(browser, stack, alice_cookie, width=390, height=844)
    small.goto(f"{url}share")
    small.wait_for_selector('[data-testid="access-request"]')
    small.locator('[data-testid="access-requests"]').screenshot(path=str(SHOTS / "requests-390.png"))
    width = small.evaluate("document.querySelector('[data-testid=access-requests]').scrollWidth")
    assert width <= 390, f"the requests section is {width} px wide at 390 px"
    small.context.close()

    owner = logged_in_page(browser, stack, alice_cookie, width=1280, height=860)
    owner.goto(f"{url}share")
    row = owner.locator('[data-testid="access-request"]:has-text("carol@example.com")')
    assert "Tuesday's lab group" in row.inner_text()
    assert row.locator('[data-testid="approve-role"]').input_value() == "editor"
    owner.locator('[data-testid="access-requests"]').screenshot(path=str(SHOTS / "requests-1280.png"))
    row.locator('[data-testid="approve-request"]').click()
    owner.wait_for_selector('[data-testid="grant-row"]:has-text("carol@example.com")')
    assert owner.locator('[data-testid="access-request"]').count() == 0

    assert carol.goto(url).status == 200
    carol.wait_for_function("window.__editor && window.__editor.provider.synced")
    assert carol.evaluate("window.__editor.notebook.canEdit") is True
    carol.context.close()
    owner.context.close()


def test_an_editor_who_tries_to_run_asks_for_edit_and_run(browser, stack, people):
    nb = people["notebooks"][0]
    eddie = logged_in_page(browser, stack, people["users"]["eddie@example.com"]["cookie"], width=1280)
    eddie.goto(f"{stack.base}/n/{nb}/")
    eddie.wait_for_function("window.__editor && window.__editor.provider.synced")
    eddie.locator('[data-testid="cell"]').first.locator(".cm-content").click()
    eddie.keyboard.press("Shift+Enter")
    ask = eddie.locator('[data-testid="ask-run"]')
    ask.wait_for()
    assert "not run code" in eddie.locator('[data-testid="toast"]:has([data-testid="ask-run"])').inner_text()
    eddie.screenshot(path=str(SHOTS / "editor-ask-run-1280.png"))
    assert ask.inner_text() == "Ask for Can edit and run"
    ask.click()
    eddie.wait_for_selector('[data-testid="toast"]:has-text("was sent")')
    assert ["eddie@example.com", "runner"] in [list(r) for r in pending_requests(stack, nb)]
    assert eddie.errors == []
    eddie.context.close()


def test_the_message_is_said_once_however_often_the_key_is_pressed(browser, stack, people):
    nb = people["notebooks"][0]
    eddie = logged_in_page(browser, stack, people["users"]["eddie@example.com"]["cookie"], width=1280)
    eddie.goto(f"{stack.base}/n/{nb}/")
    eddie.wait_for_function("window.__editor && window.__editor.provider.synced")
    eddie.locator('[data-testid="cell"]').first.locator(".cm-content").click()
    for _ in range(3):
        eddie.keyboard.press("Shift+Enter")
    eddie.locator('[data-testid="ask-run"]').wait_for()
    assert eddie.locator('[data-testid="ask-run"]').count() == 1
    assert json.dumps(eddie.errors) == "[]"
    eddie.context.close()


def test_a_viewer_who_tries_to_edit_asks_for_edit(browser, stack, people):
    nb = people["notebooks"][0]
    vera = logged_in_page(browser, stack, people["users"]["vera@example.com"]["cookie"], width=1280)
    vera.goto(f"{stack.base}/n/{nb}/")
    vera.wait_for_function("window.__editor && window.__editor.provider.synced")
    vera.locator('[data-testid="cell"]').first.locator(".cm-content").click()
    ask = vera.locator('[data-testid="ask-edit"]')
    ask.wait_for()
    assert ask.inner_text() == "Ask for Can edit"
    ask.click()
    vera.wait_for_selector('[data-testid="toast"]:has-text("was sent")')
    assert ["vera@example.com", "editor"] in [list(r) for r in pending_requests(stack, nb)]
    vera.context.close()


@pytest.mark.parametrize("width", [1280, 390])
def test_the_404_and_500_pages_are_in_the_site_layout(browser, stack, people, width):
    page = logged_in_page(
        browser, stack, people["users"]["carol@example.com"]["cookie"], width=width, height=800
    )
    assert page.goto(f"{stack.base}/n/00000000-0000-4000-8000-000000000000/").status == 404
    assert page.locator(".topbar").is_visible()
    assert page.locator('[data-testid="error-title"]').inner_text() == "This page does not exist"
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.screenshot(path=str(SHOTS / f"404-{width}.png"))
    html = stack.django(
        "import json\nfrom django.test import RequestFactory\nfrom config.views import server_error\n"
        "print(json.dumps({'html': server_error(RequestFactory().get('/')).content.decode()}))"
    )["html"]
    page.set_content(html)  # the worker's own page, at the worker's address (its stylesheet loads)
    page.wait_for_load_state("networkidle")
    assert page.locator(".topbar").is_visible()
    assert page.evaluate("getComputedStyle(document.querySelector('main')).maxWidth") != "none"
    assert page.locator('[data-testid="error-retry"]').is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.screenshot(path=str(SHOTS / f"500-{width}.png"))
    page.context.close()
