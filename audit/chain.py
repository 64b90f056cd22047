"""Appending to, anchoring, verifying and pruning the chain (synchronous; the recorder runs it off-loop).

Appends are serialized: inside one transaction the writer takes the chain lock
(``pg_advisory_xact_lock`` on PostgreSQL; on SQLite a write statement that takes the database's
write lock up front, so two writers queue on the busy timeout instead of deadlocking on a lock
upgrade), reads the head, assigns ``seq = head + 1, head + 2, ...`` and commits.  A rolled-back
append consumes no sequence number, so ``seq`` has no gaps.

Long because appending, anchoring, verifying and pruning share the chain's one lock and one
document format; verify must read exactly what append wrote.
"""

import hashlib
import json
import logging
import itertools
import operator
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from contextlib import closing, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace

import msgspec
import rfc8785
from django.conf import settings
from django.core import signing
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError, models, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from audit import anchors
from audit.document import GENESIS_HASH, chain_hash, event_document, timestamp
from audit.events import PreparedEvent
from audit.keys import CHECKPOINT_DOMAIN, keyring
from audit.models import Anchor, AuditEvent, Checkpoint, Recording, Session, Stage

log = logging.getLogger(__name__)

# Arbitrary constant naming the chain's advisory lock ("Airlock" in ASCII).
ADVISORY_LOCK_KEY = 0x4169726C6F636B
LEGACY_CHECKPOINT_SALT = "airlock.audit.checkpoint"
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
            # Strings, None, booleans and safe integers (most values) as they are, without a call each.
            kind = type(item)
            if kind is str or item is None or kind is bool or (kind is int and -_SAFE_INT <= item <= _SAFE_INT):
                ready[key] = item
            else:
                ready[key] = _json_ready(item)
        return ready
    if isinstance(value, (list, tuple)):
        return [item if type(item) is str else _json_ready(item) for item in value]
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


_ENCODER = msgspec.json.Encoder(order="sorted")
# What the bytes are checked for, found by substring search after one translate() (a regular
# expression took longer than the encoding): digits become "0", so 16 of them in a row may be an
# integer beyond 2**53 - 1 (or part of a string: done the slow way then); UTF-8 lead bytes of
# U+E000 and above, where code point order (msgspec's sort) and UTF-16 order (RFC 8785's) part,
# become "!"; everything else a space.
_CLASSES = bytes(48 if 48 <= b <= 57 else 33 if b >= 0xEE else 32 for b in range(256))
_LONG_DIGITS = b"0" * 16


def _exact_float(text: str) -> float:
    """msgspec's float ``text``, if it is what ECMAScript's Number.toString writes (see _json_ready)."""
    value = float(text)
    if text == repr(value) and not value.is_integer() and 1e-4 <= abs(value) < 1e16:
        return value
    raise _NeedsReference


_CHECKER = msgspec.json.Decoder(float_hook=_exact_float)


def _msgspec_canonical(document: dict) -> bytes:
    """RFC 8785 bytes of ``document`` by msgspec, or _NeedsReference.

    msgspec escapes every character as RFC 8785 does (checked for each code point in
    audit/tests/test_canonical.py) and sorts keys by code point, which is UTF-16 order below
    U+E000.  What is left to prove is that it wrote what RFC 8785 would of every value, without a
    pass over the document in Python: decoding the bytes must give the document back (so no
    UUID, datetime, bytes, tuple, non-string key or NaN was turned into something else), every
    float's text must be ECMAScript's, and no integer may be past 2**53 - 1.
    """
    try:
        data = _ENCODER.encode(document)
    except (TypeError, ValueError, OverflowError, UnicodeEncodeError):
        raise _NeedsReference from None
    classes = data.translate(_CLASSES)
    if _LONG_DIGITS in classes or b"!" in classes:
        raise _NeedsReference
    if _CHECKER.decode(data) != document:
        raise _NeedsReference
    return data


