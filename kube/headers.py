"""Header hygiene between agents and the cluster (pure functions).

Agents must never choose the identity the cluster sees: their credentials,
impersonation and front-proxy headers are removed before the gateway adds
its own (whether a request may ask for impersonation at all is
identity.proxies', read in gateway.authn).  Accept is narrowed to JSON forms so that every
response body can be inspected (masking cannot be bypassed with protobuf,
CBOR, YAML or gzip).

Header values are text from the moment they are parsed: the agent's bytes
decoded as UTF-8 (:func:`request_headers`), and the same text encoded as
UTF-8 again for the cluster (:func:`encode`), so every stage, the audit
trail, the approvals fingerprint and the cluster see the same bytes.
"""

import functools
import re

from kube.status import GatewayError

# RFC 9110 token: what kube-apiserver's Go server accepts as a header name.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Control characters other than HTAB, which Go's server refuses in a value (httpguts.ValidHeaderFieldValue):
# all ASCII, and UTF-8 spells them as themselves only, so they are looked for in the bytes (a C loop
# with bytes.translate, several times faster than a regular expression over a bearer token).
_CONTROL_BYTES = bytes([*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F])

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

# Fields RFC 9110 defines as single-valued (those not dropped above).  kube-apiserver's Go server
# accepts them repeated and reads the first (Header.Get: the decoder, the default field
# manager), so only the first is forwarded: the cluster reads the same, every stage of the
# gateway (audit record, approvals fingerprint) reads the same, and a strict HTTP server behind
# the gateway does not refuse the repeat.
SINGLE_VALUED = frozenset({"content-type", "user-agent", "content-location", "content-range", "etag",
                           "max-forwards", "server"})

JSON_MEDIA_TYPE = "application/json"


def request_headers(raw) -> list[tuple[str, str]]:
    """The agent's header byte pairs as (lower-case name, value) text; GatewayError 400 for what cannot be.

    kube-apiserver's Go server takes a value's bytes from 0x80 up (RFC 9110
    obs-text) as they are and refuses control characters and names that are
    not tokens.  The gateway takes the values that are UTF-8: they are
    forwarded byte for byte and recorded as the text they spell.  Any other
    value could be neither recorded as it was sent nor sent on unchanged
    (the upstream client writes header text as UTF-8), so it is refused
    rather than altered.
    """
    headers = []
    for raw_name, raw_value in raw:
        name = _NAMES.get(raw_name)
        if name is None:
            name = _name(raw_name)
        try:
            value = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            raise GatewayError(400, f'airlock: the value of header "{name[:64]}" is not valid UTF-8') from None
        if len(raw_value.translate(None, _CONTROL_BYTES)) != len(raw_value):
            raise GatewayError(400, f'airlock: the value of header "{name[:64]}" contains a control character')
        headers.append((name, value))
    return headers


# Header names seen (agents send the same few), as their checked lower-case text: bounded, the
# first NAMES_MAX distinct names are kept for the life of the process, any other is checked every time.
_NAMES: dict[bytes, str] = {}
NAMES_MAX = 256


def _name(raw_name: bytes) -> str:
    """``raw_name`` as lower-case text; GatewayError 400 when it is not a token."""
    name = raw_name.decode("latin-1").lower()
    if not _TOKEN.fullmatch(name):
        shown = name[:64].encode("ascii", "backslashreplace").decode()
        raise GatewayError(400, f'airlock: the header name "{shown}" is not a token')
    if len(_NAMES) < NAMES_MAX:
        _NAMES[bytes(raw_name)] = name
    return name


def encode(headers) -> list[tuple[bytes, bytes]]:
    """(name, value) text pairs as the bytes sent to the cluster: the inverse of :func:`request_headers`."""
    return [(name.encode("ascii"), value.encode("utf-8")) for name, value in headers]


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
    header (case-insensitive prefix), repeats of single-valued fields (the
    first is kept), and rewrites Accept to JSON forms.
    """
    named = _connection_tokens(headers)
    out = []
    accept_seen = False
    single_seen = set()
    for name, value in headers:
        if name in DROPPED or name in named or name.startswith(DROPPED_PREFIXES):
            continue
        if websocket and name in WEBSOCKET_HANDSHAKE:
            continue
        if name in SINGLE_VALUED:
            if name in single_seen:
                continue
            single_seen.add(name)
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


@functools.lru_cache(maxsize=256)  # a pure function of the header; clients send the same few
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


def response_headers(raw) -> list[tuple[bytes, bytes]]:
    """The cluster's response headers (byte pairs as received) to pass to the client: values unchanged."""
    pairs, connection = [], []
    for name, value in raw:
        name = name.lower()
        if name in _RESPONSE_DROPPED_BYTES:
            if name == b"connection":
                connection.append(("connection", value.decode("latin-1")))
            continue
        pairs.append((name, value))
    if not connection:  # nothing else is named hop-by-hop
        return pairs
    named = _connection_tokens(connection)
    return [(name, value) for name, value in pairs if name.decode("latin-1") not in named]


_RESPONSE_DROPPED_BYTES = frozenset(name.encode("ascii") for name in RESPONSE_DROPPED)


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
