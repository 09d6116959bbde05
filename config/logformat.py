"""Logs without secrets: share-link and invitation tokens in `/s/<token>` and `/invite/<token>`
paths, email confirmation and password-reset keys, cookie values, tokens in query strings,
Authorization headers and passwords in URLs are taken out of every record (the `RedactSecrets`
filter on the console handler) and of daphne's access log; LOG_FORMAT=json writes one JSON
object per line, traceback included and redacted too."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

_SECRETS = [
    (re.compile(r"/s/[A-Za-z0-9_\-]+"), "/s/<token>"),
    (re.compile(r"/invite/[A-Za-z0-9_\-]+"), "/invite/<token>"),  # emailed invitations
    (re.compile(r"/confirm-email/[^/\s]+"), "/confirm-email/<key>"),  # allauth's emailed links
    (re.compile(r"/password/reset/key/[^/\s]+"), "/password/reset/key/<key>"),
    (re.compile(r"(?i)\b(sessionid|csrftoken|messages)=[^;\s,'\"]+"), r"\1=<redacted>"),
    (re.compile(r"(?i)\b(token|key|password)=[^&\s,'\"]+"), r"\1=<redacted>"),
    (re.compile(r"(?i)\b(authorization:?\s*['\"]?(?:token|bearer|basic)\s+)[^\s'\",]+"), r"\1<redacted>"),
    (re.compile(r"(?i)(://[^:/@\s]*:)[^@/\s]+@"), r"\1<redacted>@"),  # passwords in URLs
]


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """On every handler, whatever the format: a record's message without the secrets above."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


class QuietRefusals(logging.Filter):
    """Django logs every 403 and 404 with the exception that caused it: a traceback for an
    everyday answer (someone opens a link they have no access to). Keep the one line. The same
    for a 503 (the database unreachable, `config.views.server_error`): one line per request, and
    for a 400 (a form anyone can send broken: a bad multipart body on `django.request`, too many
    fields or files on `django.security.*`)."""

    QUIET = {400, 403, 404, 503}

    def filter(self, record: logging.LogRecord) -> bool:
        quiet_logger = record.name == "django.request" or record.name.startswith("django.security.")
        if quiet_logger and getattr(record, "status_code", None) in self.QUIET:
            record.exc_info = record.exc_text = None
        return True


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def redact_access_log() -> None:
    """Daphne's access log (a worker's stdout) writes request paths: take share tokens out."""
    from daphne.access import AccessLogGenerator

    original = AccessLogGenerator.write_entry
    if getattr(original, "redacting", False):
        return

    def write_entry(self, host, date, request, *args, **kwargs):
        return original(self, host, date, redact(request), *args, **kwargs)

    write_entry.redacting = True
    AccessLogGenerator.write_entry = write_entry
