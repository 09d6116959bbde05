"""Production settings pass Django's deployment checks; every page carries a
Content-Security-Policy that the templates comply with (no inline script or handler)."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_check_deploy_is_clean_with_production_settings():
    env = {
        **os.environ,
        "SECURE": "true",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "ALLOWED_HOSTS": "notebooks.example.com",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/notebooks/trash/", "/notebooks/", "/n/{nb}/", "/n/{nb}/share?embed=1"])
def test_pages_carry_the_policy_and_the_framing_rules(client, alice, notebook, path):
    client.force_login(alice)
    response = client.get(path.format(nb=notebook.pk))
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert "script-src 'self';" in policy
    assert "object-src 'none'" in policy
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == ("SAMEORIGIN" if "share" in path else "DENY")


def test_templates_have_no_inline_scripts_or_handlers():
    found = []
    for template in (ROOT / "templates").rglob("*.html"):
        text = template.read_text()
        found += [f"{template.name}: {m}" for m in re.findall(r"<script(?![^>]*\ssrc=)[^>]*>", text)]
        found += [f"{template.name}: {m}" for m in re.findall(r"\son[a-z]+=", text)]
        found += [f"{template.name}: javascript: URL" for _ in re.findall(r"javascript:", text)]
    assert found == []
