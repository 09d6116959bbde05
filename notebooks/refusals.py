"""What `notebooks.access` answers when it says no: `NoAccess` (to open or act on a notebook)
with a `Denied` code, and `Refused` (a sharing request) with a `Rule` code. Callers branch on
the code, never on the message, and map codes to their own answers (HTTP status, close code)."""

from __future__ import annotations

import enum


class Denied(enum.StrEnum):
    """Why `access_notebook` said no."""

    NO_NOTEBOOK = "no_notebook"  # no such notebook, or it is in the trash
    SIGN_IN = "sign_in"  # not signed in: signing in may help
    NO_ACCESS = "no_access"  # signed in, no path to the notebook
    ROLE_TOO_LOW = "role_too_low"  # has access, but not for this action
    LINK_GONE = "link_gone"  # had access through a link that no longer lets them in
    REMOVED = "removed"  # had access, an owner or a change took it away


class NoAccess(Exception):
    def __init__(self, code: Denied, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Rule(enum.StrEnum):
    """Which rule refused a sharing request."""

    INVALID = "invalid"
    BAD_ID = "bad_id"
    NOT_FOUND = "not_found"
    BAD_ROLE = "bad_role"
    BAD_EXPIRY = "bad_expiry"
    BAD_MAX_USES = "bad_max_uses"
    BAD_EMAIL = "bad_email"
    BAD_ACCESS_LEVEL = "bad_access_level"
    RATE_LIMITED = "rate_limited"
    REMOVED = "removed"
    GUEST = "guest"
    MAY_NOT_SHARE = "may_not_share"
    ABOVE_OWN_ROLE = "above_own_role"
    LINK_OWNER_ROLE = "link_owner_role"
    OWNER_ONLY = "owner_only"
    USE_LEAVE = "use_leave"
    NOT_THE_OWNER = "not_the_owner"
    OWNER_CANNOT_LEAVE = "owner_cannot_leave"
    LINK_UNKNOWN = "link_unknown"
    LINK_INVALID = "link_invalid"
    LOGIN_REQUIRED = "login_required"
    USED_UP = "used_up"
    NOT_COPYABLE = "not_copyable"
    HAS_ROLE = "has_role"  # asked for access one already has
    NOT_THE_RUNNER = "not_the_runner"  # answering an input() one did not cause
    BAD_DECISION = "bad_decision"
    TOO_MANY = "too_many"
    NO_ADDRESS = "no_address"
    MESSAGE_TOO_LONG = "message_too_long"


class Refused(ValueError):
    """A sharing request the rules refuse. `code` names the rule; the message is for people."""

    def __init__(self, message: str, code: Rule = Rule.INVALID):
        super().__init__(message)
        self.code = Rule(code)


def get_or_refuse(queryset, pk, what: str):
    """One row (of a queryset already limited to the notebook) by id, or Refused naming what."""
    try:
        return queryset.get(pk=int(str(pk)))
    except (TypeError, ValueError):
        raise Refused(f"“{str(pk)[:40]}” is not a valid {what} id.", Rule.BAD_ID) from None
    except queryset.model.DoesNotExist:
        raise Refused(f"There is no such {what} on this notebook.", Rule.NOT_FOUND) from None
