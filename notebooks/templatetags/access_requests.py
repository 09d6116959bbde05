"""Template tags for access requests: the share page's pending list and the 403 page's form."""

from __future__ import annotations

from django import template

from notebooks import access as acl
from notebooks import emails
from notebooks import requests as access_requests
from notebooks.models import Notebook, Role

register = template.Library()


@register.simple_tag(takes_context=True)
def pending_access_requests(context, notebook) -> list:
    """The pending requests the viewer of the share page may decide."""
    request = context["request"]
    principal = acl.principal_from_session(request.user, request.session)
    access = acl.resolve(principal, notebook)
    if access is None or not access.can(acl.Action.SHARE):
        return []
    return access_requests.pending(access)


@register.inclusion_tag("notebooks/_request_access_form.html", takes_context=True)
def request_access_form(context) -> dict:
    """On a 403 page about a notebook: the form to ask for access (or to sign in first)."""
    request = context.get("request")
    match = getattr(request, "resolver_match", None)
    notebook_id = match.kwargs.get("notebook_id") if match else None
    notebook = Notebook.objects.alive().filter(pk=notebook_id).first() if notebook_id else None
    if notebook is None:
        return {"notebook": None}
    principal = acl.principal_from_session(request.user, request.session)
    current = acl.resolve(principal, notebook)
    roles = acl.roles_to_request(current)
    mine = access_requests.my_request(principal, notebook)
    asked = mine.role if mine is not None and mine.status == "pending" else None
    return {
        "notebook": notebook,
        "user": request.user,
        "request": request,
        "roles": roles,
        "default_role": asked or (Role.EDITOR.value if current is None else roles[0].value if roles else ""),
        "pending": mine if asked else None,
        "message_max": emails.MESSAGE_MAX_CHARS,
        "csrf_token": context.get("csrf_token"),
    }