def canonical_json(document: dict) -> bytes:
    """RFC 8785 bytes of ``document``: msgspec when that is provably exact, else the C json
    encoder when that is, else the rfc8785 package.

    The pure-Python rfc8785 encoder was a sixth of the audit writer's time, and the pass over the
    document that makes json.dumps exact still a tenth; chains written this way verify with
    :func:`audit.document.chain_hash` (the reference) unchanged.
    """
    try:
        return _msgspec_canonical(document)
    except _NeedsReference:
        pass
    try:
        return json.dumps(
            _json_ready(document), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (_NeedsReference, UnicodeEncodeError):
        return rfc8785.dumps(document)


def fast_chain_hash(prev_hash: str, document: dict) -> str:
    """:func:`audit.document.chain_hash` through :func:`canonical_json`."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_json(document)).hexdigest()


def _json_text(value) -> str:
    """A JSON column's value as COPY sends it: PostgreSQL stores it as jsonb, so only its meaning counts.
    msgspec instead of json.dumps, which builds its encoder anew on every call: four columns per event."""
    return msgspec.json.encode(value).decode("utf-8")


_PASS_THROUGH = (
    (models.CharField, str), (models.TextField, str), (models.IntegerField, int),
    (models.BigIntegerField, int), (models.FloatField, float),
)
_CHAINED = ("seq", "session_id", "prev_hash", "hash", "key_id", "mac")  # known only under the chain lock


def _preparer(field, vendor: str):
    """How one column's value reaches the driver: as is when Django would not change it.

    On PostgreSQL the rows go through COPY (text format): a JSON value is sent as its text,
    timestamps, UUIDs, bytes and booleans as psycopg adapts them.
    """
    if vendor == "postgresql":
        if isinstance(field, models.JSONField):
            return lambda value, connection: None if value is None else _json_text(value)
        if isinstance(field, (models.DateTimeField, models.UUIDField, models.BinaryField, models.BooleanField,
                              models.ForeignKey)) or type(field) in {c for c, _ in _PASS_THROUGH}:
            return lambda value, connection: value
    for field_class, value_type in _PASS_THROUGH:
        if type(field) is field_class:
            def prepare(value, connection, field=field, value_type=value_type):
                if value is None or (type(value) is value_type):
                    return value
                return field.get_db_prep_save(value, connection)
            return prepare
    return lambda value, connection, field=field: field.get_db_prep_save(value, connection)


class _EventInsert:
    """One INSERT of many events without bulk_create's per-value ORM work: COPY on PostgreSQL,
    executemany elsewhere.

    Django's bulk_create spent most of the audit writer's time compiling the statement and
    preparing each of the ~40 values of each row through the field API; plain strings and
    numbers need none of that.  The row values that do not depend on the chain are prepared
    before the chain lock is taken (:meth:`row`); under it only :data:`_CHAINED` are filled in.
    """

    def __init__(self):
        fields = [f for f in AuditEvent._meta.concrete_fields if not f.primary_key]
        by_attname = {f.attname: f for f in fields}
        self.fields = [f for f in fields if f.attname not in _CHAINED] + [by_attname[name] for name in _CHAINED]
        self.preparers: dict[str, list] = {}
        self.defaults: dict | None = None
        unchained = self.fields[: -len(_CHAINED)]
        self._attnames = frozenset(f.attname for f in unchained)
        self._take = operator.itemgetter(*(f.attname for f in unchained))
        self._json = [i for i, f in enumerate(unchained) if isinstance(f, models.JSONField)]
        self._audit_id = [f.attname for f in unchained].index("audit_id")
        self.sql: dict[str, str] = {}  # by database vendor (quoting differs)

    def row(self, fields: dict, connection, audit_text: str) -> list:
        """The values of one event's columns, the chained ones (the last six) still to be set
        (``audit_text``: the audit id's text, which COPY sends)."""
        if connection.vendor == "postgresql" and fields.keys() >= self._attnames:
            row = list(self._take(fields))  # as they are, but JSON and the audit id as their text
            for index in self._json:
                value = row[index]
                row[index] = None if value is None else _json_text(value)
            row[self._audit_id] = audit_text
            row += [None] * len(_CHAINED)
            return row
        preparers = self.preparers.get(connection.vendor)
        if preparers is None:
            preparers = self.preparers[connection.vendor] = [
                (f.attname, f, _preparer(f, connection.vendor)) for f in self.fields[: -len(_CHAINED)]]
        return [prepare(fields[attname] if attname in fields else field.get_default(), connection)
                for attname, field, prepare in preparers] + [None] * len(_CHAINED)

    def __call__(self, rows: list[list], cursor) -> None:
        """Insert ``rows`` through ``cursor`` (a Django cursor of the append's connection)."""
        connection = cursor.db
        sql = self.sql.get(connection.vendor)
        if sql is None:  # made once: quoting the ~50 column names was a tenth of a small append's CPU
            quote = connection.ops.quote_name
            columns = ", ".join(quote(f.column) for f in self.fields)
            table = quote(AuditEvent._meta.db_table)
            if connection.vendor == "postgresql":
                sql = f"COPY {table} ({columns}) FROM STDIN"
            else:
                sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(self.fields))})"
            self.sql[connection.vendor] = sql
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(sql) as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            cursor.executemany(sql, rows)


_insert_events = _EventInsert()

# The document is built with this seq and no session before the chain lock is taken; under the
# lock the real seq and session id are put in its canonical bytes, where RFC 8785's key order puts
# the two side by side (no other key of the "airlock" object starts with "se").
_UNSET_SEQ = -1
_SPLICE = b'"seq":-1,"sessionId":null'


def _complete(fields: dict) -> dict:
    """An event's field values with the model's defaults for any it lacks (a journal of an older version)."""
    if _insert_events.defaults is None:
        _insert_events.defaults = {f.attname: f.get_default() for f in _insert_events.fields[: -len(_CHAINED)]}
    if fields.keys() >= _insert_events.defaults.keys():
        return fields
    return {**_insert_events.defaults, **fields}


