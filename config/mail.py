"""Email without a mail server (no `EMAIL_URL`): each message is written whole to a folder only
the app's user can read (`EMAIL_FILE_PATH`, default var/emails) and shown on the console with the
secrets of its links taken out (invitation, share, confirmation and password-reset tokens, as in
the logs), so a log collector never holds a link that lets someone in."""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.mail.backends.filebased import EmailBackend as FileBackend

from config.logformat import redact


class PrivateConsoleBackend(FileBackend):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)  # makes the folder
        Path(self.file_path).chmod(0o700)

    def write_message(self, message) -> None:
        super().write_message(message)
        shown = [
            f"To: {', '.join(message.to)}",
            f"Subject: {message.subject}",
            "",
            redact(str(message.body)),
            f"(the whole message, links included: {self._fname})",
            "-" * 79,
        ]
        sys.stdout.write("\n".join(shown) + "\n")
        sys.stdout.flush()
