"""A notebook's disk on the sandboxed local Jupyter Server: its home's quota, a /tmp of a fixed
size, no instant allocation; and what the notebook says when its kernel is stopped for the quota.

The server counts a running kernel's home every `QUOTA_INTERVAL` s; a kernel that crossed
`QUOTA_MB`, or grows while over it, is stopped, and the server restarts it in the same home."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from kernels.bridge import get_bridge
from kernels.diskuse import MAX_DEPTH, QUOTA_REASON, HomeWatch, Usage, measure, processes_of
from kernels.execution import Finished, KernelLost
from kernels.jupyter import JupyterClient, KernelChannels
from kernels.local_server import LocalJupyterServer, Sandbox
from tests.support.consumer import close_all, flushed, joined
from tests.support.kernels import add_code_cell, outputs, run_code

pytestmark = pytest.mark.processes

QUOTA_MB = 20
QUOTA_INTERVAL = 0.2
TMP_MB = 16

# 5 MiB files, one every 20 ms (at most 250 MiB/s: a count every 0.2 s sees the home grow by
# 50 MiB at most), 500 MiB if nothing stops it
WRITE_FILES = """
import os, time
os.makedirs("data", exist_ok=True)
chunk = b"x" * (5 << 20)
for i in range(100):
    with open(f"data/{i}.bin", "wb") as f:
        f.write(chunk)
    time.sleep(0.02)
print("wrote 500 MiB")
"""
# a cell lasting five counts (the kernel would be stopped meanwhile if it were stopped at all)
FIVE_COUNTS = f"import os, time; time.sleep({5 * QUOTA_INTERVAL})\n"


@pytest.fixture(scope="module")
def quota_server() -> Iterator[LocalJupyterServer]:
    sandbox = Sandbox(home_quota_mb=QUOTA_MB, quota_interval=QUOTA_INTERVAL, tmp_mb=TMP_MB)
    with LocalJupyterServer(sandbox=sandbox) as server:
        yield server


@pytest.fixture
async def client(quota_server: LocalJupyterServer) -> AsyncIterator[JupyterClient]:
    async with JupyterClient(quota_server.url, quota_server.token) as client:
        yield client


async def back(channels: KernelChannels) -> None:
    """Wait until the kernel the server restarts answers again (a shutdown asked for while the
    server restarts a kernel fails with 500 and leaves the kernel running: jupyter_client 8.10)."""
    out, event = await run_code(channels, "print('back')")
    assert (out, type(event)) == ("back\n", Finished)


def megabytes(path) -> float:
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*")) / (1 << 20)


async def test_a_kernel_writing_past_its_home_quota_is_stopped_and_may_clean_up_after(client, quota_server):
    kernel = (await client.start_kernel("python3", path="quota-writer"))["id"]
    home = quota_server.root_dir / "quota-writer"
    try:
        async with client.channels(kernel) as channels:
            started = time.monotonic()
            out, event = await run_code(channels, WRITE_FILES, timeout=60)
            took = time.monotonic() - started
            print(f"stopped with {megabytes(home):.0f} MiB in the home, {took:.2f} s after the cell began")
            assert isinstance(event, KernelLost), out
            assert megabytes(home) < 500
            assert (await client.get_kernel(kernel))["reason"] == QUOTA_REASON

            # The server restarted it in the same home, still over the quota: it runs on while
            # the home does not grow, and may delete files.
            out, event = await run_code(channels, FIVE_COUNTS + "print(len(os.listdir('data')))")
            assert isinstance(event, Finished), out
            assert 4 <= int(out) < 100
            out, event = await run_code(channels, "import shutil; shutil.rmtree('data'); print('deleted')")
            assert (out, type(event)) == ("deleted\n", Finished)
            out, event = await run_code(channels, WRITE_FILES.replace("range(100)", "range(2)"), timeout=60)
            assert (out, type(event)) == ("wrote 500 MiB\n", Finished)  # 10 MiB, under the quota

            # A kernel dying of anything else is not said to be over the quota.
            _, event = await run_code(channels, "import os; os._exit(1)")
            assert isinstance(event, KernelLost)
            assert "reason" not in (await client.get_kernel(kernel))
            await back(channels)
    finally:
        await client.shutdown_kernel(kernel)


async def test_a_new_kernel_starts_in_a_home_over_its_quota(client, quota_server):
    home = quota_server.root_dir / "quota-full"
    home.mkdir(mode=0o700)
    (home / "big.bin").write_bytes(b"x" * ((QUOTA_MB + 10) << 20))
    kernel = (await client.start_kernel("python3", path="quota-full"))["id"]
    try:
        async with client.channels(kernel) as channels:
            out, event = await run_code(channels, FIVE_COUNTS + "os.remove('big.bin'); print('ok')")
            assert (out, type(event)) == ("ok\n", Finished)
    finally:
        await client.shutdown_kernel(kernel)


async def test_files_a_kernel_deleted_but_holds_open_count(client):
    code = """
import os, time
f = open("hidden.bin", "wb")
os.unlink("hidden.bin")
for i in range(100):
    f.write(b"x" * (5 << 20))
    f.flush()
    time.sleep(0.02)
print("wrote 500 MiB")
"""
    kernel = (await client.start_kernel("python3", path="quota-hidden"))["id"]
    try:
        async with client.channels(kernel) as channels:
            out, event = await run_code(channels, code, timeout=60)
            assert isinstance(event, KernelLost), out
            await back(channels)
    finally:
        await client.shutdown_kernel(kernel)


async def test_tmp_is_full_at_its_size_and_disk_space_is_not_reserved_at_once(client):
    code = f"""