def _integral_as_int(value):
    """An integral float of the safe range as the int RFC 8785 writes it as ("1", not msgspec's
    "1.0"), so that a document with one (a latency of exactly 1 ms) keeps the msgspec path; its
    canonical bytes, and so its hash, are the same either way."""
    if type(value) is float and value.is_integer() and abs(value) <= _SAFE_INT:
        return int(value)
    return value


class _Staged:
    """One event made ready before the chain lock: its row values and its canonical document
    split around seq and sessionId (None when the split is not certain: then it is built whole
    under the lock), and its audit id's text, made once for the document, the row and the read
    under the lock (UUID.__str__ three times was 3% of the writer)."""

    __slots__ = ("prepared", "audit_text", "row", "head", "tail")

    def __init__(self, prepared: PreparedEvent, connection):
        self.prepared = prepared
        self.audit_text = str(prepared.fields["audit_id"])
        self.row = _insert_events.row(prepared.fields, connection, self.audit_text)
        view = SimpleNamespace(**_complete(prepared.fields), seq=_UNSET_SEQ)
        view.audit_id = self.audit_text  # the document has str() of it: the same text
        view.latency_ms = _integral_as_int(view.latency_ms)
        recording = None
        if prepared.recording is not None:
            recording = SimpleNamespace(**prepared.recording)
            recording.duration_s = _integral_as_int(recording.duration_s)
        data = canonical_json(event_document(view, None, recording))
        self.head = self.tail = None
        if data.count(_SPLICE) == 1:
            self.head, _, self.tail = data.partition(_SPLICE)

    def chain_hash(self, prev_hash: str, seq: int, session_id: str | None) -> str:
        if self.head is None:
            view = SimpleNamespace(**_complete(self.prepared.fields), seq=seq)
            recording = self.prepared.recording
            return fast_chain_hash(prev_hash, event_document(
                view, session_id, SimpleNamespace(**recording) if recording is not None else None))
        session = b"null" if session_id is None else b'"' + session_id.encode("ascii") + b'"'
        return hashlib.sha256(b"".join((
            bytes.fromhex(prev_hash), self.head, b'"seq":', str(seq).encode("ascii"), b',"sessionId":', session,
            self.tail))).hexdigest()


def lock_chain(cursor=None) -> None:
    """Serialize appends until the surrounding transaction ends (``cursor``: a Django cursor of its
    connection to run on, else one of its own)."""
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        raise RuntimeError("lock_chain() must run inside transaction.atomic()")
    if cursor is None:
        with connection.cursor() as cursor:
            return lock_chain(cursor)
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
    return _head_and_checkpoint()[0]


def _head_sql() -> str:
    events, checkpoints = AuditEvent._meta.db_table, Checkpoint._meta.db_table
    return (f"SELECT e.seq, e.hash, c.through_seq, c.through_hash FROM (SELECT 1 AS one) AS o"
            f" LEFT JOIN (SELECT seq, hash FROM {events} ORDER BY seq DESC LIMIT 1) AS e ON 1 = 1"
            f" LEFT JOIN (SELECT through_seq, through_hash FROM {checkpoints} ORDER BY through_seq DESC LIMIT 1)"
            f" AS c ON 1 = 1")


def _head_and_checkpoint() -> tuple[tuple[int, str], int | None]:
    """:func:`chain_head` and the newest checkpoint's ``through_seq`` (None without one), in one
    round trip of plain SQL: every append reads both under the chain lock, and two ORM queries
    were a good part of a small append's CPU in the writer."""
    with transaction.get_connection().cursor() as cursor:
        cursor.execute(_head_sql())
        return _head(*cursor.fetchone())


def _head(seq, digest, through_seq, through_hash) -> tuple[tuple[int, str], int | None]:
    if seq is not None:
        return (seq, digest), through_seq
    if through_seq is not None:
        return (through_seq, through_hash), through_seq
    return (0, GENESIS_HASH), None


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


