"""Anchors: signed chain heads, kept in the database and appended to a file outside it.

A hash chain cannot show that its newest events were deleted: what is left is a shorter, valid
chain.  An anchor is a signed ``(seq, hash, createdAt, reason)`` of the chain head; the file
``AIRLOCK_AUDIT_ANCHOR_FILE`` receives one line per anchor (opened ``O_APPEND``, fsynced), and
``verify_audit`` compares the chain with every anchor it can read.  One line::

    {"kind":"airlock.audit/anchor","seq":42,"hash":"…","createdAt":"2026-03-01T12:00:00.000000Z",
     "reason":"schedule","keyId":"…","mac":"…"}

``mac = HMAC-SHA256(key, "airlock audit anchor v1\\n" || RFC8785({seq, hash, createdAt, reason,
keyId}))``.  ``export_audit --anchors`` writes the database's anchors in the same form.
"""

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime

import rfc8785

from audit.document import timestamp
from audit.keys import ANCHOR_DOMAIN, Keyring

KIND = "airlock.audit/anchor"
IN_DATABASE = "the database"
HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_SEQ = 2**53 - 1


class AnchorFileError(Exception):
    """An anchor file that cannot be read, or holds a line that is not an anchor."""


@dataclass(frozen=True, slots=True)
class AnchorRecord:
    seq: int
    hash: str
    created_at: str
    reason: str
    key_id: str
    mac: str
    source: str = IN_DATABASE

    def payload(self) -> bytes:
        return rfc8785.dumps({
            "seq": self.seq, "hash": self.hash, "createdAt": self.created_at, "reason": self.reason,
            "keyId": self.key_id,
        })

    def genuine(self, ring: Keyring) -> bool | None:
        """True or False; None when its key is not configured."""
        return ring.verify(self.key_id, ANCHOR_DOMAIN, self.payload(), self.mac)

    def line(self) -> bytes:
        document = {
            "kind": KIND, "seq": self.seq, "hash": self.hash, "createdAt": self.created_at,
            "reason": self.reason, "keyId": self.key_id, "mac": self.mac,
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("ascii") + b"\n"

    def describe(self) -> str:
        return f"the anchor of {self.created_at} ({self.source})"

    @classmethod
    def from_row(cls, anchor) -> "AnchorRecord":
        return cls(anchor.seq, anchor.hash, timestamp(anchor.created_at), anchor.reason, anchor.key_id, anchor.mac)


@dataclass(frozen=True, slots=True)
class Pin:
    """A (seq, hash) an operator vouches for (``verify_audit --anchor``); unsigned."""

    seq: int
    hash: str

    def describe(self) -> str:
        return "the anchor given on the command line"


def sign(seq: int, digest: str, created_at: datetime, reason: str, ring: Keyring) -> AnchorRecord:
    unsigned = AnchorRecord(seq, digest, timestamp(created_at), reason, ring.active.key_id, "")
    return AnchorRecord(
        seq, digest, unsigned.created_at, reason, unsigned.key_id, ring.active.mac(ANCHOR_DOMAIN, unsigned.payload())
    )


def append_line(path: str, line: bytes) -> None:
    """Append one line and fsync it; a file created here is fsynced into its directory too."""
    created = not os.path.exists(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _parse(text: str, source: str) -> AnchorRecord:
    document = json.loads(text)
    if not isinstance(document, dict) or document.get("kind") != KIND:
        raise ValueError("not an anchor")
    seq = document.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 < seq <= MAX_SEQ:
        raise ValueError("seq is not a positive integer")
    fields = [document.get(name) for name in ("hash", "createdAt", "reason", "keyId", "mac")]
    if not all(isinstance(value, str) for value in fields) or not HEX64.fullmatch(fields[0]):
        raise ValueError("a field is missing or malformed")
    return AnchorRecord(seq, *fields, source=source)


def read_file(path: str) -> list[AnchorRecord]:
    """Every anchor in a JSON Lines file (the sink, or ``export_audit --anchors``), in file order."""
    records = []
    try:
        with open(path, encoding="utf-8", errors="strict") as stream:
            for number, text in enumerate(stream, 1):
                if not text.strip():
                    continue
                try:
                    records.append(_parse(text, f"{path} line {number}"))
                except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
                    raise AnchorFileError(f"{path} line {number} is not a valid anchor ({exc})") from None
    except UnicodeDecodeError:
        raise AnchorFileError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise AnchorFileError(f"cannot read the anchor file {path}: {exc.strerror}") from None
    return records
