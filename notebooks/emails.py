"""The emails sharing sends: what they say and where their links point.

Links are built from the request being answered (`build_absolute_uri`: the host and port the
app is served on) when its Host names the port it came in on; otherwise (a Host naming another
port, which anyone can send and which would hand an invitation's token to whoever listens
there; or a request through a proxy) and when there is no request, from `SITE_URL`
(`manage.py serve` and `stack` set it from their host and port). Mail goes out only once the
transaction that caused it commits.
"""

from __future__ import annotations

import unicodedata

from django.conf import settings
from django.core.exceptions import DisallowedHost, ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.http.request import split_domain_port

from notebooks.refusals import Refused, Rule

MESSAGE_MAX_CHARS = 1000  # a personal note, not a letter
MAX_ADDRESSES = 200  # per invite form


def absolute(request, path: str) -> str:
    if request is not None and _addressed_to_its_own_port(request):
        return request.build_absolute_uri(path)
    return settings.SITE_URL.rstrip("/") + path


def _addressed_to_its_own_port(request) -> bool:
    """The Host (an allowed one) names the port this server received the request on."""
    try:
        host = request.get_host()
    except DisallowedHost:
        return False
    port = split_domain_port(host)[1] or ("443" if request.is_secure() else "80")
    return port == str(request.META.get("SERVER_PORT", ""))


def clean_message(text: str | None) -> str:
    """A personal message as typed, without control characters (newlines and tabs stay).
    Refused, naming the limit, when it is too long."""
    text = (text or "").replace("\r\n", "\n").strip()
    if len(text) > MESSAGE_MAX_CHARS:
        raise Refused(
            f"The message is {len(text):,} characters long; at most {MESSAGE_MAX_CHARS:,} fit.",
            Rule.MESSAGE_TOO_LONG,
        )
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c)[0] != "C")


def split_addresses(text: str) -> tuple[list[str], list[str]]:
    """The addresses typed into an invite form: (valid ones, lower-cased and without
    duplicates; the ones that are not addresses, as typed)."""
    words = (text or "").replace(",", "\n").replace(";", "\n").split()
    valid, invalid = [], []
    for word in dict.fromkeys(words):
        try:
            validate_email(word)
        except ValidationError:
            invalid.append(word[:254])
        else:
            if word.lower() not in valid:
                valid.append(word.lower())
    return valid, invalid


def _quoted(message: str) -> str:
    return "".join(f"  > {line}\n" for line in message.splitlines()) + "\n" if message else ""


def send(to: str, subject: str, body: str) -> None:
    subject = " ".join(subject.split())  # a title's line break must not break the header
    transaction.on_commit(lambda: send_mail(subject, body, None, [to], fail_silently=True))


def invitation(
    notebook,
    inviter: str,
    to: str,
    token: str,
    role_label: str,
    message: str,
    request,
    days: int,
    reminder: bool = False,
) -> None:
    """An invitation to someone without an account: the link proves the address."""
    link = absolute(request, f"/invite/{token}")
    subject = f"{'Reminder: ' if reminder else ''}{inviter} invited you to “{notebook.title}”"
    body = (
        f"{inviter} invited you to the notebook “{notebook.title}” ({role_label.lower()}).\n\n"
        f"{_quoted(message)}"
        f"Open it: {link}\n\n"
        f"Create your account with this address ({to}) from that link; you land on the notebook,"
        f" and the address needs no second confirmation.\n"
        f"The invitation expires in {days} days.\n\n-- {settings.SITE_NAME}\n"
    )
    send(to, subject, body)


def shared(notebook, sharer: str, to: str, role_label: str, message: str, request) -> None:
    """Access given at once to someone who has an account."""
    link = absolute(request, notebook.get_absolute_url())
    body = (
        f"{sharer} shared the notebook “{notebook.title}” with you ({role_label.lower()}).\n\n"
        f"{_quoted(message)}Open it: {link}\n\n-- {settings.SITE_NAME}\n"
    )
    send(to, f"{sharer} shared “{notebook.title}” with you", body)


def access_requested(access_request, to: list[str], removed: bool, request) -> None:
    """Tell the people who may approve that someone asks for access."""
    notebook, user = access_request.notebook, access_request.user
    who = f"{user.name} <{user.email}>" if user.name != user.email else user.email
    link = absolute(request, f"/n/{notebook.pk}/share#access-requests")
    note = "\nAn owner removed this person from the notebook earlier.\n" if removed else ""
    body = (
        f"{who} asks for access to “{notebook.title}”: {access_request.get_role_display().lower()}.\n"
        f"{note}\n{_quoted(access_request.message)}"
        f"Approve or decline: {link}\n\n-- {settings.SITE_NAME}\n"
    )
    for address in to:
        send(address, f"{user.name} asks for access to “{notebook.title}”", body)
