"""The gateway's request pipeline, as plain units testable without sockets.

parse -> authenticate -> authorize (decide, lease, hold for review) -> forward -> mask, in that
order (gateway.app); the request is recorded as it arrives, before it is forwarded and once it
completes (gateway.addons, through gateway.hooks).

Each stage returns a frozen result, folded into a new :class:`GatewayRequest` (never changed in
place), or raises :class:`~kube.status.GatewayError`, which the ASGI glue turns into a Kubernetes
``Status``.  Nothing here reads a socket.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import MISSING, dataclass, field, fields
from typing import TYPE_CHECKING
from urllib.parse import quote

import masking
from connections.validation import CONNECTION_NAME
from identity.principal import Principal
from kube import bodies, kubeproto
from kube import headers as hdr
from kube.dryrun import NOT_ASKED, DryRun, classify
from kube.media import declared_content_type, media_type
from kube.requestinfo import RequestInfo, RequestInfoError, canonical_path, parse
from kube.status import GatewayError

# The ASGI scope key an in-process caller (mcpfront, the MCP endpoint) sets on the requests it sends
# through this gateway: an :class:`InProcessCaller`.  Only code in this process can put it in a scope
# (servers build scopes from the wire and never add it; no header maps to it), so an outside client
# cannot claim a parent or answer-at-once.
IN_PROCESS = "airlock.in_process"


@dataclass(frozen=True)
class InProcessCaller:
    """Who sends a request from inside Airlock, on an agent's behalf and with the agent's own token.

    ``origin``: shown to reviewers (``mcp``); ``parent_id``: the audit id of the tool call that
    caused the request (its record names it); ``detail``: a few words for reviewers (the tool);
    ``at_once``: a review rule answers at once with its pending Status instead of holding the request
    open (the caller tells the agent and offers a way to wait).
    """

    origin: str
    parent_id: str
    detail: str = ""
    at_once: bool = True


if TYPE_CHECKING:
    from approvals.hold import HoldOutcome
    from approvals.lease_check import ActiveLease
    from policy.evaluate import Decision
    from masking.values import SecretValues


@dataclass(frozen=True)
class GatewayRequest:
    """One agent request as the gateway understands it, as far as the stages have got.

    Frozen: a stage's result is folded in with :meth:`evolve`, which makes a new request.
    """

    connection: str
    method: str
    upstream_path: str  # still percent-encoded, exactly as forwarded
    query: str
    headers: tuple[tuple[str, str], ...]
    info: RequestInfo
    transport: str  # "http", "websocket" or "spdy"
    client_addr: str = ""
    audit_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    base_url: str = ""  # scheme://host[:port] the agent reached the gateway at (links in its messages)
    principal: Principal | None = None  # authenticate
    body: bytes | None = None  # HTTP: read and transcoded before authorize, so reviews see it
    dry_run: DryRun = NOT_ASKED  # whether kube-apiserver runs it as a dry run (kube.dryrun), once the body is read
    decision: Decision | None = None  # authorize: what the connection's rules decided
    lease: ActiveLease | None = None  # the lease a requires_lease rule found
    review: HoldOutcome | None = None  # the approved review when the rule said review
    mask_secrets: bool = True  # the decision's, unless an approved review granted unmasking
    release_token: bool = False  # a TokenRequest whose token the agent may receive (masking.tokens)
    secret_values: SecretValues | None = None  # the cluster's Secret values to mask, once admitted
    caller: InProcessCaller | None = None  # set only from the ASGI scope key IN_PROCESS (an in-process caller)

    @property
    def target(self) -> str:
        return self.upstream_path + ("?" + self.query if self.query else "")

    def evolve(self, **changes) -> GatewayRequest:
        """A copy with ``changes`` (field names): a stage's result folded in; this request itself
        when every change is the value it already holds (a stage that learnt nothing new).

        What dataclasses.replace does, without re-running ``__init__`` over every field: this is
        on the hot path, a few times per request.
        """
        state = self.__dict__
        unchanged = True
        for name, value in changes.items():
            try:
                if state[name] is not value:
                    unchanged = False
            except KeyError:
                raise TypeError(f"GatewayRequest has no field {name!r}") from None
        if unchanged:
            return self
        new = object.__new__(GatewayRequest)
        new.__dict__.update(state, **changes)
        return new


# The fields parse_request leaves at their defaults (it gives every other one).
_DEFAULTS = {f.name: f.default for f in fields(GatewayRequest) if f.default is not MISSING}


@dataclass(frozen=True)
class Body:
    """Stage 1 for a request body: the bytes every later stage reads, and the headers they are
    forwarded with (a Content-Type the gateway declared for them)."""

    content: bytes
    headers: tuple[tuple[str, str], ...]


def split_connection(raw_path: str, prefix: str) -> tuple[str, str]:
    """``/k8s/<name>/api/v1/pods`` -> (``name``, ``/api/v1/pods``)."""
    if not raw_path.startswith(prefix):
        raise GatewayError(404, "the server could not find the requested resource")
    rest = raw_path[len(prefix):]
    name, slash, upstream_path = rest.partition("/")
    if not CONNECTION_NAME.match(name):
        raise GatewayError(404, f'connection "{name[:64]}" not found')
    return name, slash + upstream_path if slash else "/"


# What parse_request derives from a request's shape alone (method, path, query string: canonical_path and
# parse are pure functions of them): (query, RequestInfo) of the shapes seen last, so an agent repeating a
# request does not validate and parse its path again.  Only shapes that passed every check are kept;
# bounded in entries and in key length (the oldest entry goes first), per process.
_SHAPES: dict[tuple[str, str, bytes], tuple[str, RequestInfo]] = {}
SHAPES_MAX = 1024
SHAPE_KEY_MAX = 512  # characters of path and query: longer requests are parsed every time


def parse_request(scope: dict, prefix: str, audit_id: str | None = None) -> GatewayRequest:
    """Stage 1: refuse non-canonical paths, then derive the RequestInfo."""
    raw = scope.get("raw_path")
    if raw is None:
        raw = quote(scope["path"]).encode()
    try:
        raw_path = raw.decode("ascii")
    except UnicodeDecodeError:
        raise GatewayError(400, "request path is not valid ASCII") from None
    name, upstream_path = split_connection(raw_path, prefix)
    websocket = scope["type"] == "websocket"
    method = "GET" if websocket else scope["method"].upper()
    raw_query = scope.get("query_string", b"")
    shape_key = (method, upstream_path, raw_query)
    shape = _SHAPES.get(shape_key)
    if shape is None:
        try:
            path = canonical_path(upstream_path)
        except RequestInfoError as exc:
            raise GatewayError(400, f"request path rejected: {exc}") from None
        try:
            query = raw_query.decode("ascii")
        except UnicodeDecodeError:
            raise GatewayError(400, "query string is not valid ASCII") from None
        if "\x00" in query or "%00" in query:
            raise GatewayError(400, "query string contains NUL")
    headers = hdr.request_headers(scope.get("headers", []))
    transport = "websocket" if websocket else "spdy" if hdr.is_spdy_upgrade(headers) else "http"
    if shape is None:
        try:
            info = parse(method, path, query)
        except RequestInfoError as exc:
            raise GatewayError(400, f"request not understood: {exc}") from None
        if len(upstream_path) + len(raw_query) <= SHAPE_KEY_MAX:
            if len(_SHAPES) >= SHAPES_MAX:
                del _SHAPES[next(iter(_SHAPES))]
            _SHAPES[shape_key] = (query, info)
    else:
        query, info = shape
    client = scope.get("client") or ("", 0)
    caller = scope.get(IN_PROCESS)
    request = object.__new__(GatewayRequest)  # what __init__ makes, without its setattr per frozen field
    request.__dict__.update(
        _DEFAULTS,
        connection=name,
        method=method,
        upstream_path=upstream_path,
        query=query,
        headers=tuple(headers),
        info=info,
        transport=transport,
        client_addr=client[0] or "",
        audit_id=audit_id if audit_id is not None else str(uuid.uuid4()),
        base_url=base_url(scope, headers),
        caller=caller if isinstance(caller, InProcessCaller) else None,
    )
    return request


def _declared(request: GatewayRequest, media: str) -> tuple[tuple[str, str], ...]:
    return (*((n, v) for n, v in request.headers if n != "content-type"), ("content-type", media))


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


def classify_dry_run(request: GatewayRequest) -> DryRun:
    """Whether kube-apiserver will run the request as a dry run: read where it reads ``dryRun``, after the body."""
    return classify(request.info, request.query, request.headers, request.body)


def parse_body(request: GatewayRequest, body: bytes) -> Body:
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
        return Body(body, request.headers)
    content_type = declared_content_type(request.headers)
    if content_type.split(";", 1)[0].strip().lower() == kubeproto.MEDIA_TYPE:
        try:
            obj = kubeproto.decode(body, strict=True)
        except kubeproto.ProtobufError as exc:
            raise GatewayError(
                415, f"airlock cannot inspect this protobuf request body ({exc}); send application/json"
            ) from None
        return Body(json.dumps(obj, separators=(",", ":")).encode(), _declared(request, "application/json"))
    headers = request.headers
    try:
        media = bodies.cluster_media(request.info, content_type)
        if media is None:
            media = media_type(content_type)
        elif media_type(content_type) != media:
            headers = _declared(request, media)
        bodies.check(media, body)
    except bodies.BodyRefused as exc:
        raise GatewayError(exc.code, f"airlock: {exc}") from None
    return Body(body, headers)


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
