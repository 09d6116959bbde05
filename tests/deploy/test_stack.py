"""`manage.py stack` (what `./run.sh --workers N` runs) supervises its processes: a daphne worker
or the redis-server that dies is started again on its port and the site keeps answering through
nginx; one that keeps dying stops the stack, and so does nginx exiting, with exit status 1.
SIGINT or SIGTERM, to the stack alone or to its whole process group (Ctrl-C), stops every
process it started, with exit status 0."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from config.deploy import BROTLI_STATIC_MODULE
from tests.support.processes import PYTHON, Stack, alive, child_processes, descendants, free_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.processes


@contextlib.contextmanager
def stack_running(sigint=signal.SIG_DFL, env: dict[str, str] | None = None, **popen):
    """`manage.py stack` answering through nginx; it starts with SIGINT's disposition `sigint`
    (a shell starts a command in the background with SIGINT ignored, one in the foreground with
    the default), whatever the test run's own; `env` adds to the stack's environment."""
    nginx_missing = shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists()
    if nginx_missing or not BROTLI_STATIC_MODULE.exists():
        subprocess.run(["scripts/install_nginx.sh"], check=True)
    # No local Jupyter Server (nothing here runs a kernel); the stack starts its own redis-server.
    stack = Stack(
        redis=False, JUPYTER_SERVER_URL="http://127.0.0.1:9", JUPYTER_SERVER_TOKEN="unused", **(env or {})
    )
    stack.env.pop("REDIS_URL", None)
    port = free_port()
    argv = [PYTHON, "manage.py", "stack", "--workers", "2", "--host", "127.0.0.1", "--port", str(port)]
    ours = signal.signal(signal.SIGINT, sigint)  # SIG_IGN and SIG_DFL outlive exec, a handler does not
    try:
        proc = stack._spawn(argv, log="stack.log", **popen)
    finally:
        signal.signal(signal.SIGINT, ours)
    try:
        eventually(lambda: answers(port) == 200, timeout=90, what="the stack to answer through nginx")
        yield stack, proc, port
    finally:
        stack.close()


@pytest.fixture
def running_stack():
    with stack_running() as running:
        yield running


def answers(port: int) -> int:
    """The status of a page through nginx on `port`, 0 when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def workers(stack_pid: int) -> dict[int, int]:
    """The stack's daphne workers: port -> pid."""
    return {
        int(argv[argv.index("-p") + 1]): pid
        for pid, argv in child_processes(stack_pid).items()
        if "daphne" in argv and "-p" in argv
    }


def process_named(stack_pid: int, name: str) -> tuple[int, list[str]]:
    """The stack's child `name` (pid, argv), or (0, []) while there is none."""
    for pid, argv in child_processes(stack_pid).items():
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                return pid, argv
    return 0, []


def back_on_port(stack_pid: int, port: int, old_pid: int) -> bool:
    return workers(stack_pid).get(port, old_pid) != old_pid and listening(port)


def output(stack: Stack) -> str:
    return (stack.tmp / "stack.log").read_text(errors="replace")


def test_killed_workers_and_redis_are_started_again_and_the_site_keeps_answering(running_stack):
    stack, proc, port = running_stack
    before = workers(proc.pid)
    assert len(before) == 2, child_processes(proc.pid)
    victim_port, victim_pid = next(iter(before.items()))
    os.kill(victim_pid, signal.SIGKILL)
    eventually(lambda: answers(port) == 200, timeout=10, what="the site to answer with one worker killed")
    eventually(
        lambda: back_on_port(proc.pid, victim_port, victim_pid),
        timeout=15,
        what="the killed worker to listen on its port again",
    )
    assert proc.poll() is None, output(stack)
    # Both at once: now only workers started again can answer.
    now = workers(proc.pid)
    for pid in now.values():
        os.kill(pid, signal.SIGKILL)
    eventually(
        lambda: all(back_on_port(proc.pid, p, pid) for p, pid in now.items()),
        timeout=20,
        what="both workers to listen on their ports again",
    )
    eventually(lambda: answers(port) == 200, timeout=10, what="the site to answer after both were killed")
    # The redis-server: started again on its port (the workers rejoin it, docs/architecture.md).
    redis_pid, redis_argv = process_named(proc.pid, "redis-server")
    redis_port = int(
        re.search(r":(\d+)", " ".join(redis_argv))[1]
    )  # its title: redis-server 127.0.0.1:<port>
    os.kill(redis_pid, signal.SIGKILL)
    eventually(
        lambda: (
            (found := process_named(proc.pid, "redis-server"))
            and found[0] != redis_pid
            and listening(redis_port)
        ),
        timeout=10,
        what="the redis-server to listen on its port again",
    )
    assert answers(port) == 200
    assert proc.poll() is None, output(stack)
    log = output(stack)
    assert log.count(f"daphne worker on 127.0.0.1:{victim_port} exited with -9; starting it again") == 2, log
    assert log.count("redis-server exited with -9; starting it again") == 1, log


