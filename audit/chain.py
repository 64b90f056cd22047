"""Appending to, verifying and pruning the hash chain (synchronous; the recorder runs it off-loop).

Appends are serialized: inside one transaction the writer takes the chain lock
(``pg_advisory_xact_lock`` on PostgreSQL; on SQLite a write statement that takes the database's
write lock up front, so two writers queue on the busy timeout instead of deadlocking on a lock
upgrade), reads the head, assigns ``seq = head + 1, head + 2, ...`` and commits.  A rolled-back
append consumes no sequence number, so ``seq`` has no gaps.
"""

import hashlib
import json
import logging
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta

import rfc8785
from django.core import signing
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError, models, transaction

from audit.document import GENESIS_HASH, chain_hash, event_document, timestamp
from audit.events import PreparedEvent
from audit.models import AuditEvent, Checkpoint, Recording, Session

log = logging.getLogger(__name__)

# Arbitrary constant naming the chain's advisory lock ("Airlock" in ASCII).
ADVISORY_LOCK_KEY = 0x4169726C6F636B
CHECKPOINT_SALT = "airlock.audit.checkpoint"
SQLITE_LOCK_TIMEOUT = 20.0


class _NeedsReference(Exception):
    """The value holds something only the reference RFC 8785 encoder formats correctly."""


_SAFE_INT = 2**53 - 1


def _json_ready(value):
    """``value`` with integral floats as ints, or _NeedsReference.

    For such values ``json.dumps(sort_keys, compact, ensure_ascii=False)`` is RFC 8785: the
    string escapes are the same table, ASCII keys sort the same by code point as by UTF-16, and
    Python's repr of a float in [1e-4, 1e16) is ECMAScript's Number.toString.
    """
    if isinstance(value, dict):
        ready = {}
        for key, item in value.items():
            if not isinstance(key, str) or not key.isascii():
                raise _NeedsReference
            ready[key] = _json_ready(item)
        return ready
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        if -_SAFE_INT <= value <= _SAFE_INT:
            return value
        raise _NeedsReference
    if isinstance(value, float):
        if value.is_integer():
            if abs(value) <= _SAFE_INT:
                return int(value)
        elif 1e-4 <= abs(value) < 1e16:
            return value
    raise _NeedsReference


def canonical_json(document: dict) -> bytes:
    """RFC 8785 bytes of ``document``: the C json encoder when that is exact, else the rfc8785 package.

    The pure-Python rfc8785 encoder was a sixth of the audit writer's time; chains written this
    way verify with :func:`audit.document.chain_hash` (the reference) unchanged.
    """
    try:
        return json.dumps(
            _json_ready(document), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (_NeedsReference, UnicodeEncodeError):
        return rfc8785.dumps(document)


def fast_chain_hash(prev_hash: str, document: dict) -> str:
    """:func:`audit.document.chain_hash` through :func:`canonical_json`."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_json(document)).hexdigest()


_PASS_THROUGH = (
    (models.CharField, str), (models.TextField, str), (models.IntegerField, int),
    (models.BigIntegerField, int), (models.FloatField, float),
)


def _preparer(field):
    """How one column's value reaches the driver: as is when Django would not change it."""
    for field_class, value_type in _PASS_THROUGH:
        if type(field) is field_class:
            def prepare(value, connection, field=field, value_type=value_type):
                if value is None or (type(value) is value_type):
                    return value
                return field.get_db_prep_save(value, connection)
            return prepare
    return lambda value, connection, field=field: field.get_db_prep_save(value, connection)


class _EventInsert:
    """One INSERT of many events through executemany, without bulk_create's per-value ORM work.

    Django's bulk_create spent most of the audit writer's time compiling the statement and
    preparing each of the ~40 values of each row through the field API; plain strings and
    numbers need none of that, everything else still goes through ``get_db_prep_save``.
    """

    def __init__(self):
        self.fields = [f for f in AuditEvent._meta.concrete_fields if not f.primary_key]
        self.preparers = [(f.attname, _preparer(f)) for f in self.fields]
        self.sql: dict[str, str] = {}  # by database vendor (quoting differs)

    def __call__(self, events: list) -> None:
        connection = transaction.get_connection()
        sql = self.sql.get(connection.vendor)
        if sql is None:
            quote = connection.ops.quote_name
            columns = ", ".join(quote(f.column) for f in self.fields)
            values = ", ".join(["%s"] * len(self.fields))
            sql = f"INSERT INTO {quote(AuditEvent._meta.db_table)} ({columns}) VALUES ({values})"
            self.sql[connection.vendor] = sql
        rows = [
            [prepare(getattr(event, attname), connection) for attname, prepare in self.preparers]
            for event in events
        ]
        with connection.cursor() as cursor:
            cursor.executemany(sql, rows)
        ids = dict(
            AuditEvent.objects.filter(seq__gte=events[0].seq, seq__lte=events[-1].seq).values_list("seq", "id")
        )
        for event in events:
            event.id = ids[event.seq]
            event._state.adding = False
            event._state.db = connection.alias


_insert_events = _EventInsert()


def lock_chain() -> None:
    """Serialize appends until the surrounding transaction ends."""
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        raise RuntimeError("lock_chain() must run inside transaction.atomic()")
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])
        elif connection.vendor == "sqlite":
            _sqlite_write_lock(cursor)
        else:
            raise ImproperlyConfigured("the audit chain supports PostgreSQL and SQLite")


