from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from audit import present
from audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Strictly read-only: staff can look at every notebook's events, nobody can change them.
    Click a notebook to see only its events (`?notebook_id=`)."""

    list_display = ["at", "action", "actor_label", "notebook", "summary", "ip"]
    list_filter = ["action", "at"]
    date_hierarchy = "at"
    search_fields = ["actor_label", "notebook_title", "action", "=ip"]
    readonly_fields = [f.name for f in AuditEvent._meta.fields]
    list_select_related = ["actor"]
    show_full_result_count = False  # no second COUNT(*) over the whole log on each page
    list_per_page = 100

    @admin.display(description="notebook")
    def notebook(self, event: AuditEvent):
        if not event.notebook_id:
            return "—"
        url = reverse("admin:audit_auditevent_changelist") + f"?notebook_id={event.notebook_id}"
        return format_html('<a href="{}">{}</a>', url, event.notebook_title or event.notebook_id)

    @admin.display(description="what")
    def summary(self, event: AuditEvent) -> str:
        return present.words(event.action, event.details or {})

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