class SessionCache:
    """A writer's memory of the newest session of each (issuer, subject, connection, Kubectl-Session) key,
    kept across appends so that resolving a batch does not query the database once per agent.

    Each entry is what ``SessionResolver._load`` would read from the database (the newest session by
    ``started_at, id`` and the newest ``stage_timestamp`` of its events, or None for "no session yet"), as
    of the chain head in ``token``.  It is checked under the chain lock at the start of every append:
    when other writers (another process in a scale-out, a journal replay) appended since, their events
    are folded in from the database (one query for their sessions' newest activity), so a session another
    writer opened or extended is seen exactly as the query would see it; when the chain was pruned
    (which deletes sessions left without events) or moved too far, everything is forgotten.  A failed
    append (rolled back, or a commit whose outcome is unknown) also forgets everything.  Bounded: the
    least recently used keys are dropped, and a dropped key is simply read from the database again.
    """

    MAX_DELTA = 20_000  # events appended by others past which reloading on demand is cheaper than folding

    def __init__(self, size: int = 4096):
        self.size = size
        self.entries: "OrderedDict[tuple, list | None]" = OrderedDict()
        self.token: tuple | None = None  # (head seq, newest checkpoint) the entries are true for

    def clear(self) -> None:
        self.entries.clear()
        self.token = None

    def get(self, key: tuple):
        """(True, entry) when the key is known, else (False, None)."""
        try:
            entry = self.entries[key]
        except KeyError:
            return False, None
        self.entries.move_to_end(key)
        return True, entry

    def put(self, key: tuple, entry) -> None:
        self.entries[key] = entry
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def fold(self, session: Session, stage_timestamp) -> None:
        """Account for a stored event of ``session`` at ``stage_timestamp`` (a no-op for unknown keys)."""
        key = session_key(session)
        if key not in self.entries:
            return
        entry = self.entries[key]
        if entry is not None and entry[0].pk == session.pk:
            entry[1] = max(entry[1], stage_timestamp)
        elif entry is None or (session.started_at, session.pk) > (entry[0].started_at, entry[0].pk):
            self.entries[key] = [session, stage_timestamp]

    def sync(self, head_seq: int, checkpoint: int | None) -> None:
        """Bring the entries to the chain as it is now (call under the chain lock; ``checkpoint``: the
        newest checkpoint's ``through_seq``, None without one)."""
        token = self.token
        if token is None or token[1] != checkpoint or head_seq < token[0] or head_seq - token[0] > self.MAX_DELTA:
            self.entries.clear()
        elif head_seq > token[0] and self.entries:
            newest = dict(AuditEvent.objects.filter(seq__gt=token[0], session__isnull=False)
                          .values("session_id").annotate(last=models.Max("stage_timestamp"))
                          .values_list("session_id", "last"))
            for pk, session in Session.objects.in_bulk(list(newest)).items():
                self.fold(session, newest[pk])
        self.token = (head_seq, checkpoint)


_remembering: ContextVar["SessionCache | None"] = ContextVar("airlock_audit_sessions", default=None)


@contextmanager
def remembering(cache: SessionCache):
    """Appends inside use ``cache`` (the recorder's writer thread: its appends go through chain.append)."""
    token = _remembering.set(cache)
    try:
        yield cache
    finally:
        _remembering.reset(token)


def session_key(session: Session) -> tuple:
    return (session.user_issuer, session.user_uid, session.connection, session.kubectl_session)


class SessionResolver:
    """Finds or opens the Session for each event of one append (runs under the chain lock)."""

    def __init__(self, gap: timedelta, cache: SessionCache | None = None):
        self.gap = gap
        self.cache = cache
        self.latest: dict[tuple, list] = {}  # key -> [session, last activity]
        self.by_audit_id: dict = {}

    def remember(self, audit_id, session: Session | None) -> None:
        self.by_audit_id[audit_id] = session

    def _load(self, key: tuple):
        if self.cache is not None:
            known, entry = self.cache.get(key)
            if known:
                return None if entry is None else list(entry)
        issuer, uid, connection, kubectl_session = key
        session = (
            Session.objects.filter(
                user_issuer=issuer, user_uid=uid, connection=connection, kubectl_session=kubectl_session
            )
            .order_by("-started_at", "-id")
            .first()
        )
        entry = None
        if session is not None:
            last = (
                AuditEvent.objects.filter(session=session)
                .order_by("-stage_timestamp")
                .values_list("stage_timestamp", flat=True)
                .first()
            )
            entry = [session, last or session.started_at]
        if self.cache is not None:
            self.cache.put(key, None if entry is None else list(entry))
        return entry

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


def _under_lock_sql() -> str:
    """PostgreSQL's statement for :func:`_under_lock`; its one parameter is the audit ids as a text array."""
    return (f"SELECT h.*, s.ids, s.stages, s.sessions FROM ({_head_sql()}) AS h CROSS JOIN (SELECT"
            f" array_agg(e.audit_id) AS ids, array_agg(e.stage) AS stages, array_agg(e.session_id) AS sessions"
            f" FROM unnest(%s::uuid[]) AS wanted(id) CROSS JOIN LATERAL (SELECT audit_id, stage, session_id"
            f" FROM {AuditEvent._meta.db_table} WHERE audit_id = wanted.id LIMIT {len(Stage)}) AS e) AS s")


def _under_lock(audit_ids: list[str], connection, cursor) -> tuple[tuple[int, str], int | None, list[tuple]]:
    """What an append reads under the chain lock: the head, the newest checkpoint's ``through_seq``
    and (audit_id, stage, session_id) of the events of these requests already in the chain.

    On PostgreSQL one statement (one round trip of the few a small append makes; the audit ids as
    one array literal, not a thousand placeholders, and a text one: psycopg dumps a list of UUIDs
    item by item in Python, a third of this statement's CPU); elsewhere two.  Each id is looked up
    on its own, by the (audit_id, stage) index, in a LATERAL subquery its LIMIT (one row per stage
    at most) keeps the planner from flattening: before autovacuum has analyzed a young, fast-growing
    table the planner took sixty ids for a third of the table and read all of it, under the chain
    lock, in every append (85 ms at 115,000 events).  ``cursor``: the append's, for PostgreSQL's statement.
    """
    if connection.vendor != "postgresql":
        head, checkpoint = _head_and_checkpoint()
        stored = AuditEvent.objects.filter(audit_id__in=audit_ids).values_list("audit_id", "stage", "session_id")
        return head, checkpoint, list(stored)
    cursor.execute(_under_lock_sql(), ["{" + ",".join(audit_ids) + "}"])
    *head, ids, stages, sessions = cursor.fetchone()
    return *_head(*head), list(zip(ids, stages, sessions)) if ids else []