def _sqlite_write_lock(cursor) -> None:
    """A statement that deletes nothing but makes SQLite take the write lock now.

    A file database waits on its busy timeout; a shared-cache in-memory database (Django's
    test database) answers "table is locked" at once, so wait here the same way.
    """
    deadline = time.monotonic() + SQLITE_LOCK_TIMEOUT
    while True:
        try:
            with transaction.atomic():
                cursor.execute(f"DELETE FROM {AuditEvent._meta.db_table} WHERE 0")
            return
        except OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def chain_head() -> tuple[int, str]:
    """(seq, hash) of the newest event, or of the newest checkpoint when everything was pruned."""
    last = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
    if last is not None:
        return last
    checkpoint = Checkpoint.objects.order_by("-through_seq").values_list("through_seq", "through_hash").first()
    return checkpoint or (0, GENESIS_HASH)


def recording_of(event):
    try:
        return event.recording
    except Recording.DoesNotExist:
        return None


def document_of(event) -> dict:
    """The canonical document of a stored event (session and recording as stored).

    A session row that has vanished counts as no session, so the hash no longer matches.
    """
    try:
        session = event.session
    except Session.DoesNotExist:
        session = None
    session_id = str(session.session_id) if session is not None else None
    return event_document(event, session_id, recording_of(event))


class SessionResolver:
    """Finds or opens the Session for each event of one append (runs under the chain lock)."""

    def __init__(self, gap: timedelta):
        self.gap = gap
        self.latest: dict[tuple, list] = {}  # key -> [session, last activity]
        self.by_audit_id: dict = {}

    def remember(self, audit_id, session: Session | None) -> None:
        self.by_audit_id[audit_id] = session

    def _load(self, key: tuple):
        issuer, uid, connection, kubectl_session = key
        session = (
            Session.objects.filter(
                user_issuer=issuer, user_uid=uid, connection=connection, kubectl_session=kubectl_session
            )
            .order_by("-started_at", "-id")
            .first()
        )
        if session is None:
            return None
        last = (
            AuditEvent.objects.filter(session=session)
            .order_by("-stage_timestamp")
            .values_list("stage_timestamp", flat=True)
            .first()
        )
        return [session, last or session.started_at]

    def resolve(self, fields: dict) -> Session | None:
        if fields["audit_id"] in self.by_audit_id:
            return self.by_audit_id[fields["audit_id"]]
        if not (fields["user_uid"] or fields["user_issuer"]):
            return None  # refused before authentication: no principal to group by
        key = (fields["user_issuer"], fields["user_uid"], fields["connection"], fields["kubectl_session"])
        entry = self.latest.get(key) or self._load(key)
        received = fields["request_received_timestamp"]
        if entry is not None and (key[3] or received - entry[1] <= self.gap):
            entry[1] = max(entry[1], fields["stage_timestamp"])
            self.latest[key] = entry
            return entry[0]
        session = Session.objects.create(
            connection=fields["connection"],
            user_username=fields["user_username"],
            user_uid=fields["user_uid"],
            user_issuer=fields["user_issuer"],
            kubectl_session=fields["kubectl_session"],
            started_at=received,
        )
        self.latest[key] = [session, fields["stage_timestamp"]]
        return session


