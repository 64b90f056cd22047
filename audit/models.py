"""The audit trail: events shaped like Kubernetes ``audit.k8s.io/v1`` Events, in a hash chain.

Every table here is append-only.  Rows are written only by :mod:`audit.chain` (through the
recorder); on PostgreSQL, triggers (migration 0002) refuse UPDATE, DELETE and TRUNCATE, and
the ORM guards below refuse them on every database so that a mistake fails loudly instead of
breaking the chain.  The only deletion path is retention (``manage.py prune_audit``), which
removes a verified, archived prefix of the chain behind a signed :class:`Checkpoint`.

Sessions are derived, not maintained: a :class:`Session` row is immutable (who, where, when it
started) and its end and event count are computed from its events, so no audit table ever
needs an UPDATE.
"""

import uuid

from django.db import models
from django.db.models import Count, Max

from audit.frames import render


class AppendOnlyError(Exception):
    """An attempt to change or delete an audit row through the ORM."""


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only")

    def delete(self):
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only")


class AppendOnlyModel(models.Model):
    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError(f"{type(self).__name__} rows are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError(f"{type(self).__name__} rows are append-only")


class Stage(models.TextChoices):
    REQUEST_RECEIVED = "RequestReceived"
    RESPONSE_STARTED = "ResponseStarted"
    RESPONSE_COMPLETE = "ResponseComplete"
    PANIC = "Panic"


class Transport(models.TextChoices):
    HTTP = "http"
    WEBSOCKET = "websocket"
    SPDY = "spdy"


class SessionQuerySet(AppendOnlyQuerySet):
    def with_activity(self):
        """Annotate ``event_count`` and ``ended_at`` (the last event's stage timestamp)."""
        return self.annotate(event_count=Count("events"), ended_at=Max("events__stage_timestamp"))


class Session(AppendOnlyModel):
    """One agent's run of requests against one connection.

    Grouping (audit.chain.SessionResolver): same principal (issuer + subject) and connection,
    and the same ``Kubectl-Session`` header when the client sends one; without the header, a
    pause longer than ``AIRLOCK_AUDIT_SESSION_GAP_MINUTES`` starts a new session.
    """

    session_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    connection = models.CharField(max_length=63)
    user_username = models.TextField(blank=True)
    user_uid = models.TextField(blank=True, help_text="The principal's subject.")
    user_issuer = models.TextField(blank=True)
    kubectl_session = models.CharField(max_length=128, blank=True)
    started_at = models.DateTimeField()

    objects = SessionQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            models.Index(
                fields=["user_issuer", "user_uid", "connection", "kubectl_session", "-started_at"],
                name="audit_session_key",
            ),
        ]

    def __str__(self):
        return f"{self.user_username or self.user_uid} on {self.connection} from {self.started_at:%Y-%m-%d %H:%M:%S}"


