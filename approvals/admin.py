"""Read-only admin views of reviews and leases: decisions go through the dashboard, API or CLI,
where the reviewer rules (role, self-approval, quorum) are enforced and every step is recorded."""

from django.contrib import admin
from rest_framework.authtoken.models import TokenProxy

from approvals.models import Lease, LeaseEvent, Review, ReviewerProfile, ReviewEvent, ReviewVote
from runtime.admin import ReadOnlyAdmin

# DRF's token admin lists every API key, and its history and delete pages name a token by its key:
# whoever may view tokens could act as any reviewer through the API.  Keys are made with
# `manage.py drf_create_token <username>`, which shows the new key once.
admin.site.unregister(TokenProxy)


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ReviewVoteInline(ReadOnlyInline):
    model = ReviewVote
    fields = ("reviewer_name", "approve", "scope", "window_seconds", "unmask", "reason", "created_at")
    readonly_fields = fields


class ReviewEventInline(ReadOnlyInline):
    model = ReviewEvent
    fields = ("at", "kind", "actor", "reason", "details")
    readonly_fields = fields


@admin.register(Review)
class ReviewAdmin(ReadOnlyAdmin):
    list_display = ("id", "state", "description", "principal_username", "connection", "rule_name", "created_at",
                    "decided_by")
    list_filter = ("state", "connection", "scope")
    search_fields = ("description", "principal_username", "principal_subject", "rule_name", "audit_id")
    exclude = ("body",)
    inlines = [ReviewVoteInline, ReviewEventInline]


class LeaseEventInline(ReadOnlyInline):
    model = LeaseEvent
    fields = ("at", "kind", "actor", "reason", "details")
    readonly_fields = fields


@admin.register(Lease)
class LeaseAdmin(ReadOnlyAdmin):
    list_display = ("id", "state", "connection", "subject", "group", "requested_by", "granted_by", "expires_at")
    list_filter = ("state", "connection")
    search_fields = ("subject", "group", "reason", "requested_by")
    inlines = [LeaseEventInline]


@admin.register(ReviewerProfile)
class ReviewerProfileAdmin(ReadOnlyAdmin):
    list_display = ("user", "issuer", "subject", "updated_at")
    search_fields = ("user__username", "subject")
