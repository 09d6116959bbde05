"""Times in the viewer's time zone, named by the browser in the `tz` cookie."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.test import RequestFactory
from django.utils import timezone

from config.timezones import ViewerTimeZoneMiddleware


def zone_seen(cookie: str | None) -> str:
    request = RequestFactory().get("/")
    if cookie is not None:
        request.COOKIES["tz"] = cookie
    seen = {}

    def view(_request):
        seen["zone"] = timezone.get_current_timezone_name()
        seen["clock"] = f"{timezone.localtime(datetime(2026, 12, 1, 12, 0, tzinfo=UTC)):%H:%M}"

    ViewerTimeZoneMiddleware(view)(request)
    return f"{seen['zone']} {seen['clock']}"


def test_it_shows_times_in_the_viewers_zone():
    assert zone_seen("Asia/Tokyo") == "Asia/Tokyo 21:00"
    assert zone_seen("America%2FNew_York") == "America/New_York 07:00"


@pytest.mark.parametrize("cookie", [None, "", "Mars/Base", "../../etc/passwd", "/etc/localtime", "x" * 200])
def test_anything_else_stays_utc(cookie):
    assert zone_seen(cookie) == "UTC 12:00"
