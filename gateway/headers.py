"""Header hygiene between agents and the cluster (pure functions).

Agents must never choose the identity the cluster sees, so their
credentials, impersonation and front-proxy headers are removed before the
gateway adds its own.  Accept is narrowed to JSON forms so that every
response body can be inspected (masking cannot be bypassed with protobuf,
CBOR, YAML or gzip).
"""

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Never forwarded: the client's own credentials and identity assertions, and
# framing headers the upstream client computes itself.
DROPPED = HOP_BY_HOP | {"authorization", "host", "content-length", "accept-encoding", "cookie"}
DROPPED_PREFIXES = ("impersonate-", "x-remote-")

# WebSocket handshake headers are re-created by the upstream WebSocket client.
WEBSOCKET_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)

RESPONSE_DROPPED = HOP_BY_HOP | {"content-length"}

JSON_MEDIA_TYPE = "application/json"


def _connection_tokens(headers) -> set[str]:
    tokens = set()
    for name, value in headers:
        if name == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def upstream_request_headers(headers, *, websocket: bool = False) -> list[tuple[str, str]]:
    """Headers to send upstream, from the client's (lower-cased name, value) pairs.

    Removes hop-by-hop headers (including any named in ``Connection``), the
    client's Authorization, every ``Impersonate-*`` and ``X-Remote-*``
    header (case-insensitive prefix), and rewrites Accept to JSON forms.
    """
    named = _connection_tokens(headers)
    out = []
    accept_seen = False
    for name, value in headers:
        if name in DROPPED or name in named or name.startswith(DROPPED_PREFIXES):
            continue
        if websocket and name in WEBSOCKET_HANDSHAKE:
            continue
        if name == "accept":
            if accept_seen:
                continue
            accept_seen = True
            value = json_accept(",".join(v for n, v in headers if n == "accept"))
        out.append((name, value))
    if not accept_seen:
        out.append(("accept", JSON_MEDIA_TYPE))
    # Explicit, so no HTTP client library adds its own default (httpx sends gzip).
    out.append(("accept-encoding", "identity"))
    return out


def json_accept(accept: str) -> str:
    """Keep only ``application/json`` clauses of an Accept header.

    Parameters are kept, so Table, PartialObjectMetadata and aggregated
    discovery variants still work; protobuf, CBOR, YAML and wildcards are
    dropped.  With nothing left, plain JSON is asked for.
    """
    kept = []
    for clause in accept.split(","):
        clause = clause.strip()
        if not clause:
            continue
        media_type = clause.split(";", 1)[0].strip().lower()
        if media_type == JSON_MEDIA_TYPE:
            kept.append(clause)
    return ",".join(kept) if kept else JSON_MEDIA_TYPE


def response_headers(headers) -> list[tuple[bytes, bytes]]:
    """Upstream response headers to pass to the client, as ASGI byte pairs."""
    named = _connection_tokens(headers)
    return [
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in headers
        if name not in RESPONSE_DROPPED and name not in named
    ]


def is_spdy_upgrade(headers) -> bool:
    """kubectl's fallback transport: ``POST`` with ``Upgrade: SPDY/3.1``."""
    for name, value in headers:
        if name == "upgrade" and value.strip().lower().startswith("spdy/"):
            return True
    return False


def bearer_token(headers) -> str | None:
    for name, value in headers:
        if name == "authorization":
            scheme, _, credential = value.partition(" ")
            if scheme.lower() == "bearer" and credential.strip():
                return credential.strip()
            return None
    return None
