"""The share page on a phone, and its destructive buttons ask first."""

from __future__ import annotations

import pytest

from tests.support.browser import logged_in_page

pytestmark = [pytest.mark.browser, pytest.mark.processes]

SEED = """
import json
from notebooks import access, sharing
from notebooks.models import Notebook, Role
from tests.support.cast import make_user
nb = Notebook.objects.get(pk={notebook_id!r})
owner = access.access_notebook(access.principal_from_session(nb.owner, None), nb.pk)
make_user('bartholomew.longname@university-example.com', 'Bartholomew Longname')
sharing.invite(owner, ['bartholomew.longname@university-example.com'], Role.EDITOR)
sharing.invite(owner, ['pending.person@example.org'], Role.VIEWER)
sharing.create_link(owner, label='Seminar group Tuesday', role=Role.EDITOR, max_uses=30)
print(json.dumps({{}}))
"""


def revoked(stack) -> bool:
    code = "import json\nfrom notebooks.models import ShareLink\n"
    code += "print(json.dumps({'revoked': ShareLink.objects.get().revoked_at is not None}))"
    return stack.django(code)["revoked"]


def test_the_share_page_fits_a_phone_and_asks_before_revoking(browser, stack):
    alice = stack.user_with_notebook("alice@example.com", title="A notebook with a fairly long title")
    stack.django(SEED.format(notebook_id=alice["notebook_id"]))
    page = logged_in_page(browser, stack, alice["cookie"], width=390, height=844)
    page.goto(f"{stack.base}/n/{alice['notebook_id']}/share")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path="var/screenshots/share-390.png", full_page=True)

    questions = []
    page.once("dialog", lambda d: (questions.append(d.message), d.dismiss()))
    page.click('[data-testid="revoke-link"]')
    assert "Revoke the link “Seminar group Tuesday”" in questions[0]
    assert not revoked(stack)
    page.once("dialog", lambda d: d.accept())
    page.click('[data-testid="revoke-link"]')
    page.wait_for_selector('[data-testid="link-row"]:has-text("revoked")')
    assert revoked(stack)
    assert page.errors == []
    page.context.close()