def append(prepared: list[PreparedEvent], *, session_gap: timedelta, replay: bool = False,
           rows: bool = True, sessions: SessionCache | None = None) -> list[AuditEvent] | int:
    """Append events (and their recordings) to the chain in one transaction; returns the rows
    (``rows``), else how many were appended.

    A (audit_id, stage) that is already stored is skipped, so a batch retried after an
    ambiguous commit failure, or a crashed process's journal replayed (``replay``: skips are
    expected then, not logged), cannot duplicate events.  Everything that does not depend on the
    chain's head (each row's values, each document's canonical bytes) is done before the chain
    lock is taken: several writers prepare their batches at once and hold the lock only to
    number, hash, sign, insert and commit.  ``sessions``: a writer's SessionCache, kept across its appends.
    """
    if sessions is None:
        sessions = _remembering.get()
    if sessions is not None and transaction.get_connection().in_atomic_block:
        sessions.clear()  # an outer transaction may still roll this append back: no memory of it
        sessions = None
    if sessions is None:
        return _append(prepared, session_gap, replay, rows, None)
    try:
        return _append(prepared, session_gap, replay, rows, sessions)
    except BaseException:
        sessions.clear()  # rolled back, or committed or not: what it remembered may be untrue
        raise


def _append(prepared, session_gap, replay, rows, sessions):
    signer = keyring().active
    connection = transaction.get_connection()
    staged = [_Staged(item, connection) for item in prepared]
    ids = list({item.audit_text for item in staged})
    # One cursor for the lock, the read under it and the insert: a Django cursor was 30 us to make.
    with transaction.atomic(), connection.cursor() as cursor:
        lock_chain(cursor)
        (seq, prev_hash), checkpoint, stored_rows = _under_lock(ids, connection, cursor)
        if sessions is not None:
            sessions.sync(seq, checkpoint)
        resolver = SessionResolver(session_gap, sessions)
        stored = {(audit_id, stage) for audit_id, stage, _ in stored_rows}
        known = Session.objects.in_bulk({pk for _, _, pk in stored_rows if pk is not None})
        for audit_id, _, session_pk in stored_rows:
            resolver.remember(audit_id, known.get(session_pk))
        chained = []  # (staged, seq, session)
        session_texts = {}  # pk -> str(session_id), made once per session, not once per event
        for item in staged:
            fields = item.prepared.fields
            key = (fields["audit_id"], fields["stage"])
            if key in stored:
                if not replay:
                    log.warning("audit event %s (%s) is already recorded; skipped", key[0], key[1])
                continue
            stored.add(key)
            session = resolver.resolve(fields)
            resolver.remember(key[0], session)
            seq += 1
            session_text = None if session is None else session_texts.get(session.pk)
            if session is not None and session_text is None:
                session_text = session_texts[session.pk] = str(session.session_id)
            digest = item.chain_hash(prev_hash, seq, session_text)
            item.row[-6:] = [seq, session.pk if session is not None else None, prev_hash, digest, signer.key_id,
                             signer.event_mac(digest)]
            prev_hash = digest
            chained.append((item, seq, session))
        if chained:
            _insert_events([item.row for item, _, _ in chained], cursor)
        with_recording = [entry for entry in chained if entry[0].prepared.recording is not None]
        event_ids = {}
        if chained and (rows or with_recording):
            wanted = [s for _, s, _ in (chained if rows else with_recording)]
            event_ids = dict(AuditEvent.objects.filter(seq__gte=min(wanted), seq__lte=max(wanted))
                             .values_list("seq", "id"))
        recordings = {seq: Recording(**item.prepared.recording, session=session, event_id=event_ids[seq])
                      for item, seq, session in with_recording}
        if recordings:  # bulk_create of nothing still costs a tenth of a small append's statements
            Recording.objects.bulk_create(list(recordings.values()))
    if sessions is not None:  # committed
        for item, _, session in chained:
            if session is not None:
                sessions.fold(session, item.prepared.fields["stage_timestamp"])
        sessions.token = (seq, sessions.token[1])
    if not rows:
        return len(chained)
    events = []
    for item, seq, session in chained:
        event = AuditEvent(**item.prepared.fields, seq=seq, session=session, prev_hash=item.row[-4],
                           hash=item.row[-3], key_id=item.row[-2], mac=item.row[-1], id=event_ids[seq])
        event._state.adding = False
        event._state.db = connection.alias
        if seq in recordings:
            recordings[seq].event = event
        events.append(event)
    return events


