from __future__ import annotations

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from django.shortcuts import render

from notebooks import access as acl


def wants_json(request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def busy(request, error):
    """503 with Retry-After: the server cannot do this right now (`actions.ImportsBusy`)."""
    if wants_json(request):
        response = JsonResponse({"error": str(error), "code": "busy"}, status=503)
    else:
        response = render(request, "503.html", {"reason": str(error)}, status=503)
    response["Retry-After"] = str(error.retry_after)
    return response


def principal(request) -> acl.Principal:
    return acl.principal_from_session(request.user, request.session)


def get_access(request, notebook_id, action: acl.Action = acl.Action.VIEW) -> acl.Access:
    """Fetch the notebook and check access in one call; raise the matching HTTP error."""
    try:
        return acl.access_notebook(principal(request), notebook_id, action)
    except acl.NoAccess as e:
        if e.code is acl.Denied.NO_NOTEBOOK:
            raise Http404(e.reason) from None
        if e.code is acl.Denied.SIGN_IN:
            raise NeedsLogin(request) from None
        raise PermissionDenied(e.reason) from None


class NeedsLogin(Exception):
    def __init__(self, request):
        self.response = redirect_to_login(request.get_full_path())


class NeedsLoginMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, NeedsLogin):
            return exception.response
        return None
