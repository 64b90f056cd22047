"""Reviews of held requests and just-in-time leases, with their full history.

A :class:`Review` is created when a request matches a ``review`` rule; its
state lives here (not in a gateway process), so any gateway process can
release the held request and a client that retries after a restart is matched
to the same review (see :mod:`approvals.fingerprint`).  A :class:`Lease`
grants a principal time-boxed access to rules that require one.  Every step of
either is appended to :class:`ReviewEvent` / :class:`LeaseEvent` and handed to
the audit hook (:mod:`approvals.history`).
"""

from django.conf import settings
from django.db import models

from masking.tokens import is_token_request


class ReviewState(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    DENIED = "denied", "Denied"
    EXPIRED = "expired", "Expired"


class Scope(models.TextChoices):
    ONCE = "once", "Once: this exact request"
    WINDOW = "window", "Time window: the same verb, resource, namespace and name, any body or query"


class BodyState(models.TextChoices):
    NONE = "none", "No body"
    STORED = "stored", "Stored (secret values masked)"
    WITHHELD = "withheld", "Withheld (too large or not text)"
    UNKNOWN = "unknown", "Not seen by the gateway at hold time"


class PreviewState(models.TextChoices):
    NONE = "none", "Not needed or not started"
    PENDING = "pending", "Asking the cluster"
    DONE = "done", "Done"


class Review(models.Model):
    """One held request (and its identical retries) waiting for, or carrying, a human decision."""

    connection = models.CharField(max_length=63, db_index=True)
    rule_id = models.BigIntegerField(null=True, blank=True)
    rule_name = models.CharField(max_length=63)
    principal_subject = models.TextField()
    principal_username = models.TextField()
    principal_issuer = models.TextField(blank=True)
    principal_groups = models.JSONField(default=list, blank=True)
    # The trusted proxy that asserted the principal (Impersonate-User/-Group, identity.proxies); empty: none.
    proxy_username = models.TextField(blank=True)
    proxy_subject = models.TextField(blank=True)
    proxy_issuer = models.TextField(blank=True)
    method = models.CharField(max_length=16)
    transport = models.CharField(max_length=16, default="http")
    verb = models.CharField(max_length=32)
    api_group = models.CharField(max_length=253, blank=True)
    api_version = models.CharField(max_length=64, blank=True)
    resource = models.CharField(max_length=253, blank=True)
    subresource = models.CharField(max_length=253, blank=True)
    namespace = models.CharField(max_length=253, blank=True)
    name = models.CharField(max_length=253, blank=True)
    path = models.TextField(help_text="The request path as forwarded to the cluster.")
    query = models.TextField(
        blank=True, help_text="The query as forwarded, in order, with exec command words masked like the audit trail.",
    )
    headers = models.JSONField(
        default=list, blank=True, help_text="The forwarded headers that change the effect (Content-Type, ...).",
    )
    description = models.TextField(help_text="One line: verb, resource, name, namespace.")
    dry_run_note = models.TextField(
        blank=True, help_text="Why a request that asks for a dry run is held as the change itself (kube.dryrun).",
    )
    origin = models.CharField(
        max_length=160, blank=True,
        help_text='Sent from inside Airlock on the agent\'s behalf: "mcp: <tool>" for an MCP tool call; empty for kubectl.',
    )
    body = models.TextField(blank=True, help_text="The request body with secret values masked.")
    body_state = models.CharField(max_length=16, choices=BodyState.choices, default=BodyState.NONE)
    body_sha256 = models.CharField(max_length=64, blank=True)
    preview_state = models.CharField(max_length=16, choices=PreviewState.choices, default=PreviewState.NONE)
    preview_summary = models.TextField(blank=True)
    preview_diff = models.TextField(blank=True, help_text="Current object against the dry-run result, masked.")
    preview_error = models.TextField(blank=True)
    window_key = models.CharField(
        max_length=64, blank=True,
        help_text="What a window approval covers: connection, principal, verb, API group, resource, subresource, "
                  "namespace, name. Empty: the request names no single object, only a once approval is possible.",
    )
    exact = models.CharField(
        max_length=64, db_index=True,
        help_text="What a once approval covers: connection, principal, method, transport, path, raw query, "
                  "effect headers, body hash (approvals.fingerprint).",
    )
    audit_id = models.CharField(max_length=64, blank=True)
    min_approvals = models.PositiveSmallIntegerField(default=1)
    reviewer_groups = models.JSONField(default=list, blank=True)
    state = models.CharField(max_length=16, choices=ReviewState.choices, default=ReviewState.PENDING, db_index=True)
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.ONCE)
    unmask = models.BooleanField(default=False, help_text="The reviewers allowed secret values in the response.")
    release_token = models.BooleanField(
        default=False,
        help_text="A ServiceAccount token request: every approver gave the agent the token. Otherwise the approved "
                  "request is not sent to the cluster and no token is minted.",
    )
    reason = models.TextField(blank=True, help_text="The deciding reviewer's reason.")
    decided_by = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    valid_until = models.DateTimeField(
        null=True, blank=True,
        help_text="Approved: the approval may be used until then (once) or covers the window key until then (window).",
    )
    consumed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("decide_review", "Can approve or deny held requests")]
        indexes = [models.Index(fields=["state", "window_key"], name="approvals_review_state_window")]

    def __str__(self):
        return f"review {self.pk}: {self.description}"

    @property
    def is_token_request(self) -> bool:
        """``create token``: the reviewer chooses whether the agent receives the minted token."""
        return is_token_request(self)