# -- anchors ------------------------------------------------------------------------------------


def make_anchor(reason: str) -> Anchor | None:
    """Sign the chain head, append it to AIRLOCK_AUDIT_ANCHOR_FILE, store it; None if nothing is new.

    Runs under the chain lock, so the head cannot move meanwhile; the line is written (and
    fsynced) before the row commits, so the file never lacks an anchor made here.  A head
    that fails its own HMAC, or a chain shorter than its newest anchor, is not anchored: that
    would sign what verify_audit is about to report.
    """
    ring = keyring()
    with transaction.atomic():
        lock_chain()
        seq, digest = chain_head()
        if seq == 0:
            return None
        newest = Anchor.objects.order_by("-seq").values_list("seq", flat=True).first()
        if newest is not None and newest >= seq:
            if newest > seq:
                log.error("audit chain ends at #%d, before its newest anchor #%d: not anchored; run verify_audit",
                          seq, newest)
            return None
        head = AuditEvent.objects.filter(seq=seq).values_list("key_id", "mac").first()
        if head is not None and head[0] and not ring.verify_event(head[0], digest, head[1]):
            log.error("audit chain head #%d has no valid HMAC: not anchored; run verify_audit", seq)
            return None
        created_at = timezone.now()
        record = anchors.sign(seq, digest, created_at, reason, ring)
        if settings.AIRLOCK_AUDIT_ANCHOR_FILE:
            anchors.append_line(settings.AIRLOCK_AUDIT_ANCHOR_FILE, record.line())
        return Anchor.objects.create(
            seq=seq, hash=digest, created_at=created_at, reason=reason, key_id=record.key_id, mac=record.mac
        )


# -- verification -------------------------------------------------------------------------------


@dataclass
class Verification:
    """Outcome of walking the chain; ``problem`` (and its one-word ``kind``) is None when it is intact."""

    events: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head_hash: str = GENESIS_HASH
    start: str = "genesis"
    problem: str | None = None
    kind: str | None = None
    bad_seq: int | None = None
    bad_audit_id: str | None = None
    legacy: tuple[int, int] | None = None
    newest_anchor: anchors.AnchorRecord | None = None
    files_checked: bool = False

    @property
    def ok(self) -> bool:
        return self.problem is None

    def fail(self, kind: str, message: str, event=None) -> "Verification":
        self.kind, self.problem = kind, message
        if event is not None:
            self.bad_seq, self.bad_audit_id = event.seq, str(event.audit_id)
        return self

    def summary(self) -> str:
        if not self.ok:
            where = f"event #{self.bad_seq} (audit ID {self.bad_audit_id}): " if self.bad_seq is not None else ""
            return f"audit chain BROKEN: {where}{self.problem}"
        if not self.events:
            text = f"audit chain intact: no events (starting from {self.start})"
        else:
            text = (
                f"audit chain intact: {self.events} event{'' if self.events == 1 else 's'} "
                f"#{self.first_seq}..#{self.last_seq}, starting from {self.start}, head hash {self.head_hash}"
            )
        if self.legacy:
            text += f"; events #{self.legacy[0]}..#{self.legacy[1]} predate audit keys (no HMAC; a signed anchor covers them)"
        end = self.last_seq or 0
        anchor = self.newest_anchor
        if not self.files_checked:
            return text + (
                "; no anchor file was checked, so deleting the newest events would not show"
                + (f" (newest anchor in the database: #{anchor.seq} of {anchor.created_at})" if anchor else "")
            )
        if anchor is None or anchor.source == anchors.IN_DATABASE:
            return text + "; the anchor files hold no anchor yet"
        text += f"; newest anchor outside the database: #{anchor.seq} of {anchor.created_at}"
        if anchor.seq < end:
            text += f" ({_span(anchor.seq + 1, end)} not anchored outside the database yet)"
        return text


def _checkpoint_payload(checkpoint: Checkpoint) -> str:
    return rfc8785.dumps({
        "throughSeq": checkpoint.through_seq,
        "throughHash": checkpoint.through_hash,
        "eventsPruned": checkpoint.events_pruned,
        "archiveSha256": checkpoint.archive_sha256,
        "createdAt": timestamp(checkpoint.created_at),
    }).decode("ascii")


def _legacy_signer() -> signing.Signer:
    """What signed checkpoints before audit keys existed (SECRET_KEY); only ever verifies now."""
    return signing.Signer(salt=LEGACY_CHECKPOINT_SALT, algorithm="sha256")


def sign_checkpoint(checkpoint: Checkpoint) -> None:
    key = keyring().active
    checkpoint.key_id = key.key_id
    checkpoint.signature = key.mac(CHECKPOINT_DOMAIN, _checkpoint_payload(checkpoint).encode("ascii"))


def checkpoint_is_genuine(checkpoint: Checkpoint) -> bool | None:
    """True or False; None when its key is not configured."""
    payload = _checkpoint_payload(checkpoint)
    if checkpoint.key_id:
        return keyring().verify(checkpoint.key_id, CHECKPOINT_DOMAIN, payload.encode("ascii"), checkpoint.signature)
    signer = _legacy_signer()
    try:
        return signer.unsign(payload + signer.sep + checkpoint.signature) == payload
    except signing.BadSignature:
        return False