def append(prepared: list[PreparedEvent], *, session_gap: timedelta) -> list[AuditEvent]:
    """Append events (and their recordings) to the chain in one transaction; returns the rows.

    A (audit_id, stage) that is already stored is skipped, so a batch retried after an
    ambiguous commit failure cannot duplicate events.
    """
    with transaction.atomic():
        lock_chain()
        seq, prev_hash = chain_head()
        resolver = SessionResolver(session_gap)
        rows = list(
            AuditEvent.objects.filter(audit_id__in={p.audit_id for p in prepared}).values_list(
                "audit_id", "stage", "session_id"
            )
        )
        stored = {(audit_id, stage) for audit_id, stage, _ in rows}
        known = Session.objects.in_bulk({pk for _, _, pk in rows if pk is not None})
        for audit_id, _, session_pk in rows:
            resolver.remember(audit_id, known.get(session_pk))
        events, recordings = [], []
        for item in prepared:
            key = (item.audit_id, item.stage)
            if key in stored:
                log.warning("audit event %s (%s) is already recorded; skipped", item.audit_id, item.stage)
                continue
            stored.add(key)
            session = resolver.resolve(item.fields)
            resolver.remember(item.audit_id, session)
            seq += 1
            event = AuditEvent(**item.fields, seq=seq, session=session, prev_hash=prev_hash)
            recording = None
            if item.recording is not None:
                recording = Recording(**item.recording, session=session)
                recordings.append((recording, event))
            session_id = str(session.session_id) if session is not None else None
            event.hash = fast_chain_hash(prev_hash, event_document(event, session_id, recording))
            prev_hash = event.hash
            events.append(event)
        if events:
            _insert_events(events)
        for recording, event in recordings:
            recording.event = event
        Recording.objects.bulk_create([r for r, _ in recordings])
    return events


# -- verification -------------------------------------------------------------------------------


@dataclass
class Verification:
    """Outcome of walking the chain; ``problem`` is None when it is intact."""

    events: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head_hash: str = GENESIS_HASH
    start: str = "genesis"
    problem: str | None = None
    bad_seq: int | None = None
    bad_audit_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def fail(self, message: str, event=None) -> "Verification":
        self.problem = message
        if event is not None:
            self.bad_seq, self.bad_audit_id = event.seq, str(event.audit_id)
        return self

    def summary(self) -> str:
        if not self.ok:
            where = f"event #{self.bad_seq} (audit ID {self.bad_audit_id}): " if self.bad_seq is not None else ""
            return f"audit chain BROKEN at {where}{self.problem}"
        if not self.events:
            return f"audit chain intact: no events (starting from {self.start})"
        return (
            f"audit chain intact: {self.events} event{'' if self.events == 1 else 's'} "
            f"#{self.first_seq}..#{self.last_seq}, "
            f"starting from {self.start}, head hash {self.head_hash}"
        )


def _checkpoint_payload(checkpoint: Checkpoint) -> str:
    return rfc8785.dumps({
        "throughSeq": checkpoint.through_seq,
        "throughHash": checkpoint.through_hash,
        "eventsPruned": checkpoint.events_pruned,
        "archiveSha256": checkpoint.archive_sha256,
        "createdAt": timestamp(checkpoint.created_at),
    }).decode("ascii")


def _signer() -> signing.Signer:
    return signing.Signer(salt=CHECKPOINT_SALT, algorithm="sha256")


def sign_checkpoint(checkpoint: Checkpoint) -> str:
    signed = _signer().sign(_checkpoint_payload(checkpoint))
    return signed.rsplit(_signer().sep, 1)[1]


def checkpoint_is_genuine(checkpoint: Checkpoint) -> bool:
    payload = _checkpoint_payload(checkpoint)
    try:
        return _signer().unsign(payload + _signer().sep + checkpoint.signature) == payload
    except signing.BadSignature:
        return False