import ctypes, errno, os
try:
    with open("/tmp/fill", "wb") as f:
        for _ in range({TMP_MB * 4}):
            f.write(b"x" * (1 << 20))
    print("tmp: no limit")
except OSError as exc:
    print("tmp:", exc.errno)
os.remove("/tmp/fill")
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open("reserved.bin", os.O_CREAT | os.O_WRONLY, 0o600)
result = libc.fallocate(fd, 0, ctypes.c_long(0), ctypes.c_long(1 << 30))
print("fallocate:", ctypes.get_errno() if result else "reserved 1 GiB")
os.posix_fallocate(fd, 0, 1 << 20)  # glibc writes the blocks instead
print("posix_fallocate:", os.fstat(fd).st_blocks * 512)
"""
    kernel = (await client.start_kernel("python3", path="quota-tmp"))["id"]
    try:
        async with client.channels(kernel) as channels:
            out, event = await run_code(channels, code)
    finally:
        await client.shutdown_kernel(kernel)
    assert isinstance(event, Finished), out
    assert out.splitlines() == [
        f"tmp: {errno.ENOSPC}",
        f"fallocate: {errno.EOPNOTSUPP}",
        f"posix_fallocate: {1 << 20}",
    ]


@pytest.mark.django_db(transaction=True)
async def test_the_cell_and_the_notebook_say_the_kernel_went_past_the_quota(
    settings, quota_server, notebook, alice
):
    settings.JUPYTER_SERVER_URL = quota_server.url
    settings.JUPYTER_SERVER_TOKEN = quota_server.token
    settings.KERNEL_HOME_QUOTA_MB = QUOTA_MB
    bridge = get_bridge(notebook.pk)
    a = await joined(notebook.pk, alice)
    try:
        a.text().insert(0, WRITE_FILES)
        add_code_cell(a, "clean", "import shutil; shutil.rmtree('data'); print('cleaned up')")
        await flushed(a)
        await a.pump()
        await bridge.enqueue([a.cells[0]["id"]], alice)
        async with asyncio.timeout(60):
            await bridge.wait_idle()
        await a.pump_until(lambda: any(o["output_type"] == "error" for o in outputs(a)), what="the error")
        error = outputs(a)[-1]
        assert f"quota of {QUOTA_MB} MB" in error["evalue"], error
        assert f"quota of {QUOTA_MB} MB" in bridge.info()["message"]

        await bridge.enqueue(["clean"], alice)
        async with asyncio.timeout(60):
            await bridge.wait_idle()
        await a.pump_until(lambda: outputs(a, 1), what="the clean-up's output")
        assert outputs(a, 1)[0]["text"] == "cleaned up\n"
    finally:
        await close_all(a)
        async with asyncio.timeout(60):
            await bridge.shutdown()


# The count itself (kernels.diskuse), on this process's own files.


def test_a_count_follows_no_symlink_and_loses_nothing_deep_down(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big.bin").write_bytes(b"x" * (4 << 20))
    home = tmp_path / "home"
    home.mkdir()
    (home / "link").symlink_to(outside)
    (home / "big-link").symlink_to(outside / "big.bin")
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(30):  # a path of 6,000 characters, past PATH_MAX
        os.mkdir("d" * 200, dir_fd=fd)
        fd, parent = os.open("d" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
        os.close(parent)
    deep = os.open("deep.bin", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd)
    os.write(deep, b"x" * (2 << 20))
    os.close(deep)
    os.close(fd)
    usage = measure([home], list, 10_000)
    assert usage.complete
    assert (2 << 20) <= usage.bytes < (3 << 20)


def test_a_count_cut_short_is_over_the_quota(tmp_path):
    for i in range(20):
        (tmp_path / f"f{i}").touch()
    assert not measure([tmp_path], list, 10).complete
    deep = tmp_path / "deep"
    (deep / "/".join(["d"] * (MAX_DEPTH + 1))).mkdir(parents=True)
    assert not measure([deep], list, 10_000).complete
    assert measure([deep / "d"], list, 10_000).complete
    watch = HomeWatch(1 << 30, 1.0, 10)
    assert not watch.over(Usage(0))
    assert watch.over(Usage(0, complete=False))


def test_a_count_sees_files_deleted_but_held_open(tmp_path):
    assert os.getpid() in processes_of(os.getuid())
    with open(tmp_path / "held", "wb") as f:
        f.write(b"x" * (2 << 20))
        f.flush()
        os.unlink(tmp_path / "held")
        assert measure([tmp_path], list, 100_000).bytes < (1 << 20)
        assert measure([tmp_path], lambda: [os.getpid()], 100_000).bytes >= (2 << 20)


def test_a_kernel_over_its_quota_is_stopped_only_when_it_grows():
    watch = HomeWatch(QUOTA_MB << 20, QUOTA_INTERVAL, 1000)  # slack: 1 MiB
    assert not watch.over(Usage(10 << 20))
    assert watch.over(Usage(30 << 20))  # crossed the quota
    assert not watch.over(Usage((30 << 20) + 64 * 1024))  # IPython's history, say
    assert not watch.over(Usage(25 << 20))  # deleting lowers the mark
    assert watch.over(Usage(27 << 20))  # 2 MiB past the lowest count
    assert not watch.over(Usage(27 << 20))  # the restarted kernel starts from there
    assert not watch.over(Usage(10 << 20))  # under the quota again
    assert watch.over(Usage(21 << 20))