def _span(first: int, last: int) -> str:
    return f"event #{first} is" if first == last else f"events #{first}..#{last} are"


UNKNOWN_KEY = "which is not in AIRLOCK_AUDIT_KEYS (a retired key still needed to verify, or a forgery)"


def _broken_link(event) -> tuple[str, str]:
    """Why a genuine event does not follow the one before it: moved, or its predecessor deleted."""
    earlier = AuditEvent.objects.filter(hash=event.prev_hash).values_list("seq", flat=True).first()
    if earlier is not None:
        return "reordered", (
            f"reordered: seq order broken at #{event.seq}: it was written right after the event now at "
            f"#{earlier}, not after #{event.seq - 1}"
        )
    if event.prev_hash == GENESIS_HASH:
        return "reordered", f"reordered: seq order broken at #{event.seq}: it was written as the first event"
    checkpoint = Checkpoint.objects.filter(through_hash=event.prev_hash).values_list("through_seq", flat=True).first()
    if checkpoint is not None:
        return "reordered", (
            f"reordered: seq order broken at #{event.seq}: it was written right after #{checkpoint} (now pruned)"
        )
    return "deleted", (
        "deleted: the event it was written after is no longer in the chain and the events after that "
        "were renumbered to close the gap"
    )


def _check_event(event, prev_hash: str, ring, keyed: bool) -> tuple[str, str] | None:
    """The first thing wrong with one event, given the hash of the (verified) event before it."""
    if event.key_id:
        mac_ok = ring.verify_event(event.key_id, event.hash, event.mac)
        if mac_ok is None:
            return "unknown-key", f"unknown key: it is signed with key id {event.key_id!r}, {UNKNOWN_KEY}"
    elif keyed:
        return "unkeyed", "HMAC removed: it has no HMAC, but the events before it have one"
    else:
        mac_ok = None  # legacy: covered by the next keyed event's HMAC or by a signed anchor
    content_ok = chain_hash(event.prev_hash, document_of(event)) == event.hash
    if mac_ok is False:
        if content_ok:
            return "rehashed", (
                "re-hashed: HMAC mismatch: its hash matches its content but not its HMAC, so the hash was "
                "recomputed after it was written (an edit, deletion or reordering hidden by re-hashing the "
                "chain from here, or a forged event)"
            )
        return "edited", "edited: neither its hash nor its HMAC matches its content"
    if event.prev_hash != prev_hash:
        if not content_ok and chain_hash(prev_hash, document_of(event)) == event.hash:
            return "edited", "edited: its prev_hash was changed (hash mismatch)"
        return _broken_link(event)
    if not content_ok:
        return "edited", "edited: its content does not match its hash (hash mismatch)"
    return None


