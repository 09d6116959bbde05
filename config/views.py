"""Views of the site as a whole."""

from __future__ import annotations

import sys

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, HttpResponseServerError
from django.template import loader

UNAVAILABLE_RETRY_AFTER = 5  # seconds
DATABASE_UNREACHABLE = (
    "The server cannot reach its database right now. Your open notebooks keep your edits and "
    "send them when it is back. Try again in a few seconds."
)


def server_error(request):
    """The 500 page in the site's layout. Rendered without context processors or the session,
    which may be what failed: only the product's name is given. A database that cannot be
    reached is an outage, not a bug: 503 with a Retry-After (and one log line, see
    `config.logformat.QuietRefusals`)."""
    context = {"SITE_NAME": settings.SITE_NAME}
    if isinstance(sys.exc_info()[1], OperationalError | InterfaceError):
        unreachable = {"heading": "Back in a moment", "reason": DATABASE_UNREACHABLE}
        html = loader.get_template("503.html").render(context | unreachable)
        response = HttpResponse(html, status=503)
        response["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER)
        return response
    return HttpResponseServerError(loader.get_template("500.html").render(context))
