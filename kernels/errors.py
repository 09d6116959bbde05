"""The kernel server's errors: a fixed set of sentences (see `kernels.jupyter`)."""

from __future__ import annotations


class KernelServerError(Exception):
    """The kernel server answered with an error (or not at all)."""


class KernelGone(KernelServerError):
    """The kernel no longer exists on the server (404)."""
