"""Every role and link decision lives in `notebooks/access.py` (and the `Role` helpers in
`notebooks/models.py`): no other module compares roles, ranks, the path someone came by, or
writes a link's validity again. This test reads the source, so a decision that creeps back out
of `access.py` fails here with the file and line."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ("accounts", "audit", "collab", "config", "kernels", "notebooks")
HOME = {"notebooks/access.py", "notebooks/models.py"}

DECISIONS = {
    "compares role ranks": re.compile(r"\.rank\b"),
    "compares a role": re.compile(r"(==|!=|\bis\b|\bin\b)\s*\(?\s*Role\.\w+|Role\.\w+\s*(==|!=|\bis\b)"),
    "asks a Role helper": re.compile(r"\.(is_owner|can_edit|can_run)\(\)"),
    "branches on the path someone came by": re.compile(r"\.via\s*(==|!=|\bin\b|\bnot in\b)"),
    "writes a link's validity": re.compile(r"revoked_at__isnull|expires_at__gt|is_usable|link_is_valid"),
    "maps a close code": re.compile(r"\bcode\s*==\s*440[134]"),
    "reads an error's text": re.compile(r"str\(e\)\s*(==|\bin\b)|in str\(e\)"),
}


def decisions_outside_access() -> list[str]:
    found = []
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in HOME or "/migrations/" in rel:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                for what, pattern in DECISIONS.items():
                    if pattern.search(code):
                        found.append(f"{rel}:{number} {what}: {line.strip()}")
    return found


def test_role_and_link_decisions_live_only_in_access():
    # Invitations expire too; their filter is not a link's validity.
    found = [
        f
        for f in decisions_outside_access()
        if not (f.startswith("notebooks/invitations.py") and "expires_at__gt" in f)
    ]
    assert found == []


def test_the_scan_finds_a_decision_written_elsewhere(tmp_path, monkeypatch):
    """The scan is not blind: a role comparison in another module is found."""
    fake = tmp_path / "notebooks"
    fake.mkdir()
    (fake / "views.py").write_text("if access.role.rank >= Role.EDITOR.rank:\n    pass\n")
    (fake / "links.py").write_text("ShareLink.objects.filter(revoked_at__isnull=True)\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    found = decisions_outside_access()
    assert any("views.py:1 compares role ranks" in f for f in found)
    assert any("links.py:1 writes a link's validity" in f for f in found)
