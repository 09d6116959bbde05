"""Delete audit events older than AUDIT_RETENTION_DAYS: the only way events are ever removed.
Run it daily (cron, a systemd timer); with AUDIT_RETENTION_DAYS=0 it keeps everything."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from audit.models import AuditEvent


class Command(BaseCommand):
    help = "Delete audit events older than AUDIT_RETENTION_DAYS (0 = keep forever)."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Only count what would be deleted.")

    def handle(self, *args, dry_run: bool = False, **options):
        days = settings.AUDIT_RETENTION_DAYS
        if days <= 0:
            self.stdout.write("AUDIT_RETENTION_DAYS is 0: audit events are kept forever.")
            return
        cutoff = timezone.now() - timedelta(days=days)
        if dry_run:
            count = AuditEvent.objects.filter(at__lt=cutoff).count()
            self.stdout.write(f"{count} audit events are older than {days} days (dry run, none deleted).")
            return
        count = AuditEvent.objects.purge_older_than(cutoff)
        self.stdout.write(f"Deleted {count} audit events older than {days} days.")