def verify_chain(*, through_seq: int | None = None, anchors: dict[int, str] | None = None,
                 chunk_size: int = 1000) -> Verification:
    """Walk events in seq order (up to ``through_seq``) and report the first inconsistency.

    ``anchors`` maps seq -> hash known from elsewhere (an export, a SIEM) and catches the one
    thing a chain alone cannot: deleting its newest events.
    """
    result = Verification()
    anchors = dict(anchors or {})
    checkpoints = list(Checkpoint.objects.order_by("through_seq"))
    for checkpoint in checkpoints:
        if not checkpoint_is_genuine(checkpoint):
            return result.fail(f"checkpoint through #{checkpoint.through_seq} has an invalid signature")
    by_seq = {c.through_seq: c for c in checkpoints}
    events = AuditEvent.objects.select_related("session", "recording").order_by("seq")
    if through_seq is not None:
        events = events.filter(seq__lte=through_seq)
    expected, prev_hash = None, GENESIS_HASH
    # Closed on every return: a server-side cursor left to the garbage collector is closed later,
    # inside whatever transaction the connection is in then, and aborts it if that cursor is gone.
    with closing(events.iterator(chunk_size=chunk_size)) as rows:
        for event in rows:
            if expected is None:
                if event.seq != 1:
                    checkpoint = by_seq.get(event.seq - 1)
                    if checkpoint is None:
                        return result.fail(f"events #1..#{event.seq - 1} are missing and no checkpoint covers them", event)
                    prev_hash = checkpoint.through_hash
                    result.start = f"checkpoint through #{checkpoint.through_seq}"
                expected = event.seq
                result.first_seq = event.seq
            if event.seq != expected:
                gap = f"#{expected}" if event.seq == expected + 1 else f"#{expected}..#{event.seq - 1}"
                return result.fail(f"the events before it ({gap}) are missing (deleted)", event)
            if event.prev_hash != prev_hash:
                return result.fail(
                    "its prev_hash does not match the previous event's hash (events reordered, replaced or deleted)",
                    event,
                )
            if chain_hash(prev_hash, document_of(event)) != event.hash:
                return result.fail("its content does not match its hash (edited)", event)
            checkpoint = by_seq.get(event.seq)
            if checkpoint is not None and checkpoint.through_hash != event.hash:
                return result.fail(f"its hash differs from the one checkpoint through #{event.seq} recorded", event)
            if event.seq in anchors and anchors.pop(event.seq) != event.hash:
                return result.fail("its hash differs from the expected anchor hash", event)
            prev_hash = event.hash
            expected += 1
            result.events += 1
            result.last_seq = event.seq
            result.head_hash = event.hash
    newest = checkpoints[-1] if checkpoints else None
    if result.first_seq is None:
        start_seq, start_hash = (newest.through_seq, newest.through_hash) if newest else (0, GENESIS_HASH)
        if newest is not None:
            result.start, result.head_hash = f"checkpoint through #{newest.through_seq}", newest.through_hash
    else:
        start_seq = result.first_seq - 1
        start_hash = by_seq[start_seq].through_hash if start_seq else GENESIS_HASH
        if through_seq is None and newest is not None and newest.through_seq > result.last_seq:
            return result.fail(
                f"events #{result.last_seq + 1}..#{newest.through_seq} are missing (a checkpoint covers them)"
            )
    for seq, digest in sorted(anchors.items()):
        if seq < start_seq:
            continue  # pruned before the oldest remaining event: nothing left to compare
        if seq == start_seq:
            if digest != start_hash:
                return result.fail(f"anchor #{seq} differs from the checkpoint the chain starts from")
            continue
        if through_seq is None or seq <= through_seq:
            return result.fail(f"anchored event #{seq} is missing (events at the end of the chain deleted)")
    return result


# -- retention ----------------------------------------------------------------------------------


def prune_boundary(cutoff: datetime) -> int | None:
    """The largest seq such that it and every earlier event were received before ``cutoff``."""
    first_kept = (
        AuditEvent.objects.filter(request_received_timestamp__gte=cutoff)
        .order_by("seq")
        .values_list("seq", flat=True)
        .first()
    )
    if first_kept is not None:
        through = first_kept - 1
    else:
        through = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
    first = AuditEvent.objects.order_by("seq").values_list("seq", flat=True).first()
    if through is None or first is None or through < first:
        return None
    return through


def prune_through(through_seq: int, *, archive_sha256: str, now: datetime) -> Checkpoint:
    """Delete events ``seq <= through_seq`` (already verified and archived) behind a checkpoint.

    The checkpoint is inserted first, in the same transaction: on PostgreSQL the append-only
    triggers let a DELETE through only in this mode (``airlock.audit_prune``) and only for
    events the newest checkpoint covers, so nothing else can be removed this way.
    """
    with transaction.atomic():
        lock_chain()
        newest = Checkpoint.objects.order_by("-through_seq").values_list("through_seq", flat=True).first()
        if newest is not None and newest >= through_seq:
            raise ValueError(f"events through #{newest} are already pruned")
        boundary = AuditEvent.objects.filter(seq=through_seq).values_list("hash", flat=True).first()
        if boundary is None:
            raise ValueError(f"event #{through_seq} does not exist")
        count = AuditEvent.objects.filter(seq__lte=through_seq).count()
        checkpoint = Checkpoint(
            through_seq=through_seq,
            through_hash=boundary,
            events_pruned=count,
            archive_sha256=archive_sha256,
            created_at=now,
        )
        checkpoint.signature = sign_checkpoint(checkpoint)
        checkpoint.save()
        connection = transaction.get_connection()
        events, recordings, sessions = (
            AuditEvent._meta.db_table, Recording._meta.db_table, Session._meta.db_table
        )
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SET LOCAL airlock.audit_prune = 'on'")
            cursor.execute(
                f"DELETE FROM {recordings} WHERE event_id IN (SELECT id FROM {events} WHERE seq <= %s)",
                [through_seq],
            )
            cursor.execute(f"DELETE FROM {events} WHERE seq <= %s", [through_seq])
            cursor.execute(
                f"DELETE FROM {sessions} WHERE NOT EXISTS (SELECT 1 FROM {events} e WHERE e.session_id = {sessions}.id)"
                f" AND NOT EXISTS (SELECT 1 FROM {recordings} r WHERE r.session_id = {sessions}.id)"
            )
    return checkpoint