class ReviewVote(models.Model):
    """One reviewer's decision; a review is approved once ``min_approvals`` distinct reviewers approved."""

    review = models.ForeignKey(Review, on_delete=models.CASCADE, related_name="votes")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="review_votes")
    reviewer_name = models.CharField(max_length=150)
    approve = models.BooleanField()
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.ONCE)
    window_seconds = models.PositiveIntegerField(null=True, blank=True)
    unmask = models.BooleanField(default=False)
    release_token = models.BooleanField(default=False)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["review", "reviewer"], name="approvals_one_vote_per_reviewer")]


class ReviewEventKind(models.TextChoices):
    REQUESTED = "requested", "Asked"
    RETRIED = "retried", "Asked again (identical request)"
    APPROVAL = "approval", "Approved by a reviewer (more approvals needed)"
    APPROVED = "approved", "Approved"
    DENIED = "denied", "Denied"
    USED = "used", "Approval used"
    TIMED_OUT = "timed_out", "Hold timed out (review still pending)"
    EXPIRED = "expired", "Expired"


class HistoryEntry(models.Model):
    """One step of an append-only history: who did it, why, when."""

    actor = models.TextField(blank=True)
    reason = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True
        ordering = ["at", "id"]


class ReviewEvent(HistoryEntry):
    """Append-only history of a review."""

    review = models.ForeignKey(Review, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=16, choices=ReviewEventKind.choices)


class LeaseState(models.TextChoices):
    REQUESTED = "requested", "Requested"
    GRANTED = "granted", "Granted"
    DENIED = "denied", "Denied"
    REVOKED = "revoked", "Revoked"
    EXPIRED = "expired", "Expired"


class Lease(models.Model):
    """Time-boxed access for a principal (subject or group) to a connection's lease-gated rules.

    Active means: state granted, ``starts_at <= now < expires_at``.  The
    gateway checks ``expires_at`` itself on every request, so expiry is exact;
    the state change to ``expired`` (by the sweeper) only triggers side
    effects such as ending live sessions.
    """

    connection = models.CharField(max_length=63, db_index=True)
    subject = models.TextField(blank=True, help_text="The principal's subject or username.")
    group = models.TextField(blank=True, help_text="Or: every member of this IdP group.")
    issuer = models.TextField(blank=True, help_text="Only tokens from this issuer; empty: any trusted issuer.")
    rules = models.JSONField(
        default=list, blank=True, help_text="Names of the lease-gated rules covered; empty: all of the connection's."
    )
    duration_seconds = models.PositiveIntegerField()
    reason = models.TextField()
    state = models.CharField(max_length=16, choices=LeaseState.choices, default=LeaseState.REQUESTED, db_index=True)
    requested_by = models.TextField()
    requested_at = models.DateTimeField(auto_now_add=True)
    granted_by = models.TextField(blank=True)
    granted_at = models.DateTimeField(null=True, blank=True)
    starts_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    decided_reason = models.TextField(blank=True)
    revoked_by = models.TextField(blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]
        permissions = [
            ("grant_lease", "Can grant, deny and revoke leases"),
            ("request_lease", "Can request leases on behalf of agents"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(subject="") & ~models.Q(group="")) | (~models.Q(subject="") & models.Q(group="")),
                name="approvals_lease_subject_xor_group",
            ),
        ]

    def __str__(self):
        return f"lease {self.pk} on {self.connection} for {self.holder}"

    @property
    def holder(self) -> str:
        return self.subject or f"group {self.group}"


class LeaseEventKind(models.TextChoices):
    REQUESTED = "requested", "Requested"
    GRANTED = "granted", "Granted"
    DENIED = "denied", "Denied"
    REVOKED = "revoked", "Revoked"
    EXPIRED = "expired", "Expired"


class LeaseEvent(HistoryEntry):
    """Append-only history of a lease."""

    lease = models.ForeignKey(Lease, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=16, choices=LeaseEventKind.choices)


class ReviewerProfile(models.Model):
    """What the IdP said about a dashboard user at their last OIDC login."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reviewer_profile")
    issuer = models.TextField()
    subject = models.TextField()
    idp_groups = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="approvals_profile_identity")]
