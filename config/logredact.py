"""Share-link tokens stay out of logs: `/s/<token>` becomes `/s/[token]` in every line written
through the app's log handlers (django.request's "Not Found: /s/...", for one) and in daphne's
access log, which writes the request path straight to its stream."""

from __future__ import annotations

import logging
import re

TOKEN_PATH = re.compile(r"(/s/)[A-Za-z0-9_-]{8,}")


def redact(text: str) -> str:
    return TOKEN_PATH.sub(r"\1[token]", text)


class RedactTokens(logging.Filter):
    """A handler filter (see LOGGING in settings): formats the message once, redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if TOKEN_PATH.search(message):
            record.msg, record.args = redact(message), None
        return True


def install() -> None:
    """Redact daphne's access log (called by the ASGI entry, which daphne loads before it
    starts logging)."""
    from daphne.access import AccessLogGenerator

    if getattr(AccessLogGenerator.write_entry, "redacts", False):
        return
    original = AccessLogGenerator.write_entry

    def write_entry(self, host, date, request, *args, **kwargs):
        return original(self, host, date, redact(request), *args, **kwargs)

    write_entry.redacts = True
    AccessLogGenerator.write_entry = write_entry
