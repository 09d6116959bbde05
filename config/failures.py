"""Work retried through an outage (the database or Redis away for a while) logs one line, naming
the error, when it starts failing and one when it works again: not a traceback per attempt, every
few seconds, on every worker, which buried what the outage was."""

from __future__ import annotations

import logging


class FailureLog:
    """The failing/working state of one retried job (`what` names it in both lines)."""

    def __init__(self, log: logging.Logger, what: str):
        self.log = log
        self.what = what
        self.failing = False

    def failed(self, exc: BaseException, retrying: str) -> None:
        """An attempt failed; `retrying` says when the next one comes."""
        if not self.failing:
            self.log.warning("%s failing (%r); %s", self.what, exc, retrying)
        self.failing = True

    def worked(self) -> None:
        if self.failing:
            self.log.warning("%s works again", self.what)
        self.failing = False