def verify_chain(*, anchors_from: Iterable[anchors.AnchorRecord] = (), pins: dict[int, str] | None = None,
                 files_checked: bool = False, chunk_size: int = 1000) -> Verification:
    """Walk the whole chain in seq order and report the first inconsistency, naming its kind.

    Every event's hash must match its content and link to the one before; its HMAC must match its
    hash under a configured key.  Anchors (signed heads from the database and ``anchors_from``,
    read from files outside it) and ``pins`` (seq -> hash kept elsewhere, unsigned) must match the
    chain, and one beyond its end shows truncation.  ``files_checked`` says the caller read the
    anchor files, for the summary.
    """
    ring = keyring()
    result = Verification(files_checked=files_checked)
    # Checkpoints and anchors are read before the events, so the events' snapshot is the newer one.
    checkpoints = list(Checkpoint.objects.order_by("through_seq"))
    for checkpoint in checkpoints:
        genuine = checkpoint_is_genuine(checkpoint)
        if genuine is None:
            return result.fail("unknown-key", (
                f"unknown key: checkpoint through #{checkpoint.through_seq} is signed with key id "
                f"{checkpoint.key_id!r}, {UNKNOWN_KEY}"
            ))
        if not genuine:
            return result.fail(
                "forged", f"forged checkpoint: checkpoint through #{checkpoint.through_seq} has an invalid signature"
            )
    # Every anchor's signature is checked; only those the remaining chain can be compared with are kept.
    pruned_through = checkpoints[-1].through_seq if checkpoints else 0
    marks: dict[int, list] = defaultdict(list)
    with closing(Anchor.objects.order_by("seq", "id").iterator(chunk_size=chunk_size)) as rows:
        for record in itertools.chain(anchors_from, map(anchors.AnchorRecord.from_row, rows)):
            genuine = record.genuine(ring)
            if genuine is None:
                return result.fail("unknown-key", (
                    f"unknown key: {record.describe()} at #{record.seq} is signed with key id {record.key_id!r}, "
                    f"{UNKNOWN_KEY}"
                ))
            if not genuine:
                return result.fail(
                    "forged", f"forged anchor: {record.describe()} at #{record.seq} has an invalid signature"
                )
            newest = result.newest_anchor
            outside = record.source != anchors.IN_DATABASE
            if newest is None or (outside, record.seq) > (newest.source != anchors.IN_DATABASE, newest.seq):
                result.newest_anchor = record  # the newest outside the database, else the newest inside
            if record.seq >= pruned_through:
                marks[record.seq].append(record)
    for seq, digest in (pins or {}).items():
        marks[seq].append(anchors.Pin(seq, digest))

    by_seq = {c.through_seq: c for c in checkpoints}
    events = AuditEvent.objects.select_related("session", "recording").order_by("seq")
    expected, prev_hash = None, GENESIS_HASH
    keyed, legacy, legacy_signed = False, None, False
    # Closed on every return: a server-side cursor left to the garbage collector is closed later,
    # inside whatever transaction the connection is in then, and aborts it if that cursor is gone.
    with closing(events.iterator(chunk_size=chunk_size)) as rows:
        for event in rows:
            if expected is None:
                if event.seq != 1:
                    checkpoint = by_seq.get(event.seq - 1)
                    if checkpoint is None:
                        return result.fail(
                            "deleted", f"deleted: {_span(1, event.seq - 1)} missing and no checkpoint covers them", event
                        )
                    prev_hash = checkpoint.through_hash
                    result.start = f"checkpoint through #{checkpoint.through_seq}"
                expected = event.seq
                result.first_seq = event.seq
            if event.seq < expected:
                return result.fail("inserted", f"inserted: a second event with seq #{event.seq}", event)
            if event.seq > expected:
                return result.fail(
                    "deleted", f"deleted: gap in seq: {_span(expected, event.seq - 1)} missing", event
                )
            problem = _check_event(event, prev_hash, ring, keyed)
            if problem is not None:
                return result.fail(*problem, event)
            checkpoint = by_seq.get(event.seq)
            if checkpoint is not None and checkpoint.through_hash != event.hash:
                return result.fail(
                    "rewritten", f"rewritten: its hash differs from the one checkpoint through #{event.seq} recorded", event
                )
            here = marks.pop(event.seq, ())
            for mark in here:
                if mark.hash != event.hash:
                    return result.fail("rewritten", (
                        f"rewritten: its hash differs from {mark.describe()}: the chain was rewritten after it"
                    ), event)
            if event.key_id:
                keyed = True
            else:
                legacy = (legacy[0] if legacy else event.seq, event.seq)
                legacy_signed = any(isinstance(mark, anchors.AnchorRecord) for mark in here)
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
        end = start_seq
    else:
        start_seq = result.first_seq - 1
        start_hash = by_seq[start_seq].through_hash if start_seq else GENESIS_HASH
        end = result.last_seq
        if newest is not None and newest.through_seq > end:
            return result.fail("truncated", (
                f"truncated: the chain ends at #{end} but checkpoint through #{newest.through_seq} covers more: "
                f"{_span(end + 1, newest.through_seq)} missing"
            ))
    if legacy and not keyed and not legacy_signed:
        return result.fail("unkeyed", (
            f"unkeyed: {_span(*legacy)} without HMAC (written before audit keys, or stripped) and no signed "
            f"anchor covers #{legacy[1]}, so an edit re-hashed through them would not show"
        ))
    if legacy:
        result.legacy = legacy
    for seq, entries in sorted(marks.items()):
        for mark in entries:
            if seq < start_seq:
                continue  # pruned before the oldest remaining event: nothing left to compare
            if seq == start_seq:
                if mark.hash != start_hash:
                    return result.fail(
                        "rewritten", f"rewritten: {mark.describe()} at #{seq} differs from where the chain starts"
                    )
                continue
            what = f"ends at #{end}" if result.events else f"has no events after #{end}"
            return result.fail("truncated", (
                f"truncated: the chain {what} but {mark.describe()} says it reached #{seq} (hash {mark.hash}): "
                f"{_span(end + 1, seq)} missing (deleted)"
            ))
    return result


def missing_completions(received_before: datetime, *, in_flight: Iterable[str] = ()) -> list[tuple[int, str, datetime]]:
    """Requests whose RequestReceived event has no completion: (seq, audit id, received), oldest first.

    Only those received before ``received_before`` and not in ``in_flight`` (audit ids live
    gateways are still handling) count: the others may still complete.
    """
    completed = AuditEvent.objects.filter(
        audit_id=OuterRef("audit_id"), stage__in=[Stage.RESPONSE_COMPLETE, Stage.PANIC]
    )
    rows = (
        AuditEvent.objects.filter(stage=Stage.REQUEST_RECEIVED, request_received_timestamp__lt=received_before)
        .filter(~Exists(completed))
        .order_by("seq")
        .values_list("seq", "audit_id", "request_received_timestamp")
    )
    skip = set(in_flight)
    return [(seq, str(audit_id), received) for seq, audit_id, received in rows if str(audit_id) not in skip]


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
        sign_checkpoint(checkpoint)
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
