"""Loaded INSIDE the local Jupyter Server process: every kernel in its own bubblewrap sandbox.

A cell's code is untrusted (every signed-up user is a stranger), so each kernel runs:
- as an unprivileged user of its own: one uid per notebook home, taken from a range nobody else
  uses (never root, never the app's user), so process limits and file modes separate notebooks
  even without the namespaces;
- with a clean environment: nothing of the app's or the server's settings, no token;
- in new mount, pid, ipc, uts and (by default) network namespaces: the system read-only
  (`/usr`, `/etc`, the Python the kernel runs on), a private `/tmp` of `tmp_mb`, its own home at
  `/home/notebook` (per notebook, kept between kernel restarts), and nothing else: not the app's
  directory, not other kernels' homes, connection files or processes, not the server's process;
- with no network at all by default, loopback included: it talks to the server over IPC
  sockets in a directory of its own (`--KernelManager.transport=ipc`);
- under resource limits: address space, CPU seconds, processes (per uid), file size, no core;
  no `fallocate` (`kernels.syscalls`); its home counted against `home_quota_mb` while it runs,
  and the kernel stopped when it grows past it (`kernels.diskuse`; the model's `reason` says so).

Why bubblewrap through a provisioner: jupyter_client's provisioner is the supported seam for
"how a kernel process is launched" (restarts, interrupts and shutdown keep working unchanged);
bubblewrap is a small, audited setuid-free tool in Debian that needs no daemon, unlike
containers, and starts in a few milliseconds. The server itself runs as root so that it can
give each kernel its own uid; the kernel drops every capability before the first line of user
code (`setpriv --no-new-privs`, empty bounding set).

Registered under the name `notebook-sandbox` through the `sandbox_entry` distribution that
`kernels.local_server` puts on the server's PYTHONPATH. No Django here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import shutil
import signal
import stat
import sys
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.provisioning import LocalProvisioner
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from traitlets import Bool, Float, Int, List, Unicode, default

from kernels import syscalls
from kernels.cgroups import KernelCgroup
from kernels.diskuse import QUOTA_REASON, HomeWatch, Usage, processes_of

HOME = "/home/notebook"
# A notebook's home is named after it (the app passes the notebook's id as the kernel's path).
_HOME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_SCRATCH = ".scratch"  # homes of kernels started without a path; removed with the kernel
_SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


class SandboxKernelManager(AsyncMappingKernelManager):
    """Gives each notebook (the kernel's `path`) a home directory under the server's root, and
    bounds what a kernel may send: a larger ZMQ message is never read, so it cannot grow this
    process and the app's workers by its size. ZMQ drops the connection with it;
    `kernels.channelguard` opens it again and tells the cell."""

    max_message_mb = Int(32, config=True, help="Largest message a kernel may send (MiB).")

    @default("kernel_manager_class")
    def _default_kernel_manager_class(self) -> str:
        return "kernels.channelguard.GuardedKernelManager"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.context.setsockopt(zmq.MAXMSGSIZE, self.max_message_mb * 1024 * 1024)

    def cwd_for_path(self, path: Any, **kwargs: Any) -> str:
        name = str(path or "").strip("/")
        if _HOME_NAME.fullmatch(name):
            home = Path(self.root_dir) / name
            home.mkdir(mode=0o700, exist_ok=True)
            if home.is_dir() and not home.is_symlink():
                return str(home)
        return str(super().cwd_for_path(path, **kwargs))


class SandboxProvisioner(LocalProvisioner):  # type: ignore[misc]
    """Launches the kernel command inside bubblewrap, as the notebook's own uid, with limits."""

    homes = Unicode("", config=True, help="Root of the notebooks' homes (the server's root_dir).")
    memory_mb = Int(2048, config=True, help="Address-space limit per kernel process (MiB, 0 = none).")
    cpu_seconds = Int(3600, config=True, help="CPU-time limit per kernel process (s, 0 = none).")
    max_processes = Int(100, config=True, help="Processes and threads per notebook user.")
    max_file_mb = Int(1024, config=True, help="Largest file a kernel may write (MiB).")
    tmp_mb = Int(512, config=True, help="Size of the kernel's private /tmp (MiB, 0 = no size).")
    home_quota_mb = Int(2048, config=True, help="Disk a notebook's home may hold (MiB, 0 = no quota).")
    quota_interval = Float(2.0, config=True, help="Seconds between two counts of a kernel's disk.")
    home_max_files = Int(1_000_000, config=True, help="Entries a count reads at most (more: over quota).")
    network = Bool(False, config=True, help="Give kernels the host's network (outbound, pip).")
    uid_base = Int(200000, config=True, help="First uid of the range kernels run as.")
    uid_count = Int(50000, config=True, help="Size of that range.")
    read_only = List(Unicode(), config=True, help="More host paths kernels may read.")

    _home: Path | None = None
    _run_dir: Path | None = None
    _scratch: bool = False
    _uid: int = 0
    _cgroup: KernelCgroup | None = None
    _home_watch: HomeWatch | None = None
    _watching: asyncio.Task | None = None
    _stopped_for_quota: bool = False
    _told_of_restarts: bool = False

    # launch -------------------------------------------------------------------------------

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        km = self.parent
        self._home, self._scratch = self._home_for(kwargs.get("cwd"))
        self._uid = _uid_for(self._home, self._root(), self.uid_base, self.uid_count)
        runtime = Path(km.connection_file).parent  # already ours when the kernel restarts
        if runtime.name != f"sandbox-{self.kernel_id}":
            runtime = runtime / f"sandbox-{self.kernel_id}"
        self._run_dir = runtime
        _sticky_dir(self._run_dir)
        km.connection_file = str(self._run_dir / "kernel.json")
        km.ip = str(self._run_dir / "kernel-ipc")
        if not _root_file(km.connection_file):  # never reuse what is not ours (see _sticky_dir)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(km.connection_file)
            km._connection_file_written = False
        kwargs["cwd"] = str(self._home)
        kwargs = await super().pre_launch(**kwargs)
        _readable(km.connection_file)
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        spec_env = dict(self.kernel_spec.env or {}) if self.kernel_spec else {}
        env = kernel_env(spec_env)
        kwargs["env"] = {"PATH": env["PATH"]}  # bubblewrap's own; the kernel's is set inside
        if self._cgroup is None and _cgroups_usable():
            self._cgroup = KernelCgroup(f"{self.kernel_id}", self.memory_mb * 1024 * 1024, self.max_processes)
            self._cgroup.create()
        if self._cgroup is not None:
            kwargs["preexec_fn"] = self._cgroup.enter
        await self._count_before_start()
        filter_fd = syscalls.program_fd()
        if filter_fd is not None:
            kwargs["pass_fds"] = (filter_fd,)
        try:
            info = await super().launch_kernel(self.wrap(cmd, env, filter_fd), **kwargs)
        finally:
            if filter_fd is not None:
                os.close(filter_fd)
        self._keep_counting()
        return info

    def wrap(self, cmd: list[str], env: dict[str, str], seccomp_fd: int | None = None) -> list[str]:
        """The kernel command inside bubblewrap, limits and the uid switch."""
        assert self._home is not None
        assert self._run_dir is not None
        setenv = [arg for name, value in env.items() for arg in ("--setenv", name, value)]
        seccomp = ["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []
        return [
            shutil.which("bwrap") or "bwrap",
            "--clearenv", *setenv,  # not even the launcher's JPY_PARENT_PID (another pid space)
            *namespace_args(self.network), *seccomp,
            *mount_args(self._read_only_paths(), self.tmp_mb),
            *parent_dirs(HOME), "--bind", str(self._home), HOME,
            *parent_dirs(str(self._run_dir)), "--bind", str(self._run_dir), str(self._run_dir),
            "--chdir", HOME,
            "--",
            *limit_args(self.memory_mb, self.cpu_seconds, self.max_processes, self.max_file_mb),
            "setpriv", f"--reuid={self._uid}", f"--regid={self._uid}", "--clear-groups",
            "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--",
            *cmd,
        ]  # fmt: skip

    async def send_signal(self, signum: int) -> None:
        """Interrupts reach the kernel's processes, not bubblewrap: bubblewrap dies of SIGINT
        and takes the kernel with it. Stopping signals still go to the whole group."""
        if signum in (signal.SIGKILL, signal.SIGTERM) or not self.pid or not self.pgid:
            await super().send_signal(signum)
            return
        for pid in sandboxed_pids(self.pid, self.pgid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)

    async def cleanup(self, restart: bool = False) -> None:
        if self._watching is not None:
            self._watching.cancel()
            self._watching = None
        await super().cleanup(restart)
        if self._cgroup is not None:
            self._cgroup.remove()  # what the kernel left behind dies with it
            self._cgroup = None
        if restart:
            return  # the same connection file (and scratch home) serve the restarted kernel
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
        if self._scratch and self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)

    # home quota (see kernels.diskuse) ----------------------------------------------------

    async def _count_before_start(self) -> None:
        """The launch's count (`kernels.diskuse`), taken before the kernel runs anything."""
        self._home_watch = None
        if self.home_quota_mb > 0:
            watch = HomeWatch(self.home_quota_mb * 1024 * 1024, self.quota_interval, self.home_max_files)
            await watch.start(self._disk_roots())
            self._home_watch = watch

    def _keep_counting(self) -> None:
        """Count while the kernel runs; its processes are its control group's, else its uid's."""
        if self._home_watch is None:
            return
        cgroup = self._cgroup
        pids = cgroup.pids if cgroup is not None else functools.partial(processes_of, self._uid)
        task = asyncio.ensure_future(self._home_watch.run(self._disk_roots(), pids, self._stop_for_quota))
        task.add_done_callback(self._counting_ended)
        self._watching = task

    def _disk_roots(self) -> list[Path]:
        return [path for path in (self._home, self._run_dir) if path is not None]

    def _counting_ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.error(
                "Counting the disk of kernel %s failed: its home quota is not enforced until it restarts",
                self.kernel_id, exc_info=task.exception(),
            )  # fmt: skip

    async def _stop_for_quota(self, usage: Usage) -> None:
        """Kill the kernel as a shutdown does; the server's restarter then starts it again in
        the same home and tells every connection it restarted. The kernel model's `reason` says
        why until the kernel dies again (`_on_restart`)."""
        km = self.parent
        self.log.warning(
            "Kernel %s holds %.1f MiB in %s, over its quota of %d MiB, and grew: stopping it",
            self.kernel_id, usage.bytes / (1 << 20), self._home, self.home_quota_mb,
        )  # fmt: skip
        if not self._told_of_restarts:
            km.add_restart_callback(self._on_restart)
            self._told_of_restarts = True
        self._stopped_for_quota = True
        km.reason = QUOTA_REASON
        await self.kill()

    def _on_restart(self) -> None:
        """The server found the kernel dead and restarts it (its connections are told in the
        same loop turn, so the reason is settled before anyone can ask for it)."""
        if not self._stopped_for_quota:
            self.parent.reason = ""  # died of something else: not the quota
        self._stopped_for_quota = False

    # helpers ------------------------------------------------------------------------------

    def _root(self) -> Path:
        return Path(self.homes or self.parent.parent.root_dir).resolve()

    def _home_for(self, cwd: Any) -> tuple[Path, bool]:
        """The notebook's home (kept), or a scratch home for a kernel started without one."""
        root = self._root()
        if cwd:
            home = Path(str(cwd)).resolve()
            if home.parent == root and _HOME_NAME.fullmatch(home.name) and home.is_dir():
                return home, False
        scratch = root / _SCRATCH
        scratch.mkdir(mode=0o700, exist_ok=True)
        home = scratch / str(self.kernel_id)
        home.mkdir(mode=0o700, exist_ok=True)
        return home, True

    def _read_only_paths(self) -> list[str]:
        """The Python the kernel runs on (virtualenv and its base) plus configured extras."""
        paths = [sys.prefix, sys.base_prefix, *self.read_only]
        return sorted({p for p in paths if p and not p.startswith(("/usr/", "/etc/"))})


def _sticky_dir(path: Path) -> None:
    """The kernel's runtime directory: root's, world-writable and sticky, so the kernel can
    create its sockets but cannot replace the connection file, and the server (root) does not
    follow a symlink the kernel puts there (fs.protected_symlinks, which
    `kernels.local_server.Sandbox.check` turns on): a
    kernel cannot make the server open, chown or connect to anything outside it."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0:
        raise RuntimeError(f"{path} is not a directory of the server's")
    os.chmod(path, 0o1777)  # noqa: S103 (sticky, and only this kernel's sandbox sees it)


def _root_file(path: str) -> bool:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_uid == 0 and info.st_nlink == 1


def _readable(path: str) -> None:
    """Let the kernel read its connection file (jupyter_client writes it 0600), through a
    descriptor opened without following symlinks."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.fchmod(fd, 0o644)
    finally:
        os.close(fd)


_CGROUPS: list[bool] = []


def _cgroups_usable() -> bool:
    if not _CGROUPS:
        _CGROUPS.append(KernelCgroup.available())
    return _CGROUPS[0]


def _uid_for(home: Path, root: Path, base: int, count: int) -> int:
    """The uid that owns `home`, or the lowest unused one in the range (then `home` gets it).

    Runs in the server's event loop (one process), so allocation needs no lock."""
    owner = home.stat().st_uid
    if base <= owner < base + count:
        return owner
    used = {owner} | {entry.stat().st_uid for entry in _homes(root)}
    uid = next((u for u in range(base, base + count) if u not in used), None)
    if uid is None:
        raise RuntimeError(f"no free kernel uid left in {base}..{base + count - 1}")
    os.chown(home, uid, uid)
    return uid


def _homes(root: Path) -> list[Path]:
    entries = [e for e in root.iterdir() if e.name != _SCRATCH]
    scratch = root / _SCRATCH
    if scratch.is_dir():
        entries += list(scratch.iterdir())
    return [e for e in entries if e.is_dir() and not e.is_symlink()]


def sandboxed_pids(bwrap_pid: int, pgid: int) -> list[int]:
    """The processes of the sandbox's process group but bubblewrap's own two (its monitor, the
    one we started, and its init inside the pid namespace)."""
    found: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        ppid, group = int(fields[1]), int(fields[2])
        if group == pgid:
            found[int(entry.name)] = ppid
    return [pid for pid, ppid in found.items() if pid != bwrap_pid and ppid != bwrap_pid]


def kernel_env(spec_env: dict[str, str]) -> dict[str, str]:
    """A clean environment: nothing of the server's (no token, no settings, no parent pid)."""
    bin_dir = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": HOME,
        "USER": "notebook",
        "SHELL": "/bin/sh",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",  # noqa: S108 (the sandbox's private tmpfs)
        # glibc reserves 64 MiB of address space per thread's arena; the memory limit counts
        # address space, so keep reservations near what is really used.
        "MALLOC_ARENA_MAX": "2",
    }
    env.update({k: v for k, v in spec_env.items() if not k.startswith(("JUPYTER", "JPY_"))})
    return env


