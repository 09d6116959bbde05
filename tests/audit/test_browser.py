"""The Activity page in Chromium: filter by action, download the CSV export."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest

from tests.support.browser import browser, logged_in_page, stack  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.processes]


@pytest.fixture(scope="module")
def owner(stack):  # noqa: F811
    alice = stack.user_with_notebook("alice@example.com", title="Quarterly report")
    stack.django(
        "import json\nfrom tests.support.audit import seed_activity\n"
        f"print(json.dumps(seed_activity({alice['notebook_id']!r})))"
    )
    return {**alice, "url": f"{stack.base}/n/{alice['notebook_id']}/activity"}


def test_the_owner_filters_by_action_and_downloads_the_csv(browser, stack, owner, tmp_path):  # noqa: F811
    page = logged_in_page(browser, stack, owner["cookie"])
    page.goto(owner["url"])
    rows = page.locator('[data-testid="event"]')
    assert rows.count() == 10
    assert "Ran a cell" in page.locator('[data-testid="activity-table"]').inner_text()
    shots = os.environ.get("AUDIT_SCREENSHOTS")
    if shots:
        page.screenshot(path=str(Path(shots) / "activity-desktop.png"), full_page=True)

    page.select_option('[data-testid="filter-action"]', "cell.executed")
    page.click('[data-testid="filter-submit"]')
    page.wait_for_url("**action=cell.executed**")
    assert rows.count() == 2
    assert {rows.nth(i).get_attribute("data-action") for i in range(2)} == {"cell.executed"}
    page.locator("details.code summary").nth(1).click()  # newest first: the second run
    assert "df.describe()" in page.locator("details.code pre").nth(1).inner_text()

    with page.expect_download() as info:
        page.click('[data-testid="export-csv"]')
    download = info.value
    assert download.suggested_filename.startswith("activity-quarterly-report-")
    assert download.suggested_filename.endswith(".csv")
    path = tmp_path / "export.csv"
    download.save_as(path)
    records = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    assert [r["action"] for r in records] == ["cell.executed", "cell.executed"]
    assert records[0]["actor"] == "Bob Jones <bob@example.com>"
    assert page.errors == []

    page.goto(owner["url"])
    assert page.locator('[data-testid="event"]').first.get_attribute("data-action") == "audit.exported"
    page.context.close()


def test_it_reads_well_on_a_phone(browser, stack, owner):  # noqa: F811
    page = logged_in_page(browser, stack, owner["cookie"], width=390, height=844)
    page.goto(owner["url"])
    assert page.locator('[data-testid="event"]').count() >= 10
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    shots = os.environ.get("AUDIT_SCREENSHOTS")
    if shots:
        page.locator("details.code summary").nth(1).click()
        page.screenshot(path=str(Path(shots) / "activity-390.png"), full_page=True)
    page.context.close()
