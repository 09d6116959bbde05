"""/healthz: fast, public, only "ok" or "unavailable"; /metrics: this worker's numbers in
Prometheus text for whoever holds METRICS_TOKEN."""

from __future__ import annotations

import time

import pytest

from collab.rooms import ROOMS
from config import health
from tests.support.consumer import close_all, joined
from tests.support.processes import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_answers_ok_fast(client):
    start = time.monotonic()
    response = client.get("/healthz")
    assert (response.status_code, response.content) == (200, b"ok\n")
    assert time.monotonic() - start < 1
    assert response["Cache-Control"] == "no-store"


def test_a_failing_database_makes_it_unavailable_without_details(client, monkeypatch):
    def broken():
        raise RuntimeError("connection refused to db.internal:5432 as app")

    monkeypatch.setattr(health, "_database", broken)
    response = client.get("/healthz")
    assert (response.status_code, response.content) == (503, b"unavailable\n")


def test_an_unreachable_kernel_server_makes_it_unavailable_within_the_timeout(client, settings):
    settings.JUPYTER_SERVER_URL = f"http://127.0.0.1:{free_port()}/"
    settings.HEALTH_TIMEOUT = 0.5
    start = time.monotonic()
    assert client.get("/healthz").status_code == 503
    assert time.monotonic() - start < 2


async def test_metrics_count_rooms_sockets_and_refusals(notebook, alice, settings, async_client):
    settings.METRICS_TOKEN = "operator-secret"
    a = await joined(notebook.pk, alice)
    b = await joined(notebook.pk, alice)
    await b.comm.send_to(bytes_data=b"\x00\x00\x01\xff")  # an undecodable state vector: 4400
    await b.wait_closed()
    response = await async_client.get("/metrics", headers={"Authorization": "Bearer operator-secret"})
    text = response.content.decode()
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert f"collab_rooms_open {len(ROOMS)}" in text  # rooms of earlier tests may still unload
    assert f"collab_sockets {sum(len(r.sockets) for r in ROOMS.values())}" in text
    assert "# TYPE collab_frames_malformed_total counter" in text
    assert "collab_fanout_down 0" in text
    malformed = next(line for line in text.splitlines() if line.startswith("collab_frames_malformed_total"))
    assert int(malformed.split()[1]) >= 1
    await close_all(a)


def test_json_log_lines_carry_no_tokens_cookies_or_passwords():
    import json
    import logging

    from config.logformat import JsonLinesFormatter

    record = logging.LogRecord(
        "django.request",
        logging.WARNING,
        __file__,
        1,
        "GET /s/AbC123_-xyz?token=t0psecret failed; Cookie: sessionid=abc123; csrftoken=zz, db %s",
        ("postgres://app:hunter2@db.internal/x",),
        None,
    )
    line = JsonLinesFormatter().format(record)
    entry = json.loads(line)
    assert entry["level"] == "WARNING"
    for secret in ("AbC123_-xyz", "t0psecret", "abc123", "zz,", "hunter2"):
        assert secret not in line
    assert "/s/<token>" in entry["message"]


def test_a_refused_request_logs_one_line_without_a_traceback(client, django_user_model, notebook):
    """A 403 is an everyday answer (someone without access opens a link): one warning line,
    not a traceback per refusal filling the operators' logs."""
    import io
    import logging

    [console] = [
        h
        for h in logging.getLogger().handlers
        if any(f.__class__.__name__ == "QuietRefusals" for f in h.filters)
    ] or [None]
    assert console is not None, "the console handler quiets refusals"
    stream = io.StringIO()
    old = console.setStream(stream)
    try:
        stranger = django_user_model.objects.create_user(email="stranger@example.com", password="pw-12345678")
        client.force_login(stranger)
        assert client.get(f"/n/{notebook.pk}/").status_code == 403
        assert client.get(f"/n/{notebook.pk}/activity").status_code == 403
    finally:
        console.setStream(old)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert all("Forbidden" in line and "Traceback" not in line for line in lines), lines


def test_console_email_keeps_its_links_secrets_in_a_private_file(settings, tmp_path, capsys):
    from django.core import mail

    settings.EMAIL_BACKEND = "config.mail.PrivateConsoleBackend"
    settings.EMAIL_FILE_PATH = str(tmp_path / "emails")
    links = [
        "http://127.0.0.1:8000/invite/Zx9-invitation_TOKEN",
        "http://127.0.0.1:8000/accounts/confirm-email/MQ:1vabc:confirmKEY/",
        "http://127.0.0.1:8000/accounts/password/reset/key/1-resetKEY/",
    ]
    mail.send_mail("You are invited", "Open it: " + "\n".join(links), None, ["dana@example.com"])
    shown = capsys.readouterr().out
    assert "You are invited" in shown
    assert "dana@example.com" in shown
    for secret in ("invitation_TOKEN", "confirmKEY", "resetKEY"):
        assert secret not in shown
    assert "/invite/<token>" in shown
    saved = list((tmp_path / "emails").iterdir())
    assert len(saved) == 1
    assert str(saved[0]) in shown
    assert all(link in saved[0].read_text() for link in links)
    assert (tmp_path / "emails").stat().st_mode & 0o777 == 0o700
