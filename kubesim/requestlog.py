"""The request log tests read: JSON Lines at ``<state-dir>/requests.jsonl``.

Two lines per request, both carrying the same ``id``:
- ``{"event": "request", ...}`` written when the request has been received and authenticated
  (method, path, raw query, headers, body, user, groups, impersonated identity);
- ``{"event": "response", "id": ..., "status": ..., "duration_ms": ...}`` when the response is
  finished (for watches and streams: when the stream ends).

Credentials never reach the file: the Authorization header value is written as
``<scheme> sha256:<hex>``, and a bearer token carried in a WebSocket subprotocol likewise.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import IO, Iterable

from .auth import credential_fingerprint

BODY_CAP = 64 * 1024
_WS_TOKEN_PREFIX = "base64url.bearer.authorization.k8s.io."


def redact_header(name: str, value: str) -> str:
    lower = name.lower()
    if lower in ("authorization", "proxy-authorization"):
        scheme, _, credential = value.partition(" ")
        if not credential:
            return credential_fingerprint(scheme)
        return f"{scheme} {credential_fingerprint(credential.strip())}"
    if lower == "sec-websocket-protocol" and _WS_TOKEN_PREFIX in value:
        parts = []
        for proto in value.split(","):
            proto = proto.strip()
            if proto.startswith(_WS_TOKEN_PREFIX):
                proto = _WS_TOKEN_PREFIX + credential_fingerprint(proto[len(_WS_TOKEN_PREFIX):])
            parts.append(proto)
        return ", ".join(parts)
    return value


def encode_body(body: bytes) -> dict:
    if not body:
        return {}
    out: dict = {"body_size": len(body)}
    chunk = body[:BODY_CAP]
    if len(body) > BODY_CAP:
        out["body_truncated"] = True
    try:
        out["body"] = chunk.decode("utf-8")
    except UnicodeDecodeError:
        out["body"] = base64.b64encode(chunk).decode()
        out["body_base64"] = True
    return out


class RequestLog:
    """Appends request/response records; one write + flush per line."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: IO[str] = open(self.path, "a", encoding="utf-8")
        self._next = 0

    def new_id(self) -> int:
        self._next += 1
        return self._next

    def _write(self, record: dict) -> None:
        self._file.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
        self._file.flush()

    def request(self, rid: int, *, method: str, path: str, query: str, headers: Iterable[tuple[str, str]],
                body: bytes, remote: str | None, user: dict | None, impersonated: dict | None) -> None:
        record = {
            "event": "request",
            "id": rid,
            "time": time.time(),
            "method": method,
            "path": path,
            "query": query,
            "headers": [[k, redact_header(k, v)] for k, v in headers],
            "remote": remote,
            "user": user["username"] if user else None,
            "groups": user.get("groups", []) if user else [],
            "impersonated_user": impersonated["username"] if impersonated else None,
            "impersonated_groups": impersonated.get("groups", []) if impersonated else [],
        }
        record.update(encode_body(body))
        self._write(record)

    def response(self, rid: int, status: int, started: float) -> None:
        self._write({"event": "response", "id": rid, "status": status,
                     "duration_ms": round((time.monotonic() - started) * 1000, 3)})

    def close(self) -> None:
        self._file.close()


def read(path: Path | str) -> list[dict]:
    """Parsed log: one dict per request, with ``status``/``duration_ms`` merged in once finished.

    A request still in flight (e.g. an open watch) has ``status`` None. ``header(name)`` lookups
    are easiest with :func:`header`.
    """
    records: dict[int, dict] = {}
    order: list[int] = []
    p = Path(path)
    if not p.exists():
        return []
    for line in p.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line being written right now
        if rec.get("event") == "request":
            rec.setdefault("status", None)
            records[rec["id"]] = rec
            order.append(rec["id"])
        elif rec.get("event") == "response" and rec.get("id") in records:
            records[rec["id"]]["status"] = rec["status"]
            records[rec["id"]]["duration_ms"] = rec.get("duration_ms")
    return [records[i] for i in order]


def header(record: dict, name: str) -> list[str]:
    """All values of header ``name`` (case-insensitive) in a parsed request record."""
    lower = name.lower()
    return [v for k, v in record.get("headers", []) if k.lower() == lower]
