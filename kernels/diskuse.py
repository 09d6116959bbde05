"""The disk a sandboxed kernel holds, and its home quota. Runs in the local Jupyter Server
(root); no Django, no Jupyter.

A plain ext4 host has no per-directory quota short of filesystem quotas or loop mounts, so the
server counts (`HomeWatch`): once as a kernel is launched, before it runs anything, then every
`interval` seconds. A count adds up the blocks allocated under the kernel's home and its runtime
directory (the two places on disk it may write) and those of the files its processes hold open
or mapped after deleting them (no walk sees them, and they are freed only when it stops).

A kernel whose count is over the quota is stopped if it crossed the quota since the last count,
or grew by more than `slack` past the lowest count since it went over (the launch's count, for
a kernel started in a home already over it). So a kernel may start in a home over its quota and
delete files to get back under it, and its own small writes meanwhile (IPython's history) are
no reason to stop it; what it deletes lowers the mark it may not pass.

Rules:
- `measure` walks through directory descriptors (`openat` with O_NOFOLLOW, `fstatat` without
  following): no symlink is followed and no path grows past PATH_MAX, so nothing a kernel plants
  makes root read outside its directories or lose count deep in them.
- It is bounded: at most `max_entries` entries and `MAX_DEPTH` levels. A count cut short is over
  the quota (too many files fill a disk too), with the bytes it counted.
- Blocks (`st_blocks`), not sizes: a sparse file costs what it holds, and ext4 counts the blocks
  of data still in the page cache (delayed allocation), so a count sees a write at once.
- Counts run on one thread of their own, one at a time: never in the server's event loop, and
  never more than one core however many kernels run. A home that takes long to count is counted
  less often (at most a fifth of the time).
- Overshoot: a kernel is stopped within one interval plus one count of crossing the quota, so
  a home goes over by what the kernel writes meanwhile (write speed x that time) plus `slack`.
  Instant allocation (`fallocate`) is refused by the sandbox's seccomp filter
  (`kernels.syscalls`) for that reason: it reserves gigabytes in milliseconds.
- Not proof against a kernel that keeps renaming a directory while it is counted: a walk may
  then miss it (as any walk of a changing tree may).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

# The kernel model's `reason` (Jupyter Server's "reason for the last failure against the kernel",
# shown by GET /api/kernels/<id>) while the kernel was last stopped for its home quota; the
# app's bridge reads it when the server says the kernel restarted (`kernels.jobs`).
QUOTA_REASON = "home-quota"
MAX_DEPTH = 64  # directories a walk goes down into below a root (two descriptors each)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_COUNTING = ThreadPoolExecutor(max_workers=1, thread_name_prefix="home-quota")
_Level = tuple[int, "os._ScandirIterator[str]"]  # a directory being walked: its descriptor, its entries


@dataclass(frozen=True)
class Usage:
    """Bytes allocated; `complete` False when the walk stopped at its bounds."""

    bytes: int
    complete: bool = True


@dataclass
class _Budget:
    entries: int
    complete: bool = True

    def take(self) -> bool:
        self.entries -= 1
        if self.entries < 0:
            self.complete = False
        return self.complete


def measure(roots: list[Path], pids: Callable[[], list[int]], max_entries: int) -> Usage:
    """What a kernel holds on disk under `roots` and through its processes (`pids`)."""
    budget = _Budget(max_entries)
    total, devices = 0, set()
    for root in roots:
        try:
            fd = os.open(root, _DIR_FLAGS)
        except OSError:
            continue
        devices.add(os.fstat(fd).st_dev)
        total += _walk(fd, budget)
    total += _deleted_but_open(pids(), devices, budget)
    return Usage(total, budget.complete)


def _walk(fd: int, budget: _Budget) -> int:
    """Blocks under the directory `fd` (itself included), depth first; closes `fd`."""
    try:
        total = os.fstat(fd).st_blocks * 512
        stack = [(fd, os.scandir(fd))]
    except OSError:
        os.close(fd)
        return 0
    try:
        while stack and budget.complete:
            parent, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                _close(stack.pop())
            elif budget.take():
                total += _count(entry, parent, stack, budget)
    finally:
        for level in reversed(stack):
            _close(level)
    return total


def _count(entry: os.DirEntry[str], parent: int, stack: list[_Level], budget: _Budget) -> int:
    """The entry's blocks; a directory goes on the stack to be walked next."""
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError:  # gone meanwhile
        return 0
    if stat.S_ISDIR(info.st_mode):
        if len(stack) > MAX_DEPTH:
            budget.complete = False
            return 0
        with contextlib.suppress(OSError):
            child = os.open(entry.name, _DIR_FLAGS, dir_fd=parent)
            try:
                stack.append((child, os.scandir(child)))
            except OSError:
                os.close(child)
    return info.st_blocks * 512


