"""Times in the viewer's time zone: the browser names it in the `tz` cookie (static/js/timezone.js);
anything that is not a known IANA zone name is ignored and times stay in UTC."""

from __future__ import annotations

import zoneinfo
from urllib.parse import unquote

from django.utils import timezone

MAX_NAME = 64


def viewer_zone(raw: str | None) -> zoneinfo.ZoneInfo | None:
    name = unquote(raw or "")
    if not name or len(name) > MAX_NAME or ".." in name or name.startswith("/"):
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


class ViewerTimeZoneMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        zone = viewer_zone(request.COOKIES.get("tz"))
        if zone is None:
            timezone.deactivate()
        else:
            timezone.activate(zone)
        return self.get_response(request)
