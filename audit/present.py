"""How an event reads to a person: the action in words and its details as short facts.

Pure: no database access. The activity page, its tests and the exports all use it, so the
words on the page and in the CSV are the same.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any

ROLES = {"viewer": "can view", "editor": "can edit", "runner": "can edit and run", "owner": "owner"}
VIA = {
    "owner": "as the owner",
    "direct": "added by the owner",
    "invitation": "by email invitation",
    "transfer": "as former owner",
    "link": "through a share link",
}

# Action -> words, with `{detail}` placeholders; the actor is the subject of the sentence.
WORDS = {
    "notebook.created": "created the notebook",
    "notebook.imported": "imported the notebook from {filename}",
    "notebook.renamed": "renamed the notebook from “{old}” to “{new}”",
    "notebook.deleted": "moved the notebook to the trash",
    "notebook.restored": "restored the notebook from the trash",
    "notebook.purged": "deleted the notebook for good",
    "notebook.downloaded": "downloaded the notebook",
    "notebook.replaced": "replaced the notebook with {filename}",
    "notebook.transferred": "handed the notebook over to {to}",
    "notebook.sharing_changed": "changed whether editors may share",
    "grant.added": "shared the notebook with {email} ({role})",
    "grant.changed": "changed the role of {email} from {old} to {new}",
    "grant.removed": "removed the access of {email}",
    "guest.removed": "removed a guest who came through the link “{link_label}”",
    "access.general_changed": "set general access to {level} {role}",
    "link.copied": "copied the share link “{link_label}”",
    "link.renewed": "gave general access a new link (the old one stopped working)",
    "invitation.sent": "invited {email} ({role})",
    "invitation.accepted": "accepted the invitation sent to {email} ({role})",
    "invitation.withdrawn": "withdrew the invitation to {email}",
    "link.created": "created the share link “{link_label}” ({role})",
    "link.used": "joined through a share link ({role})",
    "link.revoked": "revoked the share link “{link_label}”",
    "link.expired": "share link “{link_label}” expired",
    "access.denied": "was refused access",
    "access.requested": "asked for access ({role})",
    "access.approved": "approved the access request of {email} ({role})",
    "access.declined": "declined the access request of {email}",
    "session.joined": "opened the notebook ({role})",
    "session.left": "closed the notebook",
    "cell.executed": "ran a cell",
    "kernel.started": "started the kernel",
    "kernel.reconnected": "took over the running kernel (its server process had stopped)",
    "kernel.interrupted": "interrupted the kernel",
    "kernel.restarted": "restarted the kernel",
    "kernel.shut_down": "shut the kernel down",
    "kernel.server_added": "added the kernel server “{server}”",
    "kernel.server_removed": "removed the kernel server “{server}”",
    "kernel.settings_changed": "changed the kernel settings",
    "audit.exported": "exported the activity log as {format}",
}

# Groups for the action filter; a group's value is a prefix ("link.") matching all its actions.
GROUPS = {
    "notebook.": "Notebook",
    "grant.": "People",
    "invitation.": "Invitations",
    "link.": "Share links",
    "session.": "Sessions",
    "cell.": "Cells",
    "kernel.": "Kernel",
    "access.": "Access",
    "audit.": "Activity log",
}

# Short names for the action filter.
LABELS = {
    "notebook.created": "Created",
    "notebook.imported": "Imported",
    "notebook.renamed": "Renamed",
    "notebook.deleted": "Moved to trash",
    "notebook.restored": "Restored",
    "notebook.purged": "Deleted for good",
    "notebook.downloaded": "Downloaded",
    "notebook.replaced": "Replaced",
    "notebook.transferred": "Ownership handed over",
    "notebook.sharing_changed": "Sharing settings changed",
    "grant.added": "Access given",
    "grant.changed": "Role changed",
    "grant.removed": "Access removed",
    "guest.removed": "Guest removed",
    "access.general_changed": "General access changed",
    "link.copied": "Link copied",
    "link.renewed": "General link renewed",
    "invitation.sent": "Invitation sent",
    "invitation.accepted": "Invitation accepted",
    "invitation.withdrawn": "Invitation withdrawn",
    "link.created": "Link created",
    "link.used": "Link used",
    "link.revoked": "Link revoked",
    "link.expired": "Link expired",
    "access.denied": "Access refused",
    "access.requested": "Access requested",
    "access.approved": "Access request approved",
    "access.declined": "Access request declined",
    "session.joined": "Opened",
    "session.left": "Closed",
    "cell.executed": "Cell run",
    "kernel.started": "Kernel started",
    "kernel.reconnected": "Kernel taken over",
    "kernel.interrupted": "Kernel interrupted",
    "kernel.restarted": "Kernel restarted",
    "kernel.shut_down": "Kernel shut down",
    "kernel.server_added": "Kernel server added",
    "kernel.server_removed": "Kernel server removed",
    "kernel.settings_changed": "Kernel settings changed",
    "audit.exported": "Log exported",
}


def action_choices() -> list[tuple[str, list[tuple[str, str]]]]:
    """(group label, [(value, label)]) for the filter's <optgroup>s."""
    out = []
    for prefix, group in GROUPS.items():
        items = [(prefix, f"{group}: all")]
        items += [(a, label) for a, label in LABELS.items() if a.startswith(prefix)]
        out.append((group, items))
    return out


