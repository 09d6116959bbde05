"""The kernel lease rows (`KernelLease`): who drives a notebook's kernel, and which kernel.

Synchronous ORM, called through `database_sync_to_async`: `kernels.cluster` claims, renews and
releases leases; `kernels.bridge` records the kernel it drives and the run in flight, so that
the worker taking over an expired lease can reconnect to that kernel (`Remembered`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from kernels.models import KernelLease


@dataclass(frozen=True)
class Remembered:
    """The kernel a lease names, as its last holder recorded it."""

    server_url: str
    kernel_id: str
    session_id: str
    running: dict[str, Any] | None  # msg_id, cell_id, user_id, who, code


def claim(notebook_id: str, worker: str, acquire: bool) -> str | None:
    """The channel of the worker holding the notebook's live lease. With `acquire`, take the
    lease for `worker` when nobody holds a live one. None: nobody holds it (and not acquired)."""
    ttl = timedelta(seconds=settings.KERNEL_LEASE_TTL)
    for _attempt in range(3):
        now = timezone.now()
        lease = KernelLease.objects.filter(notebook_id=notebook_id).first()
        if lease is not None and lease.expires_at > now:
            return lease.worker
        if not acquire:
            return None
        if lease is not None:  # expired: take it over unless someone else just did
            taken = KernelLease.objects.filter(
                notebook_id=notebook_id, worker=lease.worker, expires_at=lease.expires_at
            ).update(worker=worker, expires_at=now + ttl)
            if taken:
                return worker
            continue
        try:
            with transaction.atomic():
                KernelLease.objects.create(notebook_id=notebook_id, worker=worker, expires_at=now + ttl)
            return worker
        except IntegrityError:
            continue  # another worker created it first: read it again
    return None


def orphaned(limit: int = 20) -> list[str]:
    """Notebooks whose lease ran out while naming a kernel: their worker died with it."""
    rows = KernelLease.objects.filter(expires_at__lte=timezone.now()).exclude(kernel_id="")
    return [str(pk) for pk in rows.values_list("notebook_id", flat=True)[:limit]]


def renew(worker: str, keep: list[str], drop: list[str]) -> set[str]:
    """Extend `worker`'s leases in `keep`, delete those in `drop`; return the ids still held."""
    if drop:
        KernelLease.objects.filter(worker=worker, notebook_id__in=drop).delete()
    if not keep:
        return set()
    expires = timezone.now() + timedelta(seconds=settings.KERNEL_LEASE_TTL)
    mine = KernelLease.objects.filter(worker=worker, notebook_id__in=keep)
    mine.update(expires_at=expires)
    return {str(pk) for pk in mine.values_list("notebook_id", flat=True)}


def release(worker: str, notebook_id: str) -> None:
    KernelLease.objects.filter(worker=worker, notebook_id=notebook_id).delete()


def remembered(notebook_id: str) -> Remembered | None:
    lease = KernelLease.objects.filter(notebook_id=notebook_id).exclude(kernel_id="").first()
    if lease is None:
        return None
    return Remembered(lease.server_url, lease.kernel_id, lease.session_id, lease.running)


def remember(
    notebook_id: str,
    server_url: str = "",
    kernel_id: str = "",
    session_id: str = "",
    running: dict[str, Any] | None = None,
) -> None:
    """Record the kernel (empty: none) and the run in flight on the notebook's lease row."""
    KernelLease.objects.filter(notebook_id=notebook_id).update(
        server_url=server_url, kernel_id=kernel_id, session_id=session_id, running=running
    )
