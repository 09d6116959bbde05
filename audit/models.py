from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class AppendOnlyError(Exception):
    """Raised when code tries to change or remove an audit event."""


class AuditEventQuerySet(models.QuerySet):
    """The log is append-only: no edits, no deletes, except `purge_older_than()` (retention)
    and the `SET_NULL` of `actor` that Django does when a user account is deleted."""

    def update(self, **kwargs):
        if set(kwargs) - {"actor", "actor_id"}:
            raise AppendOnlyError("Audit events cannot be changed.")
        return super().update(**kwargs)

    def delete(self):
        raise AppendOnlyError("Audit events cannot be deleted; retention is `purge_older_than()`.")

    def purge_older_than(self, cutoff, batch: int = 5000) -> int:
        """Delete events recorded before `cutoff`, in batches so no lock is held for long."""
        removed = 0
        while True:
            ids = list(self.filter(at__lt=cutoff).order_by("id").values_list("id", flat=True)[:batch])
            if not ids:
                return removed
            count, _ = models.QuerySet.delete(self.model.objects.filter(id__in=ids))
            removed += count


class AuditEvent(models.Model):
    """One thing that happened. Append-only: the app never edits or deletes an event
    (only the retention job removes events older than the retention setting)."""

    # When it happened: set when the event is built, which may be before it is written (the
    # end of a session during a database outage is written once the database is back).
    at = models.DateTimeField(default=timezone.now)
    # Not a foreign key: events outlive the notebooks they are about.
    notebook_id = models.UUIDField(null=True, blank=True)
    notebook_title = models.CharField(max_length=200, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    link_id = models.BigIntegerField(null=True, blank=True)
    actor_label = models.CharField(max_length=200, blank=True)
    action = models.CharField(max_length=40)
    details = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["notebook_id", "-id"]),
            models.Index(fields=["notebook_id", "action", "-id"]),
            models.Index(fields=["notebook_id", "actor", "-id"]),
            models.Index(fields=["notebook_id", "at"]),  # the time-range filter
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise AppendOnlyError("Audit events cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Audit events cannot be deleted.")