def is_known_filter(value: str) -> bool:
    return value in LABELS or value in GROUPS


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def words(action: str, details: dict[str, Any]) -> str:
    template = WORDS.get(action)
    if template is None:
        return action
    values = _Blank({k: _value(k, v) for k, v in details.items()})
    return string.Formatter().vformat(template, (), values)


def _value(key: str, value: Any) -> str:
    if key in ("role", "old", "new") and value in ROLES:
        return ROLES[value]
    if key == "format":
        return {"csv": "CSV", "jsonl": "JSON lines"}.get(value, str(value))
    return str(value)


@dataclass
class Shown:
    """What the page shows of one event besides time, person and IP."""

    words: str
    facts: list[str] = field(default_factory=list)
    code: str = ""
    status: str = ""  # "ok" / "error" / ... for a coloured badge

    @property
    def code_lines(self) -> int:
        return self.code.count("\n") + 1 if self.code else 0


def show(action: str, details: dict[str, Any]) -> Shown:
    shown = Shown(words(action, details))
    d = details or {}
    if action == "cell.executed":
        shown.status = str(d.get("status", ""))
        shown.code = str(d.get("code", ""))
        if d.get("execution_count") is not None:
            shown.facts.append(f"[{d['execution_count']}]")
        if d.get("duration_ms") is not None:
            shown.facts.append(_duration(d["duration_ms"]))
        if d.get("cell_id"):
            shown.facts.append(f"cell {d['cell_id']}")
    elif action == "session.joined":
        if d.get("via") in VIA:
            shown.facts.append(VIA[d["via"]])
    elif action == "session.left":
        shown.facts.append(_count(d.get("updates", 0), "change"))
        if d.get("denied"):
            shown.facts.append(_count(d["denied"], "refused change"))
        cells = d.get("cells") or []
        if cells:
            listed = ", ".join(str(c) for c in cells[:5])
            more = f" and {len(cells) - 5} more" if len(cells) > 5 else ""
            shown.facts.append(f"{_count(len(cells), 'cell')} touched: {listed}{more}")
    elif action == "access.denied":
        shown.facts.append(str(d.get("reason", "")))
        if d.get("link_label"):
            shown.facts.append(f"link “{d['link_label']}”")
    elif action == "notebook.imported":
        shown.facts.append(_count(d.get("cells", 0), "cell"))
    elif action == "notebook.created" and d.get("copied_from"):
        shown.facts.append(f"copy of notebook {d['copied_from']}")
    elif action == "link.created":
        shown.facts.append("sign-in required" if d.get("require_login", True) else "anyone with the link")
    elif action == "kernel.started" and d.get("kernel_name"):
        shown.facts.append(str(d["kernel_name"]))
    elif action == "notebook.sharing_changed":
        allowed = d.get("editors_can_share")
        shown.facts.append("editors may now share" if allowed else "only the owner may share")
    elif action == "kernel.settings_changed":
        shown.facts.append(f"server: {d.get('server') or 'the default'}")
        if d.get("kernelspec"):
            shown.facts.append(f"kernel: {d['kernelspec']}")
    elif action == "grant.removed" and d.get("left"):
        shown.facts.append("left the notebook themselves")
    elif action == "link.expired" and d.get("expired_at"):
        shown.facts.append(f"expired at {d['expired_at'][:16].replace('T', ' ')}")
    elif action == "audit.exported":
        filters = d.get("filters") or {}
        shown.facts.extend(f"{k}: {v}" for k, v in filters.items() if v)
    return shown


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _duration(ms: Any) -> str:
    try:
        ms = float(ms)
    except (TypeError, ValueError):
        return ""
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


@dataclass
class Row:
    """One table row with everything already formatted: the template only prints fields
    (a row costs a few dozen template lookups instead of a few hundred)."""

    id: int
    action: str
    iso: str
    clock: str
    day: str  # the date heading to put above this row, or ""
    who: str
    who_sub: str
    avatar: str
    colour: str
    shown: Shown
    ip: str


def rows(events, today) -> list[Row]:
    from django.utils import timezone

    out, last_day = [], None
    for event in events:
        at = timezone.localtime(event.at)
        day = at.date()
        heading = "" if day == last_day else ("Today" if day == today else f"{at:%A}, {day.day} {at:%B %Y}")
        last_day = day
        out.append(
            Row(
                id=event.id,
                action=event.action,
                iso=at.isoformat(),
                clock=f"{at:%H:%M:%S}",
                day=heading,
                shown=show(event.action, event.details or {}),
                ip=event.ip or "",
                **_who(event),
            )
        )
    return out


def _who(event) -> dict[str, str]:
    actor = event.actor
    if actor is not None:
        return {"who": actor.name, "who_sub": actor.email, "avatar": actor.initials, "colour": actor.colour}
    label = event.actor_label
    if event.link_id and label.startswith("Guest via "):
        return {"who": label, "who_sub": "guest, not signed in", "avatar": "G", "colour": ""}
    # a deleted account (its email is kept in the label), or nobody signed in
    return {"who": label or "Someone not signed in", "who_sub": "", "avatar": "·", "colour": ""}