class AuditEvent(AppendOnlyModel):
    """One stage of one request; ``hash = SHA-256(prev_hash || JCS(document))`` (audit.document).

    ``mac`` is an HMAC of ``hash`` under the audit key ``key_id`` (audit.keys), so a database
    writer who recomputes the hashes cannot recompute the MACs.  Events written before audit
    keys existed have neither (see verify_chain's legacy rule).

    A mutating request has two rows: ``RequestReceived``, committed before the gateway
    forwards it, and ``ResponseComplete``.  Every other request has one completion row.
    """

    seq = models.BigIntegerField(unique=True, help_text="Position in the chain: 1, 2, 3, ... without gaps.")
    # Looked up through audit_event_one_row_per_stage (audit_id, stage): a second index on audit_id
    # alone only made every append maintain one more B-tree.
    audit_id = models.UUIDField()
    stage = models.CharField(max_length=24, choices=Stage.choices)
    request_received_timestamp = models.DateTimeField(db_index=True)
    stage_timestamp = models.DateTimeField()

    user_username = models.TextField(blank=True)
    user_uid = models.TextField(blank=True)
    user_groups = models.JSONField(default=list, blank=True)
    user_issuer = models.TextField(blank=True)
    # A trusted proxy that asserted the user above with Impersonate-User/-Group (identity.proxies);
    # empty when the token's holder is the user.
    proxy_username = models.TextField(blank=True)
    proxy_uid = models.TextField(blank=True, help_text="The proxy's subject.")
    proxy_issuer = models.TextField(blank=True)

    verb = models.CharField(max_length=64, blank=True)
    object_resource = models.TextField(blank=True)
    object_subresource = models.TextField(blank=True)
    object_namespace = models.TextField(blank=True)
    object_name = models.TextField(blank=True)
    object_api_group = models.TextField(blank=True)
    object_api_version = models.TextField(blank=True)
    request_uri = models.TextField(blank=True)
    source_ips = models.JSONField(default=list, blank=True)
    user_agent = models.TextField(blank=True)

    response_code = models.IntegerField(null=True, blank=True)
    response_reason = models.TextField(blank=True)
    response_message = models.TextField(blank=True)

    connection = models.CharField(max_length=63, blank=True)
    decision_effect = models.CharField(max_length=16, blank=True)
    decision_rule_id = models.BigIntegerField(null=True, blank=True)
    decision_rule_name = models.TextField(blank=True)
    decision_reason = models.TextField(blank=True)
    review_id = models.CharField(max_length=64, null=True, blank=True)
    lease_id = models.CharField(max_length=64, null=True, blank=True)
    parent_id = models.CharField(
        max_length=64, null=True, blank=True,
        help_text="The audit id of the MCP tool call that caused this request (mcpfront); empty for kubectl traffic.",
    )
    mcp_tool = models.CharField(max_length=128, blank=True, help_text="An MCP tool call's event: the tool's name.")
    masking_counts = models.JSONField(default=dict, blank=True, help_text="Masked values by kind.")
    latency_ms = models.FloatField(null=True, blank=True)
    bytes_in = models.BigIntegerField(default=0)
    bytes_out = models.BigIntegerField(default=0)
    transport = models.CharField(max_length=16, choices=Transport.choices, default=Transport.HTTP)
    kubectl_session = models.CharField(max_length=128, blank=True)
    dry_run = models.BooleanField(
        default=False, help_text="kube-apiserver ran the request as a dry run (dryRun=All): it changed nothing."
    )
    session = models.ForeignKey(  # indexed by audit_event_session_time (session, stage_timestamp)
        Session, null=True, blank=True, on_delete=models.PROTECT, related_name="events", db_index=False
    )

    # Masked by the caller; capped here (audit.events).  *_size is the size before the cap.
    request_body = models.BinaryField(default=b"", blank=True)
    request_body_size = models.BigIntegerField(default=0)
    response_body = models.BinaryField(default=b"", blank=True)
    response_body_size = models.BigIntegerField(default=0)
    clamped = models.JSONField(
        default=list, blank=True, help_text="Fields whose values arrived out of range or malformed and were clamped."
    )

    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)  # unique: audit_event_hash_unique (no LIKE index beside it)
    key_id = models.CharField(max_length=16, blank=True)
    mac = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["seq"]
        constraints = [
            models.UniqueConstraint(fields=["audit_id", "stage"], name="audit_event_one_row_per_stage"),
            models.UniqueConstraint(fields=["hash"], name="audit_event_hash_unique"),
        ]
        indexes = [
            models.Index(fields=["session", "stage_timestamp"], name="audit_event_session_time"),
            models.Index(fields=["connection", "-seq"], name="audit_event_connection"),
        ]

    def __str__(self):
        return f"#{self.seq} {self.verb} {self.request_uri[:80]} ({self.stage})"

    @property
    def request_body_truncated(self) -> bool:
        return self.request_body_size > len(self.request_body)

    @property
    def response_body_truncated(self) -> bool:
        return self.response_body_size > len(self.response_body)


