"""Registering a kernel server is no way into the internal network (`kernels.netguard`).

No test here sends traffic beyond loopback: names resolve through the `dns` stub, refusals are
checked before any connection (every `socket.connect` of the process is recorded by an audit
hook), and the servers that do answer are fakes on 127.0.0.1.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async

from kernels.bridge import BRIDGES, CELL_NOT_RUN, get_bridge
from kernels.jupyter import JupyterClient, KernelServerError
from kernels.models import KernelServer, NotebookKernel
from kernels.servers import host_refusal
from notebooks.models import Grant, Role
from tests.support.consumer import close_all, flushed, joined
from tests.support.http import client_for
from tests.support.kernels import add_server, outputs, post, settings_url

SECRET = "s3cret-from-the-internal-service"
SPECS = {"default": "python3", "kernelspecs": {"python3": {"spec": {"display_name": "Python 3"}}}}

_connects: list[tuple] = []
_recording = threading.Event()


def _audit(event: str, args: tuple) -> None:
    if event == "socket.connect" and _recording.is_set():
        _connects.append(tuple(args[1]) if isinstance(args[1], tuple) else (args[1],))


sys.addaudithook(_audit)  # hooks cannot be removed; it records only while `connects` is in use


@pytest.fixture
def connects() -> Iterator[list[tuple]]:
    """Every address this process connects a socket to during the test."""
    _connects.clear()
    _recording.set()
    yield _connects
    _recording.clear()


def never_reached(connects: list[tuple], *addresses: str) -> bool:
    return not [a for a in connects if a[0] in addresses]


def unexpected(connects: list[tuple]) -> list[tuple]:
    """Connections other than to the default server (port 1: refused at once) and the database."""
    from django.conf import settings

    known = {1, int(settings.DATABASES["default"].get("PORT") or 5432)}
    return [a for a in connects if not (a[0] in ("127.0.0.1", "::1") and a[1] in known)]


class FakeKernelServer:
    """A kernel server on loopback answering what the test sets in `routes`; unknown paths get
    404 with the secret in the body. `requests` records (method, path, Host header)."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], tuple[int, bytes, dict[str, str]]] = {}
        self.requests: list[tuple[str, str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                fake.requests.append((self.command, self.path, self.headers.get("Host", "")))
                status, body, headers = fake.routes.get(
                    (self.command, self.path), (404, SECRET.encode(), {"Content-Type": "text/plain"})
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def answer(self, method: str, path: str, status: int, body: bytes | str | dict, **headers: str) -> None:
        if isinstance(body, dict):
            body, headers = json.dumps(body), {"Content-Type": "application/json", **headers}
        self.routes[(method, path)] = (status, body.encode() if isinstance(body, str) else body, headers)


@pytest.fixture
def fake_server() -> Iterator[FakeKernelServer]:
    server = FakeKernelServer()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture(autouse=True)
def guard_settings(settings) -> None:
    settings.KERNEL_SERVER_HOSTS = ["*"]
    settings.KERNEL_SERVER_ALLOW_HOSTS = []
    settings.JUPYTER_SERVER_URL = "http://127.0.0.1:1"  # the default server: never contacted here
    settings.JUPYTER_SERVER_TOKEN = ""


@pytest.fixture
async def bridges() -> AsyncIterator[None]:
    yield
    for bridge in list(BRIDGES.values()):
        await bridge.shutdown()


# which addresses ---------------------------------------------------------------------------

REFUSED = {
    "127.0.0.1": "loopback",
    "127.9.9.9": "loopback",
    "[::1]": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "169.254.169.254": "cloud metadata",
    "[fd00:ec2::254]": "cloud metadata",
    "100.100.100.200": "cloud metadata",
    "169.254.10.1": "link-local",
    "[fe80::1]": "link-local",
    "[fd12:3456::1]": "unique-local",
    "224.0.0.1": "multicast",
    "[ff02::1]": "multicast",
    "0.0.0.0": "unspecified",
    "[::]": "unspecified",
    "240.0.0.1": "private",  # reserved (Python counts it private too)
    "100.64.0.1": "non-public",  # shared (carrier-grade NAT)
    "[::ffff:127.0.0.1]": "loopback",  # IPv4-mapped IPv6
    "[::ffff:169.254.169.254]": "cloud metadata",
    "[::ffff:10.0.0.1]": "private",
    "[2002:7f00:1::]": "loopback",  # 6to4 of 127.0.0.1
    "[64:ff9b::a9fe:a9fe]": "cloud metadata",  # NAT64 of 169.254.169.254
}


@pytest.mark.parametrize(("host", "kind"), REFUSED.items())
def test_it_refuses_each_internal_address_class_without_connecting(host, kind, connects, dns):
    refusal = host_refusal(f"http://{host}:8888")
    assert refusal.startswith(f"This site does not run kernels on {host.strip('[]')}: it is a")
    assert f" {kind} address" in refusal
    assert connects == []
    assert dns.calls == []  # an address is not looked up


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.7", "169.254.169.254", "fe80::1", "::ffff:7f00:1"])
def test_a_name_resolving_to_an_internal_address_is_refused(address, connects, dns):
    dns.names["kernels.example.com"] = ["8.8.8.8", address]  # one bad answer is enough
    refusal = host_refusal("https://kernels.example.com")
    assert refusal.startswith("This site does not run kernels on kernels.example.com: it resolves to")
    assert dns.calls == [("kernels.example.com", 443)]
    assert connects == []


def test_public_addresses_and_allowed_hosts_pass(settings, dns):
    dns.names["kernels.example.com"] = ["8.8.8.8", "2001:4860:4860::8888"]
    assert host_refusal("https://kernels.example.com/user/alice") == ""
    assert host_refusal("http://1.1.1.1:8888") == ""
    assert host_refusal("http://[2606:4700:4700::1111]:8888") == ""
    dns.names["gateway.internal"] = ["10.0.0.5"]
    assert "private address" in host_refusal("http://gateway.internal:8888")
    settings.KERNEL_SERVER_ALLOW_HOSTS = ["127.0.0.1", "gateway.internal"]
    assert host_refusal("http://gateway.internal:8888") == ""
    assert host_refusal("http://127.0.0.1:8888") == ""
    assert "loopback" in host_refusal("http://[::1]:8888")
    # the deployment's default server, by its exact origin only
    settings.KERNEL_SERVER_ALLOW_HOSTS = []
    assert host_refusal("http://127.0.0.1:1/") == ""
    assert "loopback" in host_refusal("http://127.0.0.1:6379")
    assert "loopback" in host_refusal("https://127.0.0.1:1")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://8.8.8.8:6379/?", "without a query"),  # the app's path would land in the query
        ("https://8.8.8.8/api/x?a=", "without a query"),
        ("http://8.8.8.8/#", "or fragment"),
        ("http://admin:pw@8.8.8.8/", "without a user name"),
        ("gopher://8.8.8.8:6379/_FLUSHALL", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("http://8.8.8.8/a b", "path may hold only"),
        ("http://8.8.8.8:99999", "not a valid"),
        ("http://8.8.8.8/" + "x" * 500, "longer than 500"),
        ("http://2130706433:8888", "could not be resolved"),  # stub DNS: a real resolver says 127.0.0.1
        ("http://127.0.0.1:5432", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "cloud metadata"),
    ],
)
def test_the_form_refuses_urls_the_app_may_not_use(notebook, alice, url, says, connects):
    owner = client_for(alice)
    add_server(owner, notebook, url, "t")
    page = owner.get(settings_url(notebook)).content.decode()
    assert says in page
    assert not KernelServer.objects.exists()
    assert unexpected(connects) == []


@pytest.mark.django_db
def test_the_form_stores_a_normalised_url_and_limits_its_fields(notebook, alice, connects):
    owner = client_for(alice)
    add_server(owner, notebook, " HTTP://8.8.8.8:8888//user/./alice/../alice/ ", "t")
    assert KernelServer.objects.get().url == "http://8.8.8.8:8888/user/alice"
    add_server(owner, notebook, "http://8.8.8.8", "t", name="n" * 101)
    assert "A name may have up to 100 characters" in owner.get(settings_url(notebook)).content.decode()
    add_server(owner, notebook, "http://8.8.8.8", "t" * 4097, name="long token")
    assert "a token up to 4096" in owner.get(settings_url(notebook)).content.decode()
    assert KernelServer.objects.count() == 1
    assert unexpected(connects) == []


# at connect time -------------------------------------------------------------------------


async def test_a_dns_change_between_check_and_connect_is_caught(fake_server, connects, dns):
    url = f"http://kernels.example.com:{fake_server.port}"
    dns.names["kernels.example.com"] = ["8.8.8.8"]
    assert await sync_to_async(host_refusal)(url) == ""  # registered, chosen: all checks pass
    dns.names["kernels.example.com"] = ["127.0.0.1"]  # ...then the name is pointed inside
    async with JupyterClient(url, "t", pinned=True) as client:
        with pytest.raises(KernelServerError, match="resolves to a loopback address"):
            await client.kernelspecs()
        with pytest.raises(KernelServerError, match="resolves to a loopback address"):
            await client.channels("some-kernel").open()
    assert fake_server.requests == []
    assert never_reached(connects, "127.0.0.1", "8.8.8.8")


async def test_a_pinned_connection_goes_to_the_checked_address_with_the_hosts_name(
    fake_server, connects, dns, settings
):
    settings.KERNEL_SERVER_ALLOW_HOSTS = ["kernels.example.test"]
    dns.names["kernels.example.test"] = ["127.0.0.1"]
    fake_server.answer("GET", "/base/api/kernelspecs", 200, SPECS)
    url = f"http://kernels.example.test:{fake_server.port}/base"
    async with JupyterClient(url, "t", pinned=True) as client:
        assert await client.kernelspecs() == SPECS
    assert fake_server.requests == [
        ("GET", "/base/api/kernelspecs", f"kernels.example.test:{fake_server.port}")
    ]
    assert dns.calls == [("kernels.example.test", fake_server.port)]
    assert ("127.0.0.1", fake_server.port) in connects  # (the recorder does see connections)


async def test_a_redirect_is_not_followed(fake_server, connects, settings):
    settings.KERNEL_SERVER_ALLOW_HOSTS = ["127.0.0.1"]
    fake_server.answer("GET", "/api/kernelspecs", 302, "", Location="http://169.254.169.254/latest/")
    async with JupyterClient(fake_server.url, "t", pinned=True) as client:
        with pytest.raises(KernelServerError, match="answered 302 when listing kernelspecs"):
            await client.kernelspecs()
    assert never_reached(connects, "169.254.169.254")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stored", ["http://10.0.0.7:8888", "http://169.254.169.254", "http://[fe80::1]:80"])
async def test_a_stored_internal_server_is_refused_before_connecting(
    notebook, alice, stored, connects, bridges
):
    """Registered before the rules (or written straight into the database)."""
    server = await database_sync_to_async(KernelServer.objects.create)(owner=alice, name="Old", url=stored)
    await database_sync_to_async(NotebookKernel.objects.create)(notebook=notebook, server=server)
    owner = await sync_to_async(client_for)(alice)
    page = await sync_to_async(owner.get)(settings_url(notebook))
    assert "This site does not run kernels on" in page.content.decode()
    a = await joined(notebook.pk, alice, query="ext=1")
    a.text().insert(0, "print(1)")
    await flushed(a)
    await a.pump()
    status, _ = await post(notebook.pk, alice, "run", {"cell_ids": [a.cells[0]["id"]]})
    assert status == 202
    await get_bridge(notebook.pk).wait_idle()
    await a.pump()
    assert [o["evalue"] for o in outputs(a)] == [CELL_NOT_RUN]
    assert "This site does not run kernels on" in a.kernel["message"]
    assert never_reached(connects, "10.0.0.7", "169.254.169.254", "fe80::1")
    await close_all(a)


# what comes back -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_an_error_body_reaches_nobody(notebook, alice, bob, fake_server, settings, bridges):
    settings.KERNEL_SERVER_ALLOW_HOSTS = ["127.0.0.1"]
    fake_server.answer("GET", "/api/kernelspecs", 503, f"<h1>{SECRET}</h1>")
    fake_server.answer("POST", "/api/kernels", 500, json.dumps({"message": SECRET, "traceback": SECRET}))
    await database_sync_to_async(Grant.objects.create)(notebook=notebook, user=bob, role=Role.VIEWER)
    owner = await sync_to_async(client_for)(alice)
    await sync_to_async(add_server)(owner, notebook, fake_server.url, "t")
    server = await database_sync_to_async(KernelServer.objects.get)(owner=alice)
    choose = {"action": "choose", "server_id": str(server.pk), "kernelspec": ""}
    await sync_to_async(owner.post)(settings_url(notebook), choose)

    page = (await sync_to_async(owner.get)(settings_url(notebook))).content.decode()
    assert "The kernel server answered 503 when listing kernelspecs." in page
    assert SECRET not in page

    a = await joined(notebook.pk, alice, query="ext=1")
    b = await joined(notebook.pk, bob, query="ext=1")
    a.text().insert(0, "print(1)")
    await flushed(a)
    await a.pump()
    status, _ = await post(notebook.pk, alice, "run", {"cell_ids": [a.cells[0]["id"]]})
    assert status == 202
    await get_bridge(notebook.pk).wait_idle()
    await a.pump()
    await b.pump()
    assert a.kernel["message"] == "Could not run: The kernel server answered 500 when starting a kernel."
    assert b.kernel["status"] == a.kernel["status"]
    assert b.kernel["message"] == ""  # a viewer may not run: no reasons
    for seen in (outputs(a), outputs(b), a.kernel, b.kernel, get_bridge(notebook.pk).info()):
        assert SECRET not in json.dumps(seen)
    assert [o["evalue"] for o in outputs(b)] == [CELL_NOT_RUN]
    status, body = await post(notebook.pk, alice, "status")
    assert SECRET not in json.dumps(body)
    await close_all(a, b)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("<html>It works!</html>", "sent a reply that is not JSON when listing kernelspecs"),
        ("", "sent an empty reply when listing kernelspecs"),
        ("[1, 2]", "sent a reply of the wrong shape when listing kernelspecs"),
        ('{"kernelspecs": ["python3"]}', "sent a reply of the wrong shape"),
        (
            json.dumps({**SPECS, "pad": "x" * 3000}),
            "sent a reply larger than 2,000 bytes when listing kernelspecs",
        ),
    ],
)
def test_a_reply_it_cannot_use_is_a_message_on_the_settings_page(
    notebook, alice, fake_server, settings, body, says
):
    settings.KERNEL_SERVER_ALLOW_HOSTS = ["127.0.0.1"]
    settings.KERNEL_SERVER_MAX_REPLY_BYTES = 2000
    fake_server.answer("GET", "/api/kernelspecs", 200, body, **{"Content-Type": "application/json"})
    owner = client_for(alice)
    add_server(owner, notebook, fake_server.url, "t")
    server = KernelServer.objects.get(owner=alice)
    owner.post(settings_url(notebook), {"action": "choose", "server_id": str(server.pk), "kernelspec": ""})
    page = owner.get(settings_url(notebook))
    assert page.status_code == 200
    assert says in page.content.decode()
