"""The repo's nginx configuration in front of two real daphne workers and a redis-server:
pages, websockets (each client on whichever worker nginx picks), the body limit, gzip, static
files from disk (brotli too) or from the workers when not collected."""

from __future__ import annotations

import asyncio
import gzip
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request

import brotli
import pytest

from config.deploy import BROTLI_STATIC_MODULE
from tests.support.processes import Stack, start_proxy
from tests.support.waiting import eventually
from tests.support.yclient import open_client, settle

pytestmark = pytest.mark.processes
LIMIT = 2 * 1024 * 1024
METRICS_TOKEN = "metrics-token-for-tests"


@pytest.fixture(scope="module")
def proxied():
    stack = Stack(REQUEST_MAX_BODY_BYTES=str(LIMIT), EMAIL_BACKEND="file", METRICS_TOKEN=METRICS_TOKEN)
    stack.env["EMAIL_FILE_PATH"] = str(stack.tmp / "mail")
    run_dir = None
    try:
        port, run_dir = start_proxy(stack, max_body=LIMIT)
        yield stack, port, run_dir
    finally:
        stack.close()
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)


def get(port: int, path: str, **headers) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_pages_and_static_files_come_through_gzipped(proxied):
    stack, port, _ = proxied
    status, _, body = get(port, "/accounts/login/")
    assert status == 200, (body, [stack.log(w)[-2000:] for w in stack.workers])
    assert b"<form" in body
    status, headers, _ = get(port, "/static/dist/editor.js", **{"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers.get("Content-Encoding") == "gzip"


def test_collected_static_files_come_from_disk_brotli_encoded_and_cached_for_ever(proxied):
    _, port, run_dir = proxied
    assert BROTLI_STATIC_MODULE.exists(), "scripts/install_nginx.sh installs it"
    source = b"export const probe = 'served by nginx';\n" * 100
    folder = run_dir / "static" / "dist"
    folder.mkdir(mode=0o755)
    for name, data in (("", source), (".br", brotli.compress(source)), (".gz", gzip.compress(source))):
        (folder / f"probe.0123456789ab.js{name}").write_bytes(data)
        (folder / f"probe.0123456789ab.js{name}").chmod(0o644)

    path = "/static/dist/probe.0123456789ab.js"
    status, headers, body = get(port, path, **{"Accept-Encoding": "gzip, deflate, br"})
    assert status == 200
    assert headers.get("Content-Encoding") == "br"
    assert brotli.decompress(body) == source
    assert headers.get("Cache-Control") == "public, max-age=315360000, immutable"
    status, headers, body = get(port, path, **{"Accept-Encoding": "gzip"})
    assert (status, headers.get("Content-Encoding"), gzip.decompress(body)) == (200, "gzip", source)
    status, headers, body = get(port, path)
    assert (status, headers.get("Content-Encoding"), body) == (200, None, source)

    def logged() -> list[str]:  # nginx logs a request after its response has gone out
        lines = [line for line in (run_dir / "access.log").read_text().splitlines() if path in line]
        return lines if len(lines) >= 3 else []

    served = eventually(logged, what="nginx to log the three requests")
    assert len(served) == 3
    assert all(line.endswith(" -") for line in served), served  # no worker was asked


def test_the_proxy_refuses_a_body_over_the_limit(proxied):
    _, port, run_dir = proxied
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/notebooks/upload", data=b"x" * (3 * 1024 * 1024)
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 413, (run_dir / "nginx-error.log").read_text()
    assert b"nginx" in info.value.read()  # refused by the proxy, before any worker


def test_websocket_clients_sync_through_the_proxy_whichever_worker_they_reach(proxied):
    stack, port, run_dir = proxied
    owner = stack.user_with_notebook("owner@example.com", title="Through nginx")

    async def scenario():
        clients = [await open_client(port, owner["notebook_id"], owner["cookie"]) for _ in range(4)]
        clients[0].text().insert(0, "hello ")
        await clients[0].flush()
        clients[3].text().insert(0, "world ")
        await clients[3].flush()
        await settle(clients)
        assert sorted(clients[1].source().split()) == ["hello", "world"]
        for client in clients:
            await client.ws.close()

    asyncio.run(scenario())
    log = (run_dir / "access.log").read_text()
    used = {line.rsplit(" ", 1)[-1] for line in log.splitlines() if "/ws/notebooks/" in line}
    assert len(used) == 2, log  # least_conn spread the four sockets over both workers


def post_form(
    port: int, path: str, cookie: str, data: dict, post_to: str | None = None, **headers: str
) -> tuple[int, dict, bytes]:
    """A browser's form POST (to `post_to`, else to the form's page `path`): its session and
    CSRF cookies, the token, and the Origin a browser sends for the address it is on."""
    status, got, body = get(port, path, Cookie=cookie)
    assert status == 200, body[:500]
    csrf = re.search(r"csrftoken=([^;]+)", got.get("Set-Cookie", "")).group(1)
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{post_to or path}",
        data=urllib.parse.urlencode({**data, "csrfmiddlewaretoken": csrf}).encode(),
        headers={"Cookie": f"{cookie}; csrftoken={csrf}", "Origin": f"http://127.0.0.1:{port}", **headers},
    )

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_an_invitation_sent_through_the_proxy_links_to_the_proxy_and_its_token_stays_out_of_the_log(
    proxied,
):
    stack, port, run_dir = proxied
    owner = stack.user_with_notebook("inviter@example.com", title="Invitations through nginx")
    share = f"/n/{owner['notebook_id']}/share"
    status, _, body = post_form(
        port, share, owner["cookie"], {"action": "invite", "emails": "dana@example.com", "role": "viewer"}
    )
    assert status == 302, body[:2000]  # a browser's own Origin passes the CSRF check
    sent = "".join(p.read_text() for p in (stack.tmp / "mail").glob("*"))
    link = re.search(r"http://\S+/invite/[\w-]+", sent).group(0)
    assert link.startswith(f"http://127.0.0.1:{port}/invite/"), sent
    token = link.rsplit("/", 1)[1]
    get(port, f"/invite/{token}")  # followed to the token-free /invite/ (this client keeps no session)
    log = (run_dir / "access.log").read_text()
    assert "/invite/<token>" in log
    assert token not in log


def test_the_workers_count_access_requests_together(proxied):
    """Rate limits hold across workers: each worker alone would let all of these through."""
    from notebooks.requests import REQUESTS_PER_HOUR

    stack, _, _ = proxied
    owner = stack.user_with_notebook("limits@example.com", title="Rate limits")
    asker = stack.user_with_notebook("asker@example.com", title="Own")
    workers = list(stack.workers)
    statuses = []
    for i in range(REQUESTS_PER_HOUR + 1):
        status, _, _ = post_form(
            workers[i % len(workers)],
            f"/n/{asker['notebook_id']}/share",  # a page of one's own, for the CSRF token
            asker["cookie"],
            {"role": "editor"},
            post_to=f"/n/{owner['notebook_id']}/request-access",
            Accept="application/json",
        )
        statuses.append(status)
    assert statuses == [200] * REQUESTS_PER_HOUR + [429]


def test_a_client_cannot_choose_the_address_its_limits_are_counted_by(proxied):
    """nginx tells the workers the address it saw, not one the client wrote into X-Forwarded-For:
    rotating that header would otherwise undo every per-address limit."""
    from notebooks.links import LINK_GUESSES_PER_IP

    _, port, _ = proxied
    answers = [
        get(port, f"/s/not-a-token-{i}", **{"X-Forwarded-For": f"203.0.113.{i}"})
        for i in range(LINK_GUESSES_PER_IP + 1)
    ]
    assert all(b"Too many invalid links" not in body for _, _, body in answers[:-1])
    assert b"Too many invalid links" in answers[-1][2], answers[-1]


def test_a_worker_serving_notebooks_stays_healthy(proxied):
    """/healthz's channel-layer check must not wait behind the worker's own cross-worker reader."""
    stack, port, _ = proxied
    owner = stack.user_with_notebook("healthy@example.com", title="Health")

    async def scenario():
        clients = [await open_client(w, owner["notebook_id"], owner["cookie"]) for w in stack.workers]
        answers = [get(worker, "/healthz") for worker in stack.workers] + [get(port, "/healthz")]
        for client in clients:
            await client.ws.close()
        return answers

    answers = asyncio.run(scenario())
    assert [(status, body) for status, _, body in answers] == [(200, b"ok\n")] * 3
    assert [get(worker, "/healthz")[0] for worker in stack.workers] == [200, 200]  # after they left, too


def test_metrics_are_for_the_workers_scraper_not_through_the_proxy(proxied):
    stack, port, _ = proxied
    bearer = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    worker = next(iter(stack.workers))
    status, _, body = get(worker, "/metrics", **bearer)
    assert status == 200
    assert b"collab_rooms_open" in body
    assert get(port, "/metrics", **bearer)[0] == 404
