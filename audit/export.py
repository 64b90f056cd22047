"""JSON Lines export of the audit trail, to a stream or a SIEM's HTTP endpoint.

One event per line: the canonical document (audit.document) with ``airlock.prevHash``,
``airlock.hash``, ``airlock.keyId`` and ``airlock.mac`` added, and ``airlock.recordingCast`` (the
asciicast text) when casts are requested; a recording kept as frames (audit/frames.py) is
rendered to asciicast for ``recordingCast`` and its frames, which the document's
``framesSha256`` covers, are added as base64 in ``airlock.recordingFrames``.  The receiver can re-check the hash chain from the
lines alone (and the MACs with the audit key).  :func:`iter_anchor_lines` gives the anchors
(audit.anchors) in the form of the anchor file, for a sink outside the database.
"""

import base64
import hashlib
import ipaddress
import json
import logging
import time
from collections.abc import Iterable, Iterator
from urllib.parse import urlsplit

import httpx

from audit.anchors import AnchorRecord
from audit.chain import document_of, recording_of
from audit.models import Anchor, AuditEvent

log = logging.getLogger(__name__)


class ExportError(Exception):
    """The export could not be delivered; the message never contains credentials."""


def export_document(event: AuditEvent, *, include_cast: bool = False) -> dict:
    document = document_of(event)
    document["airlock"]["prevHash"] = event.prev_hash
    document["airlock"]["hash"] = event.hash
    document["airlock"]["keyId"] = event.key_id
    document["airlock"]["mac"] = event.mac
    recording = recording_of(event)
    if include_cast and recording is not None:
        document["airlock"]["recordingCast"] = recording.asciicast
        if recording.frames:
            document["airlock"]["recordingFrames"] = base64.b64encode(bytes(recording.frames)).decode("ascii")
    return document


def encode_line(document: dict) -> bytes:
    return json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n"


def select_events(*, since=None, until=None, after_seq: int | None = None, through_seq: int | None = None):
    """Events in chain order; ``since``/``until`` bound the request-received time (until exclusive)."""
    events = AuditEvent.objects.select_related("session", "recording").order_by("seq")
    if since is not None:
        events = events.filter(request_received_timestamp__gte=since)
    if until is not None:
        events = events.filter(request_received_timestamp__lt=until)
    if after_seq is not None:
        events = events.filter(seq__gt=after_seq)
    if through_seq is not None:
        events = events.filter(seq__lte=through_seq)
    return events


def iter_lines(events, *, include_casts: bool = False, chunk_size: int = 500) -> Iterator[tuple[int, bytes]]:
    """(seq, line) for each event of a queryset, in seq order.

    Pages by seq instead of a server-side cursor: a consumer that stops early
    (a failed write, an HTTP sink giving up) leaves no cursor behind for the
    garbage collector to close later inside some other transaction.
    """
    after = None
    while True:
        page = events.order_by("seq")
        if after is not None:
            page = page.filter(seq__gt=after)
        batch = list(page[:chunk_size])
        for event in batch:
            yield event.seq, encode_line(export_document(event, include_cast=include_casts))
        if len(batch) < chunk_size:
            return
        after = batch[-1].seq


def iter_anchor_lines(*, after_seq: int | None = None, chunk_size: int = 500) -> Iterator[tuple[int, bytes]]:
    """(seq, line) for each anchor stored in the database, oldest first (paged, as iter_lines)."""
    anchors = Anchor.objects.order_by("id")
    if after_seq is not None:
        anchors = anchors.filter(seq__gt=after_seq)
    after = 0
    while True:
        batch = list(anchors.filter(id__gt=after)[:chunk_size])
        for anchor in batch:
            yield anchor.seq, AnchorRecord.from_row(anchor).line()
        if len(batch) < chunk_size:
            return
        after = batch[-1].id


def write_lines(lines: Iterable[tuple[int, bytes]], stream) -> tuple[int, int | None, int | None, str]:
    """Write lines to a binary stream; returns (count, first seq, last seq, SHA-256 of the bytes)."""
    digest = hashlib.sha256()
    count, first, last = 0, None, None
    for seq, line in lines:
        stream.write(line)
        digest.update(line)
        count += 1
        first = seq if first is None else first
        last = seq
    return count, first, last, digest.hexdigest()


def check_sink_url(url: str) -> str:
    """https, or plain http to a loopback address (a local collector)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ExportError("the export URL must be an absolute http(s) URL")
    if parts.username or parts.password:
        raise ExportError("put credentials in the token environment variable, not in the URL")
    if parts.scheme == "http":
        try:
            loopback = parts.hostname == "localhost" or ipaddress.ip_address(parts.hostname).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ExportError("the export URL must use https (plain http only to a loopback address)")
    return url


class HttpSink:
    """POSTs batches of lines (``application/x-ndjson``), retrying transient failures.

    Retried: connection errors, timeouts, 408, 429 and 5xx, with exponential back-off.  A batch
    delivered twice (the first response was lost) carries the same auditID/stage/seq, so the
    receiver can drop the duplicate.
    """

    RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})

    def __init__(self, url: str, *, token: str | None = None, retries: int = 5, backoff: float = 0.5,
                 timeout: float = 30.0, sleep=time.sleep, transport: httpx.BaseTransport | None = None):
        self.url = check_sink_url(url)
        headers = {"Content-Type": "application/x-ndjson"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.client = httpx.Client(headers=headers, timeout=timeout, transport=transport)
        self.retries = retries
        self.backoff = backoff
        self.sleep = sleep

    def close(self) -> None:
        self.client.close()

    def send(self, lines: list[bytes]) -> None:
        body = b"".join(lines)
        for attempt in range(self.retries + 1):
            try:
                response = self.client.post(self.url, content=body)
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            else:
                if response.is_success:
                    return
                if response.status_code not in self.RETRYABLE:
                    raise ExportError(f"the export endpoint refused a batch: HTTP {response.status_code}")
                problem = f"HTTP {response.status_code}"
            if attempt < self.retries:
                delay = self.backoff * 2**attempt
                log.warning("audit export batch failed (%s); retrying in %.1fs", problem, delay)
                self.sleep(delay)
        raise ExportError(f"the export endpoint failed {self.retries + 1} times (last: {problem})")


def post_lines(lines: Iterable[tuple[int, bytes]], sink: HttpSink, *, batch_size: int = 500):
    """Send lines in batches; returns (count, first seq, last seq) of what was delivered."""
    count, first, last = 0, None, None
    batch: list[bytes] = []
    batch_seqs: list[int] = []

    def deliver():
        nonlocal count, first, last
        try:
            sink.send(batch)
        except ExportError as exc:
            done = f"; delivered {count} events" + (f" through #{last}" if last is not None else "")
            raise ExportError(f"{exc}{done}") from None
        count += len(batch)
        first = batch_seqs[0] if first is None else first
        last = batch_seqs[-1]
        batch.clear()
        batch_seqs.clear()

    for seq, line in lines:
        batch.append(line)
        batch_seqs.append(seq)
        if len(batch) >= batch_size:
            deliver()
    if batch:
        deliver()
    return count, first, last