class RecordingKind(models.TextChoices):
    EXEC = "exec"
    ATTACH = "attach"
    PORTFORWARD = "portforward"


class Recording(AppendOnlyModel):
    """What went through an exec/attach stream or a port-forward (byte counts).

    An exec/attach stream is kept as its frames (``frames``, audit/frames.py) and rendered to
    asciicast v2 when read (``asciicast``); recordings made before that keep their asciicast
    text (``cast_text``, the column ``asciicast``).  Written in the same transaction as its
    completion event, whose hash covers every field here (the cast or the frames through their
    SHA-256), so an edited or deleted recording breaks the chain.
    """

    event = models.OneToOneField(AuditEvent, on_delete=models.PROTECT, related_name="recording")
    session = models.ForeignKey(
        Session, null=True, blank=True, on_delete=models.PROTECT, related_name="recordings"
    )
    kind = models.CharField(max_length=16, choices=RecordingKind.choices)
    namespace = models.TextField(blank=True)
    pod = models.TextField(blank=True)
    container = models.TextField(blank=True)
    command = models.JSONField(default=list, blank=True)
    cast_text = models.TextField(blank=True, db_column="asciicast",
                                 help_text="asciicast v2, masked, size-capped (recordings made before frames).")
    frames = models.BinaryField(blank=True, default=b"",
                                help_text="The stream's masked frames with their times (audit/frames.py), size-capped.")
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    duration_s = models.FloatField(default=0)
    truncated = models.BooleanField(default=False)
    ports = models.JSONField(default=list, blank=True)
    bytes_to_pod = models.BigIntegerField(default=0)
    bytes_from_pod = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-event__seq"]

    def __str__(self):
        return f"{self.kind} {self.namespace}/{self.pod}"

    @property
    def asciicast(self) -> str:
        """The asciicast v2 text: rendered from the frames (once per instance), or as stored."""
        if not self.frames:
            return self.cast_text
        cast = self.__dict__.get("_rendered_cast")
        if cast is None:
            cast = self.__dict__["_rendered_cast"] = render(bytes(self.frames), command=self.command)
        return cast

    @asciicast.setter
    def asciicast(self, value: str) -> None:
        self.cast_text = value


class Checkpoint(AppendOnlyModel):
    """Retention removed events ``seq <= through_seq``; the chain continues from ``through_hash``.

    ``signature`` (an HMAC under the audit key ``key_id``; django.core.signing under SECRET_KEY
    for checkpoints made before audit keys, whose ``key_id`` is empty) lets verify_audit tell a
    real checkpoint from one forged by someone who can write to the database but has no key.
    """

    through_seq = models.BigIntegerField(unique=True)
    through_hash = models.CharField(max_length=64)
    events_pruned = models.BigIntegerField()
    archive_sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    signature = models.TextField()
    key_id = models.CharField(max_length=16, blank=True)

    class Meta:
        ordering = ["through_seq"]

    def __str__(self):
        return f"checkpoint through #{self.through_seq}"


class AnchorReason(models.TextChoices):
    SCHEDULE = "schedule"
    SHUTDOWN = "shutdown"
    MANUAL = "manual"
    LEGACY = "legacy"


class Anchor(AppendOnlyModel):
    """A signed statement "at ``created_at`` the chain ended at ``seq`` with ``hash``" (audit.anchors).

    Made by the beat task and at gateway shutdown, and appended to AIRLOCK_AUDIT_ANCHOR_FILE
    outside the database: deleting events an anchor there covers shows as truncation.
    ``seq`` is also the number of events ever appended (seq has no gaps and starts at 1).
    """

    seq = models.BigIntegerField(db_index=True)
    hash = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    reason = models.CharField(max_length=16, choices=AnchorReason.choices)
    key_id = models.CharField(max_length=16)
    mac = models.CharField(max_length=64)

    class Meta:
        ordering = ["seq", "id"]

    def __str__(self):
        return f"anchor at #{self.seq} ({self.reason})"