def namespace_args(network: bool) -> list[str]:
    args = ["--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    args += ["--unshare-cgroup-try", "--hostname", "notebook"]
    if not network:
        args.append("--unshare-net")
    return args


def mount_args(read_only: list[str], tmp_mb: int = 0) -> list[str]:
    args = ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777"]
    if tmp_mb > 0:
        args += ["--size", str(tmp_mb * 1024 * 1024)]
    args += ["--tmpfs", "/tmp"]  # noqa: S108
    for path in read_only:
        if os.path.exists(path):
            args += [*parent_dirs(path), "--ro-bind", path, path]
    return args


def parent_dirs(path: str) -> list[str]:
    """Create `path`'s parents as 0755 (bubblewrap makes them 0700, closed to the kernel's uid)."""
    args: list[str] = []
    for parent in reversed(Path(path).parents[:-1]):
        args += ["--perms", "0755", "--dir", str(parent)]
    return args


def limit_args(memory_mb: int, cpu_seconds: int, max_processes: int, max_file_mb: int) -> list[str]:
    args = ["prlimit", "--core=0", "--nofile=1024", f"--nproc={max_processes}"]
    if memory_mb > 0:
        args.append(f"--as={memory_mb * 1024 * 1024}")
    if cpu_seconds > 0:
        args.append(f"--cpu={cpu_seconds}")
    if max_file_mb > 0:
        args.append(f"--fsize={max_file_mb * 1024 * 1024}")
    return [*args, "--"]
