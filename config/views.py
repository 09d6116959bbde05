"""Views of the site as a whole."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponseServerError
from django.template import loader


def server_error(request):
    """The 500 page in the site's layout. Rendered without context processors or the session,
    which may be what failed: only the product's name is given."""
    html = loader.get_template("500.html").render({"SITE_NAME": settings.SITE_NAME})
    return HttpResponseServerError(html)
