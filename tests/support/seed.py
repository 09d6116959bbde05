"""Users, notebooks and grants for browser tests, made in ONE `Stack.django` call."""

from __future__ import annotations

import json


def seed(stack, users: list[str], notebooks: list[dict]) -> dict:
    """users: emails. notebooks: {"owner": email, "title": str, "ipynb": path or None,
    "share": {email: role}}. Returns {"users": {email: {"user_id", "cookie"}}, "notebooks": [id, ...]}."""
    spec = json.dumps({"users": users, "notebooks": notebooks})
    return stack.django(
        f"import json\nfrom tests.support.seed import seed_inside\nprint(json.dumps(seed_inside({spec!r})))"
    )


def seed_inside(spec_json: str) -> dict:
    """Runs inside a stack's Django (`Stack.django`)."""
    from pathlib import Path

    from notebooks import actions
    from tests.support.processes import make_user_and_notebook, share_with, user_by_email

    spec = json.loads(spec_json)
    out = {
        "users": {email: make_user_and_notebook(email, "null") for email in spec["users"]},
        "notebooks": [],
    }
    for nb in spec["notebooks"]:
        owner = user_by_email(nb["owner"])
        title = nb.get("title", "Test")
        if nb.get("ipynb"):
            notebook = actions.import_ipynb(owner, title + ".ipynb", Path(nb["ipynb"]).read_bytes())
        else:
            notebook = actions.create_blank(owner, title=title)
        for email, role in nb.get("share", {}).items():
            share_with(str(notebook.pk), email, role)
        out["notebooks"].append(str(notebook.pk))
    return out
