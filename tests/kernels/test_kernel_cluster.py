"""Two real daphne workers + redis + one real Jupyter Server: one kernel per notebook, whichever
worker a request reaches (kernels.cluster)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from kernels.local_server import LocalJupyterServer
from tests.support.kernel_http import Browserish, texts, write_code_notebook
from tests.support.processes import Stack
from tests.support.waiting import eventually

pytestmark = pytest.mark.processes

CELLS = [
    ("set", "x = 1"),
    ("use", "print(x)"),
    ("slow", "import time\nfor i in range(300):\n    time.sleep(0.1)"),
    ("ask", 'print("got", input("Value? "))'),
    ("count", "import time\nfor i in range(50):\n    print(f'line {i}', flush=True)\n    time.sleep(0.1)"),
    ("short", "import time\nfor i in range(15):\n    print(f'step {i}', flush=True)\n    time.sleep(0.1)"),
]


@pytest.fixture(scope="module")
def stack(jupyter_server: LocalJupyterServer, tmp_path_factory) -> Iterator[Stack]:
    stack = Stack(
        redis=True,
        JUPYTER_SERVER_URL=jupyter_server.url,
        JUPYTER_SERVER_TOKEN=jupyter_server.token,
        KERNEL_LEASE_TTL="3",
        KERNEL_LEASE_RENEW="0.5",
        KERNEL_FORWARD_TIMEOUT="5",
    )
    try:
        stack.ports = [stack.start_worker(), stack.start_worker()]
        path = write_code_notebook(tmp_path_factory.mktemp("nb") / "cluster.ipynb", dict(CELLS))
        stack.alice = stack.user_with_notebook("alice@example.com", title="Cluster", ipynb=str(path))
        yield stack
    finally:
        stack.close()


@pytest.fixture(scope="module")
def a_and_b(stack: Stack) -> tuple[Browserish, Browserish]:
    nb = stack.alice["notebook_id"]
    return Browserish(stack.ports[0], stack.alice["cookie"], nb), Browserish(
        stack.ports[1], stack.alice["cookie"], nb
    )


def test_runs_posted_to_two_workers_share_one_kernel_in_order(stack, a_and_b, jupyter_server):
    a, b = a_and_b
    before = len(httpx.get(f"{jupyter_server.url}/api/kernels", headers=_auth(jupyter_server)).json())
    assert a.post("run", {"cell_ids": ["set"]}).status_code == 202
    assert b.post("run", {"cell_ids": ["use"]}).json() == {"queued": ["use"]}
    eventually(lambda: texts(a.cell("use")) == "1\n", timeout=30, what="print(x) to print 1")
    assert a.cell("use")["execution_count"] == 2
    after = httpx.get(f"{jupyter_server.url}/api/kernels", headers=_auth(jupyter_server)).json()
    assert len(after) == before + 1  # one kernel, not one per worker
    lease = stack.django(
        "import json\nfrom kernels.models import KernelLease\n"
        "print(json.dumps(list(KernelLease.objects.values_list('worker', flat=True))))"
    )
    assert len(lease) == 1


def test_status_interrupt_and_input_work_from_the_other_worker(stack, a_and_b):
    a, b = a_and_b
    assert a.post("run", {"cell_ids": ["slow"]}).status_code == 202
    eventually(lambda: b.status()["running"] == "slow", timeout=30, what="the slow cell to run (seen from B)")
    assert b.post("interrupt").status_code == 200
    eventually(lambda: a.status()["running"] is None, timeout=30, what="the interrupt")
    # the download reads the database, whose write follows the run's end by a few milliseconds
    eventually(lambda: "KeyboardInterrupt" in json.dumps(b.cell("slow")["outputs"]), what="its error")

    assert b.post("run", {"cell_ids": ["ask"]}).status_code == 202
    asked = eventually(lambda: a.status()["input"], timeout=30, what="the input request")
    assert asked == {
        "cell_id": "ask",
        "prompt": "Value? ",
        "password": False,
        "for_user": f"u:{stack.alice['user_id']}",
    }
    assert a.post("input", {"value": "42"}).status_code == 200
    eventually(lambda: "got 42" in texts(b.cell("ask")), timeout=30, what="the answer")

    assert b.post("shutdown").status_code == 200
    assert a.status()["status"] == "not started"


def lease() -> str:
    return (
        "import json\nfrom kernels.models import KernelLease\n"
        "print(json.dumps(list(KernelLease.objects.values('worker', 'kernel_id'))))"
    )


def test_a_killed_driver_is_replaced_and_its_run_goes_on(stack, a_and_b):
    a, b = a_and_b
    assert a.post("run", {"cell_ids": ["set"]}).status_code == 202
    eventually(lambda: a.status()["status"] == "idle", timeout=30, what="a kernel")
    # B knows the notebook's kernel (and sweeps for orphans); "idle" once the run's status settles
    eventually(lambda: b.status()["status"] == "idle", timeout=10, what="B to see the kernel idle")
    assert a.post("run", {"cell_ids": ["count"]}).status_code == 202
    eventually(lambda: "line 5" in texts(b.cell("count")), timeout=30, what="the run to be under way")
    [before] = stack.django(lease())
    assert before["kernel_id"]

    stack.kill_worker(stack.ports[0])
    # the lease (TTL 3 s) runs out; B's sweep takes the kernel over and the run goes on in the cell
    out = eventually(
        lambda: "line 49" in texts(b.cell("count")) and texts(b.cell("count")),
        timeout=30,
        what="B to take the run over",
    )
    assert "line 5\n" in out
    assert out.count("line 49") == 1
    [after] = stack.django(lease())
    assert after["kernel_id"] == before["kernel_id"]
    assert after["worker"] != before["worker"]
    eventually(lambda: b.cell("count").get("execution_count") is not None, timeout=30, what="the run's end")

    # the same kernel, variables kept
    assert b.post("run", {"cell_ids": ["use"]}).status_code == 202
    eventually(lambda: texts(b.cell("use")) == "1\n", timeout=30, what="x from before the kill")


def _auth(server: LocalJupyterServer) -> dict[str, str]:
    return {"Authorization": f"token {server.token}"}


def test_a_worker_that_only_served_a_page_takes_over_when_the_driver_dies(stack, a_and_b):
    # After the test above, worker A is dead and B drives the kernel.
    _, b = a_and_b
    c_port = stack.start_worker()
    c = httpx.Client(base_url=f"http://127.0.0.1:{c_port}", timeout=20)
    assert c.get("/accounts/login/").status_code == 200  # C has served nothing else
    assert b.post("run", {"cell_ids": ["count"]}).status_code == 202
    eventually(lambda: "line 5" in texts(b.cell("count")), timeout=30, what="the run to be under way on B")
    [before] = stack.django(lease())

    stack.kill_worker(stack.ports[1])  # nobody but C is left
    reader = Browserish(c_port, stack.alice["cookie"], stack.alice["notebook_id"])
    # Reading the download serves no kernel request: C takes over from its sweep alone.
    out = eventually(
        lambda: "line 49" in texts(reader.cell("count")) and texts(reader.cell("count")),
        timeout=30,
        what="C to take the run over",
    )
    assert out.count("line 49") == 1
    [after] = stack.django(lease())
    assert after["kernel_id"] == before["kernel_id"]
    assert after["worker"] not in (before["worker"], None)


def test_a_run_that_ends_while_no_worker_drives_it_keeps_its_output_and_gets_no_error(stack):
    # After the tests above, one worker drives the kernel. A new worker D joins; the driver dies
    # while a short run goes on, the run ends before D's takeover (the server buffers its end),
    # and D's takeover replays it: the cell must show the whole output and no error.
    d_port = stack.start_worker()
    d = Browserish(d_port, stack.alice["cookie"], stack.alice["notebook_id"])
    assert d.post("run", {"cell_ids": ["short"]}).status_code == 202
    eventually(lambda: "step 2" in texts(d.cell("short")), timeout=30, what="the run to be under way")
    for port in [p for p in stack.workers if p != d_port]:
        stack.kill_worker(port)
    eventually(
        lambda: "step 14" in texts(d.cell("short")) or "error" in json.dumps(d.cell("short")["outputs"]),
        timeout=30,
        what="D to take the run over and show its end",
    )
    eventually(lambda: d.status()["running"] is None, timeout=10, what="the run to be over")
    cell = d.cell("short")
    assert "step 14" in texts(cell), json.dumps(cell)
    assert "run it again" not in json.dumps(cell["outputs"])
    assert not any(o.get("output_type") == "error" for o in cell["outputs"])
