"""The repo's nginx configuration in front of two real daphne workers and a redis-server:
pages, websockets (each client on whichever worker nginx picks), the body limit, gzip."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from config.deploy import nginx_argv, nginx_conf
from tests.collab.test_workers import open_client, settle
from tests.procs import Stack, free_port, wait_for_port

pytestmark = pytest.mark.processes
LIMIT = 2 * 1024 * 1024


def start_proxy(stack: Stack, workers: int = 2, max_body: int | None = None) -> tuple[int, Path]:
    """nginx from the repo's configuration in front of `workers` new workers of `stack`; nginx is
    stopped with the stack, its directory (the caller removes it) is reachable by nginx's workers."""
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        subprocess.run(["scripts/install_nginx.sh"], check=True)
    port = free_port()
    stack.env.setdefault("SITE_URL", f"http://127.0.0.1:{port}")  # as `manage.py stack` sets it
    upstreams = [f"127.0.0.1:{stack.start_worker()}" for _ in range(workers)]
    run_dir = Path(tempfile.mkdtemp(prefix="collab-nginx-"))
    run_dir.chmod(0o755)  # nginx's workers (www-data when started as root) keep uploads here
    conf = run_dir / "nginx.conf"
    access_log = str(run_dir / "access.log")
    conf.write_text(nginx_conf(f"127.0.0.1:{port}", upstreams, run_dir, access_log, max_body=max_body))
    argv = nginx_argv(conf, run_dir)
    argv[0] = shutil.which("nginx") or "/usr/sbin/nginx"
    wait_for_port(port, stack._spawn(argv, log="nginx.log"))
    return port, run_dir


@pytest.fixture(scope="module")
def proxied():
    stack = Stack(REQUEST_MAX_BODY_BYTES=str(LIMIT), EMAIL_BACKEND="file")
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
