"""Read-only admin for the audit trail: it can be searched and read, never changed."""

from django.contrib import admin

from audit.models import Anchor, AuditEvent, Checkpoint, Recording, Session
from runtime.admin import ReadOnlyAdmin


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = (
        "seq", "request_received_timestamp", "stage", "connection", "user_username", "verb", "dry_run",
        "object_resource", "object_namespace", "object_name", "decision_effect", "response_code",
    )
    list_filter = ("connection", "verb", "dry_run", "decision_effect", "user_username", "stage", "transport")
    search_fields = ("=audit_id", "request_uri", "user_username", "object_name")
    date_hierarchy = "request_received_timestamp"
    list_select_related = ("session",)
    exclude = ("request_body", "response_body")
    readonly_fields = ("request_body_text", "response_body_text")
    show_full_result_count = False

    @admin.display(description="request body (masked)")
    def request_body_text(self, obj):
        return _body_text(obj.request_body, obj.request_body_size)

    @admin.display(description="response body (masked)")
    def response_body_text(self, obj):
        return _body_text(obj.response_body, obj.response_body_size)


def _body_text(data, size: int) -> str:
    data = bytes(data)
    text = data.decode("utf-8", "replace")
    if size > len(data):
        text += f"\n… [truncated: {size} bytes in total]"
    return text


@admin.register(Session)
class SessionAdmin(ReadOnlyAdmin):
    list_display = ("session_id", "started_at", "ended", "events", "connection", "user_username", "kubectl_session")
    list_filter = ("connection", "user_username")
    search_fields = ("=session_id", "user_username", "kubectl_session")
    date_hierarchy = "started_at"

    def get_queryset(self, request):
        return super().get_queryset(request).with_activity()

    @admin.display(description="events", ordering="event_count")
    def events(self, obj):
        return obj.event_count

    @admin.display(description="last activity", ordering="ended_at")
    def ended(self, obj):
        return obj.ended_at


@admin.register(Recording)
class RecordingAdmin(ReadOnlyAdmin):
    list_display = ("event", "kind", "namespace", "pod", "container", "exit_code", "duration_s", "truncated")
    list_filter = ("kind", "event__connection", "event__user_username")
    search_fields = ("pod", "namespace")
    list_select_related = ("event",)


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdmin):
    list_display = ("through_seq", "events_pruned", "created_at", "archive_sha256")


@admin.register(Anchor)
class AnchorAdmin(ReadOnlyAdmin):
    list_display = ("seq", "created_at", "reason", "key_id", "hash")
    list_filter = ("reason",)
