"""JSON-lines logs (LOG_FORMAT=json): one object per record, with secrets taken out of the
message and the traceback: share-link tokens in `/s/<token>` paths, cookie values, tokens in
query strings and Authorization headers."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

_SECRETS = [
    (re.compile(r"/s/[A-Za-z0-9_\-]+"), "/s/<token>"),
    (re.compile(r"(?i)\b(sessionid|csrftoken|messages)=[^;\s,'\"]+"), r"\1=<redacted>"),
    (re.compile(r"(?i)\b(token|key|password)=[^&\s,'\"]+"), r"\1=<redacted>"),
    (re.compile(r"(?i)\b(authorization:?\s*['\"]?(?:token|bearer|basic)\s+)[^\s'\",]+"), r"\1<redacted>"),
    (re.compile(r"(?i)(://[^:/@\s]*:)[^@/\s]+@"), r"\1<redacted>@"),  # passwords in URLs
]


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


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