def test_a_process_that_keeps_dying_stops_the_stack_with_a_failure_status():
    """A process manager (systemd, honcho) must tell a stack that gave up from one asked to stop:
    it exited 0 either way. Restart delays of 0.1-0.8 s, not 0.5-4 s (7.5 s in all): how they
    grow is test_the_stack_stops_when_a_process_exits_five_times_within_30_seconds's."""
    with stack_running(env={"STACK_RESTART_DELAY": "0.1"}) as (stack, proc, _):
        for _ in range(5):  # within 30 s: the restart delays add up to 1.5 s, redis starts at once
            pid = eventually(
                lambda: process_named(proc.pid, "redis-server")[0] or proc.poll() is not None,
                timeout=15,
                what="a redis-server to kill",
            )
            if proc.poll() is not None:
                break
            os.kill(pid, signal.SIGKILL)
            eventually(
                lambda p=pid: process_named(proc.pid, "redis-server")[0] != p, timeout=5, what="it to end"
            )
        assert proc.wait(30) == 1, output(stack)
        log = output(stack)
    assert "redis-server exited with -9; starting it again in 0.8 s." in log, log
    assert "redis-server exited with -9, 5 times within 30 s; stopping the stack." in log, log
    assert (
        log.rstrip().splitlines()[-1]
        == "CommandError: The stack stopped: redis-server exited 5 times within 30 s."
    )


def test_nginx_exiting_stops_the_stack(running_stack):
    stack, proc, _ = running_stack
    children = child_processes(proc.pid)
    nginx_pid, _ = process_named(proc.pid, "nginx")
    os.kill(nginx_pid, signal.SIGTERM)  # SIGKILL would leave its own workers holding the port
    assert proc.wait(30) == 1, output(stack)  # nobody asked the stack to stop
    assert "nginx exited with 0; stopping the stack" in output(stack)
    assert output(stack).rstrip().splitlines()[-1] == "CommandError: The stack stopped: nginx exited with 0."
    assert not [argv for pid, argv in children.items() if alive(pid)]  # it stopped the others


def test_a_process_that_keeps_dying_is_given_up_on():
    from notebooks.management.commands.stack import Restarts

    restarts = Restarts(limit=5, window=30.0)
    # Deaths far apart are started again after the first delay, however many there are.
    assert [restarts.died(at) for at in (0.0, 40.0, 80.0, 120.0, 160.0, 200.0)] == [0.5] * 6
    # Within the window the delay doubles, and the fifth death stops the stack.
    assert [restarts.died(300.0 + t) for t in (0, 1, 3, 6, 11)] == [0.5, 1.0, 2.0, 4.0, None]


def test_the_stack_stops_when_a_process_exits_five_times_within_30_seconds():
    from notebooks.management.commands.stack import Command

    command = Command(stdout=io.StringIO(), stderr=io.StringIO())
    command.env, command.children = dict(os.environ), []
    command._spawn("flaky", ["true"])  # exits at once, every time it is started
    for step in range(200):  # a clock of 0.25 s steps
        command.children[0].proc.wait(5)
        if not command._supervise(step * 0.25):
            break
    said = command.stderr._out.getvalue().splitlines()
    assert said == [
        "flaky exited with 0; starting it again in 0.5 s.",
        "flaky exited with 0; starting it again in 1 s.",
        "flaky exited with 0; starting it again in 2 s.",
        "flaky exited with 0; starting it again in 4 s.",
        "flaky exited with 0, 5 times within 30 s; stopping the stack.",
    ]
    assert step * 0.25 < 30


def assert_stopped_on(stack, started: dict, signame: str = "SIGINT") -> None:
    eventually(
        lambda: not [argv for pid, argv in started.items() if alive(pid)],
        timeout=5,
        what="every process of the stack to end",
    )
    assert f"{signame}: stopping the stack." in output(stack)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_to_the_stack_alone_stops_every_process_it_started(signum):
    # Started as a script starts a command in the background: with SIGINT ignored, which Python
    # keeps (no KeyboardInterrupt); a process manager then sends SIGINT or SIGTERM (systemd) to
    # the stack alone.
    with stack_running(sigint=signal.SIG_IGN) as (stack, proc, _):
        started = descendants(proc.pid)
        assert len(started) >= 5, started  # redis-server, 2 workers, nginx and its worker
        proc.send_signal(signum)
        assert proc.wait(5) == 0, output(stack)
        assert_stopped_on(stack, started, signal.Signals(signum).name)


def test_ctrl_c_in_a_terminal_stops_the_stack():
    # The terminal sends SIGINT to the whole foreground process group, the stack's children too.
    with stack_running(start_new_session=True) as (stack, proc, _):
        started = descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(5) == 0, output(stack)
        assert_stopped_on(stack, started)
        assert "starting it again" not in output(stack)
