"""One control group per sandboxed kernel: memory (tmpfs pages included) and process limits for
the kernel and everything it starts together, which per-process rlimits cannot give.

Rules:
- cgroup v2 (a unified hierarchy with the memory and pids controllers) or v1 (the `memory` and
  `pids` hierarchies), whichever the host mounts writable; neither: `available()` is False and
  the sandbox keeps its per-process limits only (the server logs it once).
- The launched process joins the group before it executes anything (`enter`, run in the child
  between fork and exec), so nothing the kernel starts is ever outside it.
- `remove()` kills what is left in the group and removes it.
Runs inside the Jupyter Server process (root). No Django.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PARENT = "notebook-kernels"


def _v2_root() -> Path | None:
    controllers = ROOT / "cgroup.controllers"
    if controllers.exists() and {"memory", "pids"} <= set(controllers.read_text().split()):
        return ROOT
    return None


def _v1_roots() -> list[Path] | None:
    roots = [ROOT / "memory", ROOT / "pids"]
    if all((root / "cgroup.procs").exists() for root in roots):
        return roots
    return None


class KernelCgroup:
    """The group of one kernel (by id), with its memory and process limits."""

    def __init__(self, kernel_id: str, memory_bytes: int, max_pids: int) -> None:
        self.name = kernel_id
        self.memory_bytes = memory_bytes
        self.max_pids = max_pids
        self.dirs: list[Path] = []

    @staticmethod
    def available() -> bool:
        if _v2_root() is None and _v1_roots() is None:
            return False
        try:
            probe = KernelCgroup("probe-" + os.urandom(4).hex(), 0, 0)
            probe.create()
            probe.remove()
        except OSError:
            return False
        return True

    def create(self) -> None:
        v2 = _v2_root()
        if v2 is not None:
            parent = v2 / PARENT
            parent.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):  # already enabled, or set by the host
                (v2 / "cgroup.subtree_control").write_text("+memory +pids")
            (parent / "cgroup.subtree_control").write_text("+memory +pids")
            self.dirs = [parent / self.name]
        else:
            roots = _v1_roots() or []
            self.dirs = [root / PARENT / self.name for root in roots]
        for folder in self.dirs:
            folder.mkdir(parents=True, exist_ok=True)
        self._limit()

    def _limit(self) -> None:
        memory = str(self.memory_bytes)
        for folder in self.dirs:
            files = {entry.name for entry in folder.iterdir()}
            if self.memory_bytes > 0 and "memory.max" in files:  # v2
                (folder / "memory.max").write_text(memory)
                if "memory.swap.max" in files:
                    (folder / "memory.swap.max").write_text("0")
            elif self.memory_bytes > 0 and "memory.limit_in_bytes" in files:  # v1
                (folder / "memory.limit_in_bytes").write_text(memory)
                if "memory.memsw.limit_in_bytes" in files:  # memory + swap = memory: no swap
                    (folder / "memory.memsw.limit_in_bytes").write_text(memory)
            if self.max_pids > 0 and "pids.max" in files:
                (folder / "pids.max").write_text(str(self.max_pids))

    def enter(self) -> None:
        """Move the calling process into the group (called in the child before exec)."""
        for folder in self.dirs:  # plain system calls: between fork and exec, take no locks
            fd = os.open(folder / "cgroup.procs", os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left in the group, then remove it."""
        deadline = time.monotonic() + timeout
        for folder in reversed(self.dirs):
            while folder.exists():
                for pid in self._pids(folder):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                try:
                    folder.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)

    def pids(self) -> list[int]:
        """The processes in the group now."""
        return self._pids(self.dirs[0]) if self.dirs else []

    @staticmethod
    def _pids(folder: Path) -> list[int]:
        try:
            return [int(line) for line in (folder / "cgroup.procs").read_text().split()]
        except OSError:
            return []
