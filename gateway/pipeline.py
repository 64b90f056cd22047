"""The gateway's request pipeline, as plain units testable without sockets.

parse -> authenticate -> authorize -> (hold for review) -> forward -> (mask) -> record

Each stage takes a :class:`GatewayRequest` and either enriches it or raises
:class:`~kube.status.GatewayError`, which the ASGI glue turns into a
Kubernetes ``Status``.  Nothing here reads a socket.
"""

import json
import re
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote

import masking
from connections.validation import CONNECTION_NAME
from kube import bodies, kubeproto
from kube import headers as hdr
from kube.dryrun import NOT_ASKED, DryRun, classify
from kube.media import declared_content_type, media_type
from kube.requestinfo import RequestInfo, RequestInfoError, canonical_path, parse
from kube.status import GatewayError


@dataclass
class GatewayRequest:
    """One agent request as the gateway understands it."""

    connection: str
    method: str
    upstream_path: str  # still percent-encoded, exactly as forwarded
    query: str
    headers: list[tuple[str, str]]
    info: RequestInfo
    transport: str  # "http", "websocket" or "spdy"
    client_addr: str = ""
    audit_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    principal: object = None
    decision: object = None
    body: bytes | None = None  # HTTP: read and transcoded before authorize, so reviews see it
    review: object = None  # the approved review (approvals.hold.HoldOutcome) when the rule said review
    lease: object = None  # the lease (approvals.lease_check.ActiveLease) a requires_lease rule found
    mask_secrets: bool = True  # the decision's, unless an approved review granted unmasking
    release_token: bool = False  # a TokenRequest whose token the agent may receive (masking.tokens)
    secret_values: object = None  # the cluster's Secret values to mask (masking.values), once admitted
    dry_run: DryRun = NOT_ASKED  # whether kube-apiserver runs it as a dry run (kube.dryrun), once the body is read
    base_url: str = ""  # scheme://host[:port] the agent reached the gateway at (links in its messages)

    @property
    def target(self) -> str:
        return self.upstream_path + ("?" + self.query if self.query else "")


def split_connection(raw_path: str, prefix: str) -> tuple[str, str]:
    """``/k8s/<name>/api/v1/pods`` -> (``name``, ``/api/v1/pods``)."""
    if not raw_path.startswith(prefix):
        raise GatewayError(404, "the server could not find the requested resource")
    rest = raw_path[len(prefix):]
    name, slash, upstream_path = rest.partition("/")
    if not CONNECTION_NAME.match(name):
        raise GatewayError(404, f'connection "{name[:64]}" not found')
    return name, slash + upstream_path if slash else "/"


def parse_request(scope: dict, prefix: str) -> GatewayRequest:
    """Stage 1: refuse non-canonical paths, then derive the RequestInfo."""
    raw = scope.get("raw_path")
    if raw is None:
        raw = quote(scope["path"]).encode()
    try:
        raw_path = raw.decode("ascii")
    except UnicodeDecodeError:
        raise GatewayError(400, "request path is not valid ASCII") from None
    name, upstream_path = split_connection(raw_path, prefix)
    try:
        path = canonical_path(upstream_path)
    except RequestInfoError as exc:
        raise GatewayError(400, f"request path rejected: {exc}") from None
    try:
        query = scope.get("query_string", b"").decode("ascii")
    except UnicodeDecodeError:
        raise GatewayError(400, "query string is not valid ASCII") from None
    if "\x00" in query or "%00" in query:
        raise GatewayError(400, "query string contains NUL")
    headers = hdr.request_headers(scope.get("headers", []))
    if scope["type"] == "websocket":
        method, transport = "GET", "websocket"
    else:
        method = scope["method"].upper()
        transport = "spdy" if hdr.is_spdy_upgrade(headers) else "http"
    try:
        info = parse(method, path, query)
    except RequestInfoError as exc:
        raise GatewayError(400, f"request not understood: {exc}") from None
    client = scope.get("client") or ("", 0)
    return GatewayRequest(
        connection=name,
        method=method,
        upstream_path=upstream_path,
        query=query,
        headers=headers,
        info=info,
        transport=transport,
        client_addr=client[0] or "",
        base_url=base_url(scope, headers),
    )


def _declare(request: GatewayRequest, media: str) -> None:
    request.headers = [(n, v) for n, v in request.headers if n != "content-type"]
    request.headers.append(("content-type", media))


_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def base_url(scope: dict, headers) -> str:
    """``https://host:port`` as the agent reached the gateway (its Host header), "" when it is not a plain host."""
    scheme = {"wss": "https", "ws": "http"}.get(scope.get("scheme", ""), scope.get("scheme") or "https")
    host = next((v for n, v in headers if n == "host"), "")
    if not host:
        server = scope.get("server") or ("", None)
        host = f"{server[0]}:{server[1]}" if server[0] and server[1] else ""
    if scheme not in ("http", "https") or not _HOST.fullmatch(host):
        return ""
    return f"{scheme}://{host}"


def classify_dry_run(request: GatewayRequest) -> None:
    """Whether kube-apiserver will run the request as a dry run: read where it reads ``dryRun``, after the body."""
    request.dry_run = classify(request.info, request.query, request.headers, request.body)


def parse_body(request: GatewayRequest, body: bytes) -> bytes:
    """Stage 1 for a request body: protobuf becomes JSON, JSON and YAML are measured.

    kubectl >= 1.32 sends some writes (create token, auth can-i, create
    secret) as protobuf; they are transcoded so every later stage can read
    them, and what cannot be decoded exactly is refused (415): nothing is
    passed on blind.  JSON and YAML deeper or (YAML) larger than
    kube.bodies allows are refused here, before any stage decodes them,
    whatever their Content-Type says: a body the cluster decodes is read as
    the cluster reads it (kube.bodies.cluster_media), and forwarded with
    that media type as its Content-Type when the agent's one would make the
    later stages (write guard, audit record, review) read it otherwise (none
    given, or a charset parameter): the cluster ignores the difference.
    """
    if not body:
        return body
    content_type = declared_content_type(request.headers)
    if content_type.split(";", 1)[0].strip().lower() == kubeproto.MEDIA_TYPE:
        try:
            obj = kubeproto.decode(body, strict=True)
        except kubeproto.ProtobufError as exc:
            raise GatewayError(
                415, f"airlock cannot inspect this protobuf request body ({exc}); send application/json"
            ) from None
        _declare(request, "application/json")
        return json.dumps(obj, separators=(",", ":")).encode()
    try:
        media = bodies.cluster_media(request.info, content_type)
        if media is None:
            media = media_type(content_type)
        elif media_type(content_type) != media:
            _declare(request, media)
        bodies.check(media, body)
    except bodies.BodyRefused as exc:
        raise GatewayError(exc.code, f"airlock: {exc}") from None
    return body


def guard_write(request: GatewayRequest, body: bytes) -> bytes:
    """Refuse writes that would store the mask placeholder; return the body as it may be recorded."""
    if not body:
        return b""
    content_type = declared_content_type(request.headers, None)
    try:
        masking.check_write(request.info, content_type, body)
        return masking.mask_request_body_for_record(request.info, content_type, body)
    except masking.WriteRefused as exc:
        raise GatewayError(exc.code, str(exc), reason=exc.reason) from None
    except masking.MaskingError as exc:
        raise GatewayError(400, f"airlock: the request body cannot be inspected: {exc}") from None
