"""The seccomp filter of the kernel sandbox: a kernel may not allocate disk faster than it writes.

`fallocate` reserves gigabytes of a file's blocks in microseconds (5 GB in 16 ms on this machine
class), so no periodic measure of a home could stop a kernel before the disk is full. Refused
with EOPNOTSUPP, which every caller must already handle (many filesystems lack it): glibc's
`posix_fallocate`, Python's `os.posix_fallocate` included, then writes the blocks instead, at the
speed of any other write. `io_uring_setup` is refused with ENOSYS (as on a kernel built without
it): a ring's operations, fallocate among them, never pass through this filter.

`program()` is the classic BPF that bubblewrap loads with `--seccomp FD` (the same format as
libseccomp's `seccomp_export_bpf`), for x86-64 (with its i386 and x32 calls) and arm64 (with its
32-bit calls); on other machines it is None and the sandbox runs without the filter.
`program_fd()` hands it to bubblewrap through a pipe. No Django.

Written out here rather than through libseccomp: its Python bindings are Debian's
`python3-seccomp` (for the system Python, not the virtualenv's) or `pyseccomp` (a ctypes wrapper
last released in 2021), and two refused calls with everything else allowed are a few
instructions. `tests/kernels/test_kernel_disk.py` checks the filter inside a real sandbox.
"""

from __future__ import annotations

import errno
import os
import platform
import struct

_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS: load a 32-bit word of `struct seccomp_data`
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
_NR, _ARCH = 0, 4  # offsets of the call number and the architecture in `struct seccomp_data`
_ALLOW = 0x7FFF0000  # SECCOMP_RET_ALLOW
_ERRNO = 0x00050000  # SECCOMP_RET_ERRNO | the errno
_X32 = 0x40000000  # x32 calls are x86-64 calls with this bit set

_FALLOCATE = errno.EOPNOTSUPP
_IO_URING = errno.ENOSYS

# machine -> {AUDIT_ARCH_*: {call number: errno}}
_RULES: dict[str, dict[int, dict[int, int]]] = {
    "x86_64": {
        0xC000003E: {285: _FALLOCATE, _X32 | 285: _FALLOCATE, 425: _IO_URING, _X32 | 425: _IO_URING},
        0x40000003: {324: _FALLOCATE, 425: _IO_URING},  # i386
    },
    "aarch64": {
        0xC00000B7: {47: _FALLOCATE, 425: _IO_URING},
        0x40000028: {352: _FALLOCATE, 425: _IO_URING},  # arm
    },
}


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def program(machine: str | None = None) -> bytes | None:
    """The filter for this machine (or `machine`), None where there is none."""
    rules = _RULES.get(machine or platform.machine())
    if rules is None:
        return None
    insns = [_insn(_LD_W_ABS, _ARCH)]
    for arch, calls in rules.items():
        body = [_insn(_LD_W_ABS, _NR)]
        for number, error in calls.items():
            body += [_insn(_JEQ_K, number, 0, 1), _insn(_RET_K, _ERRNO | error)]
        body.append(_insn(_RET_K, _ALLOW))
        insns += [_insn(_JEQ_K, arch, 0, len(body)), *body]  # another arch: skip its body
    insns.append(_insn(_RET_K, _ALLOW))
    return b"".join(insns)


def program_fd() -> int | None:
    """A descriptor to read the filter from (bubblewrap's `--seccomp FD`; the caller closes it
    once bubblewrap started), or None on a machine there is no filter for."""
    filter_program = program()
    if filter_program is None:
        return None
    read, write = os.pipe()
    try:
        os.write(write, filter_program)  # a few hundred bytes: far below a pipe's buffer
    finally:
        os.close(write)
    return read