def _close(level: _Level) -> None:
    fd, entries = level
    entries.close()
    os.close(fd)


def _deleted_but_open(pids: list[int], devices: set[int], budget: _Budget) -> int:
    """Blocks of deleted files on `devices` that the processes `pids` hold open or mapped."""
    seen: dict[tuple[int, int], int] = {}
    for pid in pids:
        for kind in ("fd", "map_files"):
            with contextlib.suppress(OSError):
                for entry in os.scandir(f"/proc/{pid}/{kind}"):
                    if not budget.take():
                        return sum(seen.values())
                    try:
                        info = os.stat(entry.path)  # the open file itself, deleted or not
                    except OSError:
                        continue
                    if stat.S_ISREG(info.st_mode) and info.st_nlink == 0 and info.st_dev in devices:
                        seen[(info.st_dev, info.st_ino)] = info.st_blocks * 512
    return sum(seen.values())


def processes_of(uid: int) -> list[int]:
    """Processes whose real uid is `uid`, from their status (/proc/<pid> itself belongs to root
    once a process makes itself non-dumpable). For a kernel without a control group, whose
    processes are listed nowhere else; one scan of /proc a second serves every kernel."""
    now = time.monotonic()
    if now - _LAST_SCAN.at > 1.0:
        _LAST_SCAN.at, _LAST_SCAN.uids = now, _uids_of_processes()
    return _LAST_SCAN.uids.get(uid, [])


@dataclass
class _Scan:
    at: float = -1e9
    uids: dict[int, list[int]] = field(default_factory=dict)  # uid -> pids


_LAST_SCAN = _Scan()  # used from the counting thread only


def _uids_of_processes() -> dict[int, list[int]]:
    uids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                status = Path(entry.path, "status").read_text()
                line = status[status.index("\nUid:") :].split("\n", 2)[1]
                uids.setdefault(int(line.split()[1]), []).append(int(entry.name))
    return uids


class HomeWatch:
    """One kernel's counts, from its launch until it stops: `stop(usage)` is awaited when it
    must stop (see the module's rules)."""

    def __init__(self, quota_bytes: int, interval: float, max_entries: int) -> None:
        self.quota_bytes = quota_bytes
        self.interval = interval
        self.max_entries = max_entries
        self.slack = max(1 << 20, quota_bytes // 100)
        self.floor: int | None = None  # the lowest count since the home went over the quota

    def over(self, usage: Usage) -> bool:
        """Record a count; True if the kernel must stop."""
        if usage.complete and usage.bytes <= self.quota_bytes:
            self.floor = None
            return False
        if self.floor is None or usage.bytes > self.floor + self.slack:
            self.floor = usage.bytes  # what the kernel restarted after a stop starts from
            return True
        self.floor = min(self.floor, usage.bytes)
        return False

    async def count(self, roots: list[Path], pids: Callable[[], list[int]]) -> Usage:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_COUNTING, measure, roots, pids, self.max_entries)

    async def start(self, roots: list[Path]) -> None:
        """The launch's count, before the kernel runs: over the quota, it is where it starts."""
        usage = await self.count(roots, list)
        self.floor = None if usage.complete and usage.bytes <= self.quota_bytes else usage.bytes

    async def run(
        self, roots: list[Path], pids: Callable[[], list[int]], stop: Callable[[Usage], Awaitable[None]]
    ) -> None:
        """Count until the kernel must stop (`stop` awaited once) or this task is cancelled."""
        while True:
            started = time.monotonic()
            usage = await self.count(roots, pids)
            if self.over(usage):
                await stop(usage)
                return
            await asyncio.sleep(max(self.interval, 4 * (time.monotonic() - started)))
