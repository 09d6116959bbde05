"""Start and stop a private Jupyter Server on 127.0.0.1 (the default kernel host).

Rules:
- Listens on 127.0.0.1 only, on a free port, with a fresh random token; the URL and token stay
  server side (never send them to a browser).
- Runs in its own temporary root dir and Jupyter config/runtime dirs, so a user's
  `~/.jupyter` config cannot change its behaviour.
- TCP_NODELAY on its kernel websockets (see `kernels.nodelay`): ~10 ms per trivial execute
  instead of ~50 ms.
- The server's iopub data-rate limit is off by default: it drops output silently, while the
  bridge caps every output itself (`kernels.outputs`) and says so in the notebook.
- Every kernel runs in a bubblewrap sandbox (`kernels.sandbox`) unless `sandbox=None`: its own
  uid, no network, no view of the app, limits. The server gets a minimal environment (nothing of
  the app's settings) and its token through that environment, never on its command line, which
  every process on the host can read.
- `homes` (default: inside the temporary dir) holds one home directory per notebook; give a
  lasting directory to keep kernels' files across server restarts.
- `start()` blocks until `/api/status` answers; `stop()` terminates the process group and
  removes the temporary dirs. Both are synchronous: call them from a thread in async code.
- `keep_running()` (what `manage.py serve` and `stack` use) restarts a server that died or was
  killed, on the same URL with the same token; the kernels it ran are gone, and the bridge
  fails their cells and starts a new kernel on the next run.

`python -m kernels.local_server` runs one in the foreground and prints its URL; Ctrl-C, SIGINT
or SIGTERM stops it (also when started with SIGINT ignored, as a background job of a script).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from config.serving import on_stop_signals, raise_interrupt

log = logging.getLogger(__name__)
_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
NODELAY_CLASS = "kernels.nodelay.NoDelayWebsocketConnection"
SANDBOX_ENTRY = str(Path(__file__).resolve().parent / "sandbox_entry")
# What the server process inherits from ours: enough to run Python, nothing of the app's settings.
_INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT")


class SandboxUnavailable(RuntimeError):
    """The kernel sandbox cannot run here; the message says what to install or set."""


@dataclass(frozen=True)
class Sandbox:
    """Limits and options of the kernel sandbox (see `kernels.sandbox.SandboxProvisioner`)."""

    memory_mb: int = 2048
    cpu_seconds: int = 3600
    max_processes: int = 100
    max_file_mb: int = 1024
    tmp_mb: int = 512
    home_quota_mb: int = 2048
    quota_interval: float = 2.0
    home_max_files: int = 1_000_000
    network: bool = False
    uid_base: int = 200000
    max_message_mb: int = 32
    read_only: tuple[str, ...] = field(default=())

    def check(self) -> None:
        """Raise `SandboxUnavailable` unless kernels can be sandboxed on this host."""
        missing = [tool for tool in ("bwrap", "prlimit", "setpriv") if shutil.which(tool) is None]
        if missing:
            raise SandboxUnavailable(
                f"The kernel sandbox needs {', '.join(missing)} (Debian packages bubblewrap and "
                "util-linux); install them, or set KERNEL_SANDBOX=off to run kernels unconfined."
            )
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            raise SandboxUnavailable(
                "The kernel sandbox gives every notebook its own user, which needs the local "
                "Jupyter Server to run as root; run it as root (python -m kernels.local_server), "
                "point JUPYTER_SERVER_URL at a kernel service, or set KERNEL_SANDBOX=off."
            )
        if self.home_quota_mb > 0 and not self.quota_interval > 0:
            raise SandboxUnavailable(
                "KERNEL_HOME_QUOTA_INTERVAL must be a number of seconds above 0 "
                f"(it is {self.quota_interval}); or set KERNEL_HOME_QUOTA_MB=0 to count no home."
            )
        protect_symlinks()

    def argv(self) -> list[str]:
        args = [
            "--ServerApp.kernel_manager_class=kernels.sandbox.SandboxKernelManager",
            "--KernelProvisionerFactory.default_provisioner_name=notebook-sandbox",
            "--KernelManager.transport=ipc",
            f"--SandboxKernelManager.max_message_mb={self.max_message_mb}",
        ]
        for name, value in asdict(self).items():
            if name == "read_only":
                args += [f"--SandboxProvisioner.read_only={path}" for path in value]
            elif name != "max_message_mb":
                args.append(f"--SandboxProvisioner.{name}={value}")
        return args


def protect_symlinks() -> None:
    """Turn fs.protected_symlinks on (Debian's default) where a host has it off: it keeps the
    server, which runs as root, from following a kernel's symlinks in the kernel's directory."""
    knob = Path("/proc/sys/fs/protected_symlinks")
    try:
        if knob.read_text().strip() != "1":
            knob.write_text("1")
    except OSError as exc:
        raise SandboxUnavailable(
            f"The kernel sandbox needs fs.protected_symlinks=1 and could not set it ({exc}); "
            "set it with sysctl, or set KERNEL_SANDBOX=off."
        ) from exc


def free_port() -> int:
    """Ask the OS for a free TCP port on 127.0.0.1 (racy, so `start()` retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalJupyterServer:
    """A Jupyter Server subprocess on 127.0.0.1; use `with LocalJupyterServer() as server:`."""

    def __init__(
        self,
        *,
        nodelay: bool = True,
        iopub_data_rate_limit: float = 0.0,
        startup_timeout: float = 30.0,
        python: str = sys.executable,
        extra_args: list[str] | None = None,
        quiet: bool = True,
        sandbox: Sandbox | None = Sandbox(),  # frozen, so one default is safe to share
        homes: str | Path | None = None,
    ) -> None:
        self.nodelay = nodelay
        self.iopub_data_rate_limit = iopub_data_rate_limit
        self.startup_timeout = startup_timeout
        self.python = python
        self.extra_args = list(extra_args or [])
        self.quiet = quiet
        self.sandbox = sandbox
        self.homes = Path(homes) if homes else None
        self.token = ""
        self.port = 0
        self.url = ""
        self.root_dir: Path | None = None
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._keeper: threading.Thread | None = None
        self._keeper_stop = threading.Event()
        self._restart_lock = threading.Lock()

    def __enter__(self) -> LocalJupyterServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Launch the server and wait until it answers; retry on a port race."""
        if self._proc is not None:
            raise RuntimeError("server already started")
        if self.sandbox is not None:
            self.sandbox.check()
        self._tmp = Path(tempfile.mkdtemp(prefix="nb-jupyter-"))
        self.root_dir = self.homes or self._tmp / "root"
        self.root_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        last_error = "no attempt"
        for _attempt in range(3):
            self.token = secrets.token_hex(32)
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self._launch()
            try:
                self._wait_ready()
                return
            except RuntimeError as exc:
                last_error = str(exc)
                self._kill()
            except BaseException:  # Ctrl-C / SIGTERM while waiting: leave no orphan behind
                self.stop()
                raise
        self._cleanup_dirs()
        raise RuntimeError(f"Jupyter Server did not start: {last_error}")

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server (SIGTERM to its process group, SIGKILL after `timeout`)."""
        self._keeper_stop.set()
        if self._keeper is not None and self._keeper is not threading.current_thread():
            self._keeper.join()
        self._keeper = None
        self._kill(timeout)
        self._cleanup_dirs()

    def restart(self) -> None:
        """Start it again after it died (or was killed), on the same port with the same token,
        so whoever holds its URL and token (settings, other workers' environment) keeps
        working. What the dead process left in its process group (kernels) is killed first."""
        if self._tmp is None:
            raise RuntimeError("server not started")
        with self._restart_lock:
            proc, self._proc = self._proc, None
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            self._launch()
            try:
                self._wait_ready()
            except RuntimeError:
                self._kill()
                raise

    def keep_running(self, interval: float = 1.0) -> None:
        """Watch the server from a daemon thread and `restart()` it whenever its process has
        ended (killed, crashed) until `stop()`; the bridge tells the cells it was running."""
        if self._keeper is not None:
            return
        self._keeper_stop.clear()
        self._keeper = threading.Thread(
            target=self._keep, args=(interval,), name="jupyter-keeper", daemon=True
        )
        self._keeper.start()

    def _keep(self, interval: float) -> None:
        while not self._keeper_stop.wait(interval):
            proc = self._proc
            if proc is not None and proc.poll() is None:
                continue
            code = proc.returncode if proc is not None else None
            log.warning("the local Jupyter Server exited with code %s; restarting it", code)
            try:
                self.restart()
            except (OSError, RuntimeError):
                log.exception("the local Jupyter Server did not restart; trying again")

    def _launch(self) -> None:
        self._proc = subprocess.Popen(  # noqa: S603 (fixed argv, no shell)
            self._argv(),
            env=self._env(),
            cwd=str(self.root_dir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if self.quiet else None,
            stderr=subprocess.DEVNULL if self.quiet else None,
            start_new_session=True,  # its kernels die with it: we signal the whole group
        )

    def _argv(self) -> list[str]:
        assert self.root_dir is not None
        argv = [
            self.python,
            "-m",
            "jupyter_server",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.open_browser=False",
            f"--ServerApp.root_dir={self.root_dir}",
            "--ServerApp.terminals_enabled=False",
            "--ServerApp.allow_remote_access=False",
            "--ServerApp.log_level=WARN",
            f"--ZMQChannelsWebsocketConnection.iopub_data_rate_limit={self.iopub_data_rate_limit}",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            argv.append("--ServerApp.allow_root=True")  # containers and CI run as root
        if self.nodelay:
            argv.append(f"--ServerApp.kernel_websocket_connection_class={NODELAY_CLASS}")
        if self.sandbox is not None:
            argv += self.sandbox.argv()
        return argv + self.extra_args

    def _env(self) -> dict[str, str]:
        assert self._tmp is not None
        env = {name: os.environ[name] for name in _INHERITED_ENV if name in os.environ}
        env["PYTHONPATH"] = os.pathsep.join([_PACKAGE_PARENT, SANDBOX_ENTRY])
        env["HOME"] = str(self._tmp)
        env["JUPYTER_TOKEN"] = self.token  # readable by root only (/proc/<pid>/environ)
        for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR"):
            folder = self._tmp / name.lower()
            folder.mkdir(exist_ok=True)
            env[name] = str(folder)
        # Keep the stock kernelspecs (they live under sys.prefix) but no user-level ones.
        env["JUPYTER_PATH"] = str(Path(sys.prefix) / "share" / "jupyter")
        env["IPYTHONDIR"] = str(self._tmp / "ipython")
        return env

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        headers = {"Authorization": f"token {self.token}"}
        with httpx.Client(headers=headers, timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"exited with code {self._proc.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(f"{self.url}/api/status").status_code == 200:
                        return
                time.sleep(0.1)
        raise RuntimeError(f"no answer on {self.url} within {self.startup_timeout} s")

    def _kill(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def _cleanup_dirs(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def sandbox_from_env(env: dict[str, str]) -> Sandbox | None:
    """The sandbox the `KERNEL_*` variables describe (as in the app's settings), None if off."""
    if env.get("KERNEL_SANDBOX", "bwrap").strip().lower() == "off":
        return None
    return Sandbox(
        memory_mb=int(env.get("KERNEL_MEMORY_MB", 2048)),
        cpu_seconds=int(env.get("KERNEL_CPU_SECONDS", 3600)),
        max_processes=int(env.get("KERNEL_MAX_PROCESSES", 100)),
        max_file_mb=int(env.get("KERNEL_MAX_FILE_MB", 1024)),
        tmp_mb=int(env.get("KERNEL_TMP_MB", 512)),
        home_quota_mb=int(env.get("KERNEL_HOME_QUOTA_MB", 2048)),
        quota_interval=float(env.get("KERNEL_HOME_QUOTA_INTERVAL", 2.0)),
        home_max_files=int(env.get("KERNEL_HOME_MAX_FILES", 1_000_000)),
        network=env.get("KERNEL_NETWORK", "false").strip().lower() in ("1", "true", "yes", "on"),
    )


def main() -> None:
    """Run a local server in the foreground until Ctrl-C, SIGINT or SIGTERM (each stops the
    server, then the command exits with status 0); the sandbox and the homes directory come from
    the same variables as the app's settings.

    Both signals are handled from the first line: Python raises KeyboardInterrupt only if SIGINT
    was not ignored when it started, and a script that starts the command in the background
    starts it with SIGINT ignored. While the server stops, signals are ignored, so a second
    Ctrl-C cannot cut the stopping short and leave its kernels behind."""
    on_stop_signals(raise_interrupt)
    env = dict(os.environ)
    server = LocalJupyterServer(quiet=False, sandbox=sandbox_from_env(env), homes=env.get("KERNEL_HOMES_DIR"))
    try:
        server.start()
        print(f"Jupyter Server at {server.url}  token {server.token}", flush=True)
        while server.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        on_stop_signals(signal.SIG_IGN)
        server.stop()


if __name__ == "__main__":
    main()
