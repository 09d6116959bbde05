"""Kernel servers people register and the owner's choice: encrypted tokens, owner-only settings,
and kernels really starting on the chosen server (a second real Jupyter Server)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.db import connection

from kernels.bridge import BRIDGES, CELL_NOT_RUN, get_bridge
from kernels.jupyter import JupyterClient
from kernels.local_server import LocalJupyterServer
from kernels.models import KernelServer, NotebookKernel
from notebooks.models import Grant, Role
from tests.support.consumer import close_all, flushed, joined
from tests.support.http import client_for
from tests.support.kernels import add_server, outputs, post, settings_url

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def second_server() -> Iterator[LocalJupyterServer]:
    with LocalJupyterServer() as server:
        yield server


@pytest.fixture(autouse=True)
async def kernel_settings(settings, jupyter_server: LocalJupyterServer) -> AsyncIterator[None]:
    settings.JUPYTER_SERVER_URL = jupyter_server.url
    settings.JUPYTER_SERVER_TOKEN = jupyter_server.token
    settings.KERNEL_SERVER_ALLOW_HOSTS = ["127.0.0.1"]  # the second server is on loopback
    yield
    for bridge in list(BRIDGES.values()):
        await bridge.shutdown()


def everything_stored() -> str:
    """Every row of every table, as text: what someone with a copy of the database sees."""
    dump = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            dump.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(dump)


def test_it_stores_the_token_encrypted_and_never_shows_it(notebook, alice, second_server):
    owner = client_for(alice)
    response = add_server(owner, notebook, second_server.url, second_server.token)
    assert response.status_code == 302
    server = KernelServer.objects.get(owner=alice)
    assert server.token() == second_server.token
    assert second_server.token not in server.token_encrypted
    assert second_server.token not in everything_stored()

    page = owner.get(settings_url(notebook), follow=True)
    assert page.status_code == 200
    html = page.content.decode()
    assert "My box" in html
    assert second_server.token not in html
    assert f":{second_server.port}" not in html  # only the host name is shown
    assert "python3" in html  # kernelspecs are listed live... from the default server until chosen


def test_only_the_owner_may_see_or_change_kernel_settings(notebook, alice, bob, charlie, second_server):
    Grant.objects.create(notebook=notebook, user=bob, role=Role.RUNNER)
    runner = client_for(bob)
    assert runner.get(settings_url(notebook)).status_code == 403
    assert add_server(runner, notebook, second_server.url, second_server.token).status_code == 403
    assert client_for(charlie).get(settings_url(notebook)).status_code == 403
    assert not KernelServer.objects.exists()
    # an owner cannot point their notebook at someone else's server
    bobs = KernelServer(owner=bob, name="Bob's", url=second_server.url)
    bobs.set_token(second_server.token)
    bobs.save()
    owner = client_for(alice)
    owner.post(settings_url(notebook), {"action": "choose", "server_id": str(bobs.pk), "kernelspec": ""})
    assert not NotebookKernel.objects.filter(notebook=notebook, server=bobs).exists()
    assert "Bob&#x27;s" not in owner.get(settings_url(notebook)).content.decode()


def test_servers_are_registered_only_on_allowed_hosts(notebook, alice, second_server, settings, dns):
    settings.KERNEL_SERVER_HOSTS = ["*.kernels.example.com", "jupyter.example.org"]
    dns.names.update({"gpu.kernels.example.com": ["8.8.8.8"], "jupyter.example.org": ["1.1.1.1"]})
    owner = client_for(alice)
    for url in (second_server.url, "http://169.254.169.254/", "https://kernels.example.com.evil.net/"):
        add_server(owner, notebook, url, "t")
        shown = owner.get(settings_url(notebook)).content.decode()  # the form again, with the reason
        assert "This site does not run kernels on" in shown
    assert not KernelServer.objects.exists()
    for url in ("https://gpu.kernels.example.com", "https://jupyter.example.org:8888"):
        add_server(owner, notebook, url, "t", name=url[8:20])
    assert KernelServer.objects.count() == 2

    # a server registered before the list changed: no kernel starts there, and the cell says why
    settings.KERNEL_SERVER_HOSTS = ["*"]
    add_server(owner, notebook, second_server.url, second_server.token, name="Old")
    old = KernelServer.objects.get(name="Old")
    owner.post(settings_url(notebook), {"action": "choose", "server_id": str(old.pk), "kernelspec": ""})
    settings.KERNEL_SERVER_HOSTS = ["jupyter.example.org"]
    assert "This site does not run kernels on 127.0.0.1" in owner.get(settings_url(notebook)).content.decode()


async def test_a_refused_server_fails_the_run_with_the_reason(notebook, alice, second_server, settings):
    """The reason is in the kernel status, for those who may run; the cell only says it failed."""
    owner = await sync_to_async(client_for)(alice)
    await sync_to_async(add_server)(owner, notebook, second_server.url, second_server.token)
    server = await database_sync_to_async(KernelServer.objects.get)(owner=alice)
    await sync_to_async(owner.post)(settings_url(notebook), {"action": "choose", "server_id": str(server.pk)})
    settings.KERNEL_SERVER_HOSTS = ["jupyter.example.org"]
    a = await joined(notebook.pk, alice, query="ext=1")
    a.text().insert(0, "print(1)")
    await flushed(a)
    await a.pump()
    status, _ = await post(notebook.pk, alice, "run", {"cell_ids": [a.cells[0]["id"]]})
    assert status == 202
    await get_bridge(notebook.pk).wait_idle()
    await a.pump()
    [error] = outputs(a)
    assert error["evalue"] == CELL_NOT_RUN
    assert "does not run kernels on 127.0.0.1" in a.kernel["message"]
    await close_all(a)


async def test_the_kernel_starts_on_the_chosen_server_with_the_chosen_kernelspec(
    notebook, alice, second_server
):
    owner = await sync_to_async(client_for)(alice)
    await sync_to_async(add_server)(owner, notebook, second_server.url, second_server.token)
    server = await database_sync_to_async(KernelServer.objects.get)(owner=alice)
    url = settings_url(notebook)
    choose = sync_to_async(owner.post)
    await choose(url, {"action": "choose", "server_id": str(server.pk), "kernelspec": ""})
    await choose(url, {"action": "choose", "server_id": str(server.pk), "kernelspec": "python3"})
    choice = await database_sync_to_async(NotebookKernel.objects.get)(notebook=notebook)
    assert (choice.server_id, choice.kernelspec) == (server.pk, "python3")

    async with JupyterClient(second_server.url, second_server.token) as jupyter:
        before = {k["id"] for k in await jupyter.list_kernels()}
        a = await joined(notebook.pk, alice)
        a.text().insert(0, "import os; print(os.getpid() > 0)")
        await flushed(a)
        await a.pump()
        status, _body = await post(notebook.pk, alice, "run", {"cell_ids": [a.cells[0]["id"]]})
        assert status == 202
        bridge = get_bridge(notebook.pk)
        await bridge.wait_idle()
        await a.pump()
        assert outputs(a) == [{"output_type": "stream", "name": "stdout", "text": "True\n"}]
        started = [k for k in await jupyter.list_kernels() if k["id"] not in before]
        assert [k["id"] for k in started] == [bridge.kernel_id]
        assert started[0]["name"] == "python3"
        # nothing about the server reaches the people in the notebook
        state = json.dumps(bridge.info())
        assert second_server.token not in state
        assert str(second_server.port) not in state
        assert bridge.kernel_id not in state
        await close_all(a)


async def test_a_server_registered_by_name_runs_on_the_address_checked_for_it(
    notebook, alice, second_server, settings, dns
):
    """REST and the kernel websocket both connect to the address the name was checked to have,
    with the name in the Host header (`kernels.netguard`)."""
    settings.KERNEL_SERVER_ALLOW_HOSTS = ["localhost"]
    owner = await sync_to_async(client_for)(alice)
    url = f"http://localhost:{second_server.port}"
    await sync_to_async(add_server)(owner, notebook, url, second_server.token)
    server = await database_sync_to_async(KernelServer.objects.get)(owner=alice)
    await sync_to_async(owner.post)(settings_url(notebook), {"action": "choose", "server_id": str(server.pk)})
    dns.calls.clear()
    a = await joined(notebook.pk, alice)
    a.text().insert(0, "print(6 * 7)")
    await flushed(a)
    await a.pump()
    status, _ = await post(notebook.pk, alice, "run", {"cell_ids": [a.cells[0]["id"]]})
    assert status == 202
    await get_bridge(notebook.pk).wait_idle()
    await a.pump()
    assert outputs(a) == [{"output_type": "stream", "name": "stdout", "text": "42\n"}]
    # checked when the kernel starts, then for the REST connection and for the websocket
    assert dns.calls.count(("localhost", second_server.port)) >= 3
    await close_all(a)
