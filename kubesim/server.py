"""kubesim's HTTP layer: an aiohttp application that answers like kube-apiserver.

One catch-all route: every request is authenticated, impersonation is applied, the request is
logged, RequestInfo is derived exactly like kube-apiserver does, the request is authorized and
then dispatched to discovery, OpenAPI, the generic REST handlers or a special subresource.
Failures are Kubernetes ``Status`` objects, never tracebacks.

Long because it is the double's one catch-all route and its generic REST handlers, in kube-
apiserver's order; the special subresources live in their own modules.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import traceback
from dataclasses import dataclass, field

import yaml
from aiohttp import web, web_protocol
from aiohttp.http_exceptions import BadHttpMessage, InvalidHeader
from aiohttp.http_parser import HeadersParser, HttpRequestParserPy
from multidict import CIMultiDict, MultiMapping

from kube import kubeproto as protobuf
from kube.vocabulary import STREAM_SUBRESOURCES

from . import errors, patch, schema, tables
from .auth import API_AUDIENCE, Attributes, Auth, UserInfo
from .certs import peer_identity
from .channels import is_websocket_upgrade, offered_protocols
from .discovery import AGGREGATED_MEDIA_TYPE, Discovery, Resource
from .errors import ApiError
from .openapi import V2_PROTOBUF, V2_PROTOBUF_ACCEPTED, OpenAPI
from .requestlog import RequestLog
from .selectors import exact_name, parse_field_selector, parse_label_selector
from .store import Cluster, WatchSpec, encode_json

log = logging.getLogger("kubesim")

MAX_BODY = 3 * 1024 * 1024
# kube-apiserver's Go server reads up to 1 MiB of request headers (MaxHeaderBytes), in any number
# of fields; aiohttp's own defaults (128 fields, 8 KiB per line) refuse far less.  For its runner.
MAX_HEADER_BYTES = 1 << 20
HEADER_LIMITS = {"max_line_size": MAX_HEADER_BYTES, "max_field_size": MAX_HEADER_BYTES,
                 "max_headers": MAX_HEADER_BYTES // 4}  # a field takes at least "a:\r\n"
# Control characters other than HTAB: Go's server refuses them in a value (httpguts.ValidHeaderFieldValue).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
DEFAULT_WATCH_TIMEOUT = 1800


class GoHeaders(HeadersParser):
    """Request headers as Go's net/http reads them.

    aiohttp's request parser refuses a repeated RFC 9110 single-value field (User-Agent,
    Content-Type, Server, ETag, ...) with a 400 and has no switch for it (only its response parser
    is lax: aio-libs/aiohttp#12302).  Go keeps every value (kube-apiserver's Header.Get reads the
    first) and refuses only what lets two readers disagree about the message: a repeated Host or
    Transfer-Encoding, differing Content-Lengths.  aiohttp's lax mode skips the repeat check and
    joins obsolete line folding as Go does; the control characters it lets through are refused
    here, as Go refuses them.
    """

    def __init__(self, max_line_size: int, max_headers: int, max_field_size: int):
        super().__init__(max_line_size, max_headers, max_field_size, lax=True)

    def parse_headers(self, lines):
        headers, raw = super().parse_headers(lines)
        for value in headers.values():
            if _CONTROL.search(value):
                raise InvalidHeader(value.encode("utf-8", "surrogateescape"))
        if len(headers.getall("Host", ())) > 1:
            raise BadHttpMessage("too many Host headers")
        if len(headers.getall("Transfer-Encoding", ())) > 1:
            raise BadHttpMessage("too many transfer encodings")
        if len({value.strip() for value in headers.getall("Content-Length", ())}) > 1:
            raise BadHttpMessage("message cannot contain multiple Content-Length headers")
        return headers, raw


class GoRequestParser(HttpRequestParserPy):
    """aiohttp's request parser with :class:`GoHeaders`: the pure-Python one, since the C parser's
    checks cannot be changed (about 25 µs more per request)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._headers_parser = GoHeaders(self.max_line_size, self.max_headers, self.max_field_size)


def read_headers_as_go() -> None:
    """aiohttp's server (this process's) parses requests with :class:`GoRequestParser`.

    aiohttp takes no parser class: its request handler builds the parser it names at module level.
    """
    web_protocol.HttpRequestParser = GoRequestParser
VERSION = {
    "major": "1",
    "minor": "37",
    "emulationMajor": "1",
    "emulationMinor": "37",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "36",
    "gitVersion": "v1.37.1-kubesim",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-11-01T00:00:00Z",
    "goVersion": "go1.25.4",
    "compiler": "gc",
    "platform": "linux/amd64",
}
SPECIAL_VERBS = ("watch", "proxy")
NAMESPACE_SUBRESOURCES = ("status", "finalize")
PROXY_SUBRESOURCES = ("proxy",)
SPDY_REFUSED = (
    "kubesim speaks only WebSockets for exec, attach and port-forward (kubectl >= 1.30, and >= 1.31 "
    "for port-forward); the SPDY upgrade was refused"
)


# -- RequestInfo (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go) -------------------------


@dataclass
class RequestInfo:
    path: str
    verb: str
    is_resource: bool = False
    prefix: str = ""
    group: str = ""
    version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    parts: list[str] = field(default_factory=list)
    verb_via_path: bool = False


def query_bool(value: str | None) -> bool:
    """Go's Convert_Slice_string_To_bool: only "0" and "false" (any case) are false."""
    return value is not None and value.lower() not in ("0", "false")


def request_info(method: str, path: str, query: MultiMapping[str]) -> RequestInfo:
    info = RequestInfo(path=path, verb=method.lower())
    parts = [p for p in path.strip("/").split("/")] if path.strip("/") else []
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return info
    info.prefix = parts.pop(0)
    if info.prefix == "apis":
        if len(parts) < 3:
            return info
        info.group = parts.pop(0)
    info.is_resource = True
    info.version = parts.pop(0)
    if parts and parts[0] in SPECIAL_VERBS:
        if len(parts) < 2:
            raise errors.bad_request("unable to determine kind and namespace from url")
        info.verb = parts.pop(0)
        info.verb_via_path = True
    else:
        info.verb = {"post": "create", "get": "get", "head": "get", "put": "update", "patch": "patch",
                     "delete": "delete"}.get(method.lower(), "")
    if parts and parts[0] == "namespaces":
        if len(parts) > 1:
            info.namespace = parts[1]
            if len(parts) > 2 and parts[2] not in NAMESPACE_SUBRESOURCES:
                parts = parts[2:]
    info.parts = parts
    if len(parts) >= 3 and info.verb != "proxy":
        info.subresource = parts[2]
    if len(parts) >= 2:
        info.name = parts[1]
    if parts:
        info.resource = parts[0]
    if not info.name and info.verb == "get":
        info.verb = "watch" if "watch" in query and query_bool(query.get("watch")) else "list"
        if info.verb in ("list", "watch"):
            name = exact_name(parse_field_selector(query.get("fieldSelector")))
            if name and name not in (".", "..") and "/" not in name and "%" not in name:
                info.name = name
    if not info.name and info.verb == "delete":
        info.verb = "deletecollection"
    return info


# -- content negotiation ---------------------------------------------------------------------------


def _media_ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    ranges = []
    for i, clause in enumerate(accept.split(",")):
        pieces = [p.strip() for p in clause.split(";")]
        if not pieces[0]:
            continue
        params = {}
        for p in pieces[1:]:
            k, _, v = p.partition("=")
            params[k.strip().lower()] = v.strip().strip('"')
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 1.0
        if q > 0:
            ranges.append((q, i, pieces[0].lower(), params))
    ranges.sort(key=lambda r: (-r[0], r[1]))
    return [(r[2], r[3]) for r in ranges]


def negotiate(accept: str | None, *, allow_transform: bool) -> str:
    """"json", "table", "pom" (PartialObjectMetadata[List]) or 406 like kube-apiserver."""
    if not accept or not accept.strip():
        return "json"
    for mime, params in _media_ranges(accept):
        if mime in ("*/*", "application/*"):
            return "json"
        if mime != "application/json":
            continue
        target = params.get("as")
        if not target:
            return "json"
        if not allow_transform:
            continue
        if target == "Table" and params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
            return "table"
        if target in ("PartialObjectMetadata", "PartialObjectMetadataList") and params.get("g") == "meta.k8s.io" \
                and params.get("v") in ("v1", "v1beta1"):
            return "pom"
    raise errors.not_acceptable(["application/json"])


def json_response(body: dict | bytes, status: int = 200, headers: CIMultiDict | None = None, *,
                  serialized: bool = True) -> web.Response:
    """JSON response; ``serialized`` bodies (objects, lists, Status, discovery) end with the newline that
    kube-apiserver's serializer writes, the OpenAPI documents and /version (written raw there) do not."""
    data = body if isinstance(body, bytes) else encode_json(body)
    if serialized and not data.endswith(b"\n"):
        data += b"\n"
    resp = web.Response(body=data, status=status, headers=headers)
    resp.content_type = "application/json"
    return resp


def status_response(exc: ApiError) -> web.Response:
    resp = json_response(exc.status(), exc.code)
    for k, v in exc.headers.items():
        resp.headers[k] = v
    return resp


@dataclass
class Context:
    request: web.Request
    info: RequestInfo
    body: bytes
    user: UserInfo
    query: MultiMapping[str]
    warnings: list[str] = field(default_factory=list)

    def header(self, name: str) -> str:
        return self.request.headers.get(name, "")


def _int_param(query: MultiMapping[str], name: str, default: int | None = None) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise errors.bad_request(f'invalid value for {name}: "{value}"') from None


def _go_json_type(value) -> str:
    """How Go's encoding/json names a JSON value's type in its unmarshal errors."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "array" if isinstance(value, list) else "object"


def _dry_run(query: MultiMapping[str] | None, body_values: list | None = None) -> bool:
    values = (list(query.getall("dryRun", [])) if query is not None else []) + list(body_values or [])
    for v in values:
        if v != "All":
            raise errors.bad_request(f'dryRun: Unsupported value: "{v}": supported values: "All"')
    return bool(values)


def selector_string(selector: dict | None) -> str:
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr.get("operator"), expr.get("key"), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(sorted(values))})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(sorted(values))})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


class WatchSink:
    """Where a watch's events go: a chunked JSON stream, or a WebSocket when the client asked for one.

    kube-apiserver's serveWatch answers a WebSocket upgrade (golang.org/x/net/websocket, which
    echoes the one subprotocol offered) with one text message per JSON event; kubectl never asks
    for that, browsers and some clients do.
    """

    def __init__(self, request: web.Request) -> None:
        self.websocket = is_websocket_upgrade(request)
        if self.websocket:
            self.resp = web.WebSocketResponse(protocols=offered_protocols(request)[:1], compress=False)
        else:
            self.resp = web.StreamResponse(status=200)
            self.resp.content_type = "application/json"
            self.resp.headers["Cache-Control"] = "no-cache, private"
            self.resp.enable_chunked_encoding()

    async def prepare(self, request: web.Request) -> None:
        await self.resp.prepare(request)

    async def write(self, event: bytes) -> None:
        if self.websocket:
            await self.resp.send_str(event.decode("utf-8"))
        else:
            await self.resp.write(event)

    async def write_eof(self) -> None:
        if self.websocket:
            await self.resp.close()
        else:
            await self.resp.write_eof()


# kube-apiserver's decoder stops at 10,000 levels; a typed object never nests near that, and the
# store copies objects recursively, so kubesim refuses what Python's copy could not follow.
MAX_OBJECT_DEPTH = 500


def _deeper_than(value, limit: int) -> bool:
    """Whether ``value`` nests more than ``limit`` containers deep (iteratively: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


class KubeSim:
    """The application: owns the cluster, auth, request log and pre-encoded documents."""

    def __init__(self, cluster: Cluster, auth: Auth, requestlog: RequestLog, *,
                 bookmark_interval: float = 5.0, log_poll_interval: float = 0.05) -> None:
        self.cluster = cluster
        self.discovery: Discovery = cluster.discovery
        self.auth = auth
        self.requestlog = requestlog
        self.openapi = OpenAPI(self.discovery)
        self.bookmark_interval = bookmark_interval
        self.log_poll_interval = log_poll_interval
        self._version = encode_json(VERSION)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY + 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    # -- entry point ---------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        rid = self.requestlog.new_id()
        status = 500
        logged = False
        try:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise errors.too_large(MAX_BODY) from None
            user: UserInfo | None = None
            impersonated: UserInfo | None = None
            try:
                peer = peer_identity(request.transport.get_extra_info("peercert") if request.transport else None)
                user = self.auth.authenticate(request.headers.get("Authorization"), peer)
                impersonated = self.auth.impersonate(user, request.headers)
            finally:
                self.requestlog.request(
                    rid, method=request.method, path=request.path, query=request.query_string,
                    headers=request.headers.items(), body=body, remote=request.remote,
                    user=user.to_json() if user else None,
                    impersonated=impersonated.to_json() if impersonated else None)
                logged = True
            info = request_info(request.method, request.path, request.query)
            ctx = Context(request, info, body, impersonated or user, request.query)
            resp = await self.dispatch(ctx)
            status = resp.status
            return resp
        except ApiError as exc:
            status = exc.code
            return status_response(exc)
        except asyncio.CancelledError:
            status = 499
            raise
        except (ConnectionResetError, ConnectionError):
            status = 499
            raise
        except Exception as exc:
            # Type and location only: exception messages may quote object content (secrets).
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            log.error("internal error serving %s %s: %s at %s:%s", request.method, request.path,
                      type(exc).__name__, frame.filename, frame.lineno)
            status = 500
            return status_response(ApiError(500, "InternalError", "Internal error occurred: kubesim failed to "
                                            "serve the request"))
        finally:
            if not logged:
                self.requestlog.request(rid, method=request.method, path=request.path,
                                        query=request.query_string, headers=request.headers.items(), body=b"",
                                        remote=request.remote, user=None, impersonated=None)
            self.requestlog.response(rid, status, started)

    async def dispatch(self, ctx: Context) -> web.StreamResponse:
        info = ctx.info
        if not info.is_resource:
            self.auth.authorize(ctx.user, Attributes(info.verb, False, path=info.path))
            return self.non_resource(ctx)
        res = self.discovery.lookup(info.group, info.version, info.resource)
        if res is None:
            raise errors.path_not_found()
        if not res.namespaced and info.namespace and res.name != "namespaces":
            raise errors.path_not_found()
        if res.namespaced and not info.namespace and info.name:
            raise errors.path_not_found()
        if info.subresource and info.subresource not in res.subresources:
            raise errors.path_not_found()
        if len(info.parts) > 3 and info.subresource not in PROXY_SUBRESOURCES:
            raise errors.path_not_found()
        attrs = Attributes(info.verb, True, info.group, info.resource, info.subresource,
                           info.namespace, info.name)
        self.auth.authorize(ctx.user, attrs)
        if info.subresource in STREAM_SUBRESOURCES:
            return await self.stream(ctx, res, attrs)
        if info.subresource in PROXY_SUBRESOURCES or info.verb == "proxy":
            raise ApiError(503, "ServiceUnavailable", "kubesim does not proxy to pods, services or nodes")
        allowed = res.subresources[info.subresource].verbs if info.subresource else res.verbs
        if info.verb not in allowed:
            raise errors.method_not_allowed()
        return await self.rest(ctx, res)

    # -- non-resource endpoints ----------------------------------------------------------------

    def non_resource(self, ctx: Context) -> web.StreamResponse:
        path = ctx.info.path
        method = ctx.request.method
        if method not in ("GET", "HEAD"):
            if path in self.discovery.legacy or path.startswith(("/openapi", "/version", "/healthz")):
                raise errors.method_not_allowed()
            raise errors.path_not_found()
        if path in ("/healthz", "/livez", "/readyz", "/healthz/ping", "/livez/ping", "/readyz/ping"):
            return web.Response(text="ok", content_type="text/plain")
        if path in ("/version", "/version/"):
            return json_response(self._version, serialized=False)
        accept = ctx.header("Accept")
        if path in ("/api", "/apis"):
            for mime, params in _media_ranges(accept):
                if mime == "application/json" and params.get("as") == "APIGroupDiscoveryList" \
                        and params.get("g") == "apidiscovery.k8s.io" and params.get("v") == "v2":
                    resp = web.Response(body=self.discovery.aggregated[path].rstrip(b"\n") + b"\n")
                    resp.headers["Content-Type"] = AGGREGATED_MEDIA_TYPE
                    resp.headers["Vary"] = "Accept"
                    return resp
            negotiate(accept, allow_transform=False)
            resp = json_response(self.discovery.legacy[path])
            resp.headers["Vary"] = "Accept"
            return resp
        doc = self.discovery.legacy.get(path.rstrip("/"))
        if doc is not None:
            negotiate(accept, allow_transform=False)
            return json_response(doc)
        if path in ("/openapi/v3", "/openapi/v3/"):
            return json_response(self.openapi.v3_root(), serialized=False)
        if path.startswith("/openapi/v3/"):
            doc = self.openapi.v3_document(path[len("/openapi/v3/"):])
            if doc is None:
                raise errors.path_not_found()
            resp = json_response(doc, serialized=False)
            if ctx.query.get("hash"):
                resp.headers["Cache-Control"] = "public, immutable"
            return resp
        if path == "/openapi/v2":
            if any(mime in V2_PROTOBUF_ACCEPTED for mime, _ in _media_ranges(accept)):
                return web.Response(body=self.openapi.v2_protobuf(), content_type=V2_PROTOBUF)
            negotiate(accept, allow_transform=False)
            return json_response(self.openapi.v2(), serialized=False)
        raise errors.path_not_found()

    # -- request bodies --------------------------------------------------------------------

    def decode_body(self, ctx: Context) -> dict:
        ctype = ctx.header("Content-Type").split(";", 1)[0].strip().lower()
        body = ctx.body
        if ctype == protobuf.MEDIA_TYPE:
            try:
                return protobuf.decode(body)
            except protobuf.ProtobufError as exc:
                raise ApiError(415, "UnsupportedMediaType", f"{exc}; send application/json instead") from None
        if ctype in ("application/json", ""):
            if not body.strip():
                raise errors.bad_request("the body of the request is empty")
            try:
                obj = json.loads(body)
            except ValueError as exc:
                raise errors.bad_request(f"couldn't get version/kind; json parse error: {exc}") from None
            except RecursionError:  # kube-apiserver's decoder stops at 10,000 levels, Python's earlier
                raise errors.bad_request("couldn't get version/kind; json parse error: exceeded max depth") from None
        elif ctype == "application/yaml":
            try:
                obj = yaml.safe_load(body)
            except (yaml.YAMLError, RecursionError):
                raise errors.bad_request("couldn't get version/kind; yaml parse error") from None
        else:
            raise errors.unsupported_media_type(["application/json", "application/yaml",
                                                 "application/vnd.kubernetes.protobuf"])
        if not isinstance(obj, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        if _deeper_than(obj, MAX_OBJECT_DEPTH):
            raise errors.bad_request("couldn't get version/kind; json parse error: exceeded max depth")
        for field in ("apiVersion", "kind"):  # decoded into Go strings first (TypeMeta); null leaves one empty
            if obj.get(field) is not None and not isinstance(obj[field], str):
                raise errors.bad_request(f"couldn't get version/kind; json parse error: json: cannot unmarshal "
                                         f"{_go_json_type(obj[field])} into Go struct field .{field} of type string")
        return obj

    def validate_fields(self, ctx: Context, res: Resource, obj: dict) -> None:
        """Apply ``fieldValidation``: Strict rejects unknown fields, Warn warns, both drop them."""
        mode = ctx.query.get("fieldValidation") or "Warn"
        if mode not in ("Strict", "Warn", "Ignore"):
            raise errors.bad_request(f"fieldValidation parameter unsupported: {mode}")
        probe = {**obj, "apiVersion": res.api_version, "kind": res.kind}
        unknown = schema.unknown_fields(probe, prune=True)
        if not unknown:
            return
        for key in list(obj):
            if key not in probe:
                del obj[key]
        if mode == "Strict":
            listed = ", ".join(f'unknown field "{u}"' for u in unknown)
            raise errors.bad_request(f'{res.kind} in version "{res.version}" cannot be handled as a '
                                     f'{res.kind}: strict decoding error: {listed}')
        if mode == "Warn":
            ctx.warnings.extend(f'unknown field "{u}"' for u in unknown)

    def respond(self, ctx: Context, obj: dict | bytes, status: int = 200) -> web.Response:
        headers = CIMultiDict()
        for w in ctx.warnings:
            headers.add("Warning", '299 - "' + w.replace("\\", "\\\\").replace('"', '\\"') + '"')
        return json_response(obj, status, headers)

    # -- generic REST --------------------------------------------------------------------------

    async def rest(self, ctx: Context, res: Resource) -> web.StreamResponse:
        info = ctx.info
        special = self.SPECIAL_CREATE.get((res.group, res.name))
        if special is not None and info.verb == "create":
            return special(self, ctx, res)
        sub = info.subresource
        if sub == "log":
            return await self.pod_log(ctx, res)
        if sub == "token":
            return self.create_token(ctx, res)
        if sub == "eviction":
            return self.evict(ctx, res)
        if sub == "binding":
            return self.bind(ctx, info.namespace, info.name)
        if sub == "scale":
            return self.scale(ctx, res)
        verb = info.verb
        if verb == "get":
            return self.get(ctx, res)
        if verb == "list":
            return self.list(ctx, res)
        if verb == "watch":
            return await self.watch(ctx, res)
        if verb == "create":
            obj = self.decode_body(ctx)
            self.validate_fields(ctx, res, obj)
            created = self.cluster.create(res, info.namespace, obj, dry_run=_dry_run(ctx.query))
            return self.respond(ctx, created, 201)
        if verb == "update":
            obj = self.decode_body(ctx)
            if not sub:
                self.validate_fields(ctx, res, obj)
            updated = self.cluster.update(res, info.namespace, info.name, obj, dry_run=_dry_run(ctx.query),
                                          subresource=sub or None)
            return self.respond(ctx, updated)
        if verb == "patch":
            return self.patch(ctx, res)
        if verb == "delete":
            return self.delete(ctx, res)
        if verb == "deletecollection":
            return self.delete_collection(ctx, res)
        raise errors.method_not_allowed()

    def _transform_one(self, ctx: Context, res: Resource, obj: dict) -> dict | None:
        target = negotiate(ctx.header("Accept"), allow_transform=True)
        if target == "table":
            return tables.to_table([obj], res.name, res.group,
                                   include_object=ctx.query.get("includeObject") or "Metadata")
        if target == "pom":
            return tables.to_partial_object_metadata(obj)
        return None

    def get(self, ctx: Context, res: Resource) -> web.Response:
        info = ctx.info
        ns = info.namespace if res.namespaced else ""
        if not info.subresource:
            obj = self.cluster.get(res, ns, info.name)
            transformed = self._transform_one(ctx, res, obj)
            if transformed is not None:
                return json_response(transformed)
            raw = self.cluster.get_raw(res, ns, info.name)
            return json_response(raw if raw is not None else obj)
        negotiate(ctx.header("Accept"), allow_transform=False)
        return json_response(self.cluster.get(res, ns, info.name))

    @staticmethod
    def _selectors(ctx: Context):
        return parse_label_selector(ctx.query.get("labelSelector")), parse_field_selector(ctx.query.get("fieldSelector"))

    def list(self, ctx: Context, res: Resource) -> web.Response:
        target = negotiate(ctx.header("Accept"), allow_transform=True)
        labels, fields = self._selectors(ctx)
        limit = _int_param(ctx.query, "limit", 0) or 0
        items, meta = self.cluster.list(res, ctx.info.namespace or None, labels=labels, fields=fields,
                                        limit=max(limit, 0), continue_token=ctx.query.get("continue") or None)
        if target == "table":
            return json_response(tables.to_table(items, res.name, res.group,
                                                 include_object=ctx.query.get("includeObject") or "Metadata",
                                                 list_meta=meta))
        if target == "pom":
            return json_response(tables.to_partial_object_metadata_list(items, meta))
        head = encode_json({"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": meta})
        body = head[:-1] + b',"items":[' + b",".join(encode_json(i) for i in items) + b"]}"
        return json_response(body)

    def patch(self, ctx: Context, res: Resource) -> web.Response:
        info = ctx.info
        ns = info.namespace if res.namespaced else ""
        ctype = ctx.header("Content-Type")
        try:
            kind = patch.media_type(ctype)
        except patch.PatchError as exc:
            raise ApiError(exc.code, "UnsupportedMediaType", exc.message) from None
        dry_run = _dry_run(ctx.query)
        is_apply = kind == patch.APPLY_PATCH
        if is_apply and not ctx.query.get("fieldManager"):
            raise errors.invalid("meta.k8s.io", "PatchOptions", "", [(
                "fieldManager", "FieldValueRequired", "Required value: is required for apply patch")])
        try:
            current = self.cluster.get(res, ns, info.name)
        except ApiError as exc:
            if not (is_apply and exc.code == 404 and not info.subresource):
                raise
            seed = {"apiVersion": res.api_version, "kind": res.kind,
                    "metadata": {"name": info.name, **({"namespace": ns} if ns else {})}}
            obj = self._apply_patch(seed, ctx.body, ctype)
            self.validate_fields(ctx, res, obj)
            return self.respond(ctx, self.cluster.create(res, ns, obj, dry_run=dry_run), 201)
        patched = self._apply_patch(current, ctx.body, ctype)
        if not info.subresource:
            self.validate_fields(ctx, res, patched)
        rv = (patched.get("metadata") or {}).get("resourceVersion")
        check_rv = bool(rv) and rv != current["metadata"]["resourceVersion"]
        if check_rv:
            raise errors.conflict(res.group, res.name, info.name, errors.MODIFIED_CONFLICT)
        updated = self.cluster.update(res, ns, info.name, patched, dry_run=dry_run,
                                      subresource=info.subresource or None)
        return self.respond(ctx, updated)

    @staticmethod
    def _apply_patch(obj: dict, body: bytes, ctype: str) -> dict:
        try:
            return patch.apply_patch(obj, body, ctype)
        except patch.PatchError as exc:
            reason = {400: "BadRequest", 413: "RequestEntityTooLarge", 415: "UnsupportedMediaType",
                      422: "Invalid"}.get(exc.code, "BadRequest")
            raise ApiError(exc.code, reason, exc.message) from None

    def _delete_options(self, ctx: Context) -> dict:
        """DeleteOptions as kube-apiserver reads them: from the body when there is one, else from the query
        (a body makes the query's dryRun, propagationPolicy and gracePeriodSeconds count for nothing)."""
        if not ctx.body:
            opts: dict = {"dryRun": list(ctx.query.getall("dryRun", []))}
            if ctx.query.get("propagationPolicy"):
                opts["propagationPolicy"] = ctx.query.get("propagationPolicy")
            grace = _int_param(ctx.query, "gracePeriodSeconds")
            if grace is not None:
                opts["gracePeriodSeconds"] = grace
            return opts
        try:
            opts = self.decode_body(ctx)
        except ApiError:
            raise errors.bad_request("the body of the request is not a valid DeleteOptions") from None
        if not isinstance(opts, dict):
            raise errors.bad_request("the body of the request is not a valid DeleteOptions")
        return opts

    def delete(self, ctx: Context, res: Resource) -> web.Response:
        info = ctx.info
        opts = self._delete_options(ctx)
        propagation = opts.get("propagationPolicy")
        grace = opts.get("gracePeriodSeconds") if isinstance(opts.get("gracePeriodSeconds"), int) else None
        if isinstance(opts.get("orphanDependents"), bool):  # the deprecated switch wins, as in kube-apiserver
            propagation = "Orphan" if opts["orphanDependents"] else "Background"
        out = self.cluster.delete(res, info.namespace if res.namespaced else "", info.name,
                                  dry_run=_dry_run(None, opts.get("dryRun")), propagation=propagation,
                                  preconditions=opts.get("preconditions"), grace_seconds=grace)
        return json_response(out)

    def delete_collection(self, ctx: Context, res: Resource) -> web.Response:
        labels, fields = self._selectors(ctx)
        opts = self._delete_options(ctx)
        deleted = self.cluster.delete_collection(res, ctx.info.namespace or None, labels=labels, fields=fields,
                                                 dry_run=_dry_run(None, opts.get("dryRun")),
                                                 propagation=opts.get("propagationPolicy"))
        return json_response({"kind": f"{res.kind}List", "apiVersion": res.api_version,
                              "metadata": {"resourceVersion": str(self.cluster.rv)}, "items": deleted})

    # -- watch ---------------------------------------------------------------------------------

    async def watch(self, ctx: Context, res: Resource) -> web.StreamResponse:
        target = negotiate(ctx.header("Accept"), allow_transform=True)
        labels, fields = self._selectors(ctx)
        timeout = _int_param(ctx.query, "timeoutSeconds", DEFAULT_WATCH_TIMEOUT) or DEFAULT_WATCH_TIMEOUT
        allow_bookmarks = query_bool(ctx.query.get("allowWatchBookmarks"))
        sie = ctx.query.get("sendInitialEvents")
        send_initial = None if sie is None else query_bool(sie)
        name = ctx.info.name if ctx.info.name else None
        spec = WatchSpec((res.group, res.name), ctx.info.namespace or None, labels, fields, name)
        resp = WatchSink(ctx.request)
        try:
            watcher, initial = self.cluster.watch(res, spec, resource_version=ctx.query.get("resourceVersion"),
                                                  send_initial_events=send_initial)
        except ApiError as exc:
            if exc.code != 410:
                raise
            await resp.prepare(ctx.request)
            await resp.write(encode_json({"type": "ERROR", "object": exc.status()}) + b"\n")
            await resp.write_eof()
            return resp.resp
        include = ctx.query.get("includeObject") or "Metadata"
        first_table = [True]

        def encode(event_type: str, obj: dict) -> bytes:
            if target == "table":
                table = tables.to_table([obj], res.name, res.group, include_object=include)
                if not first_table[0]:
                    table["columnDefinitions"] = None
                first_table[0] = False
                obj = table
            elif target == "pom":
                obj = tables.to_partial_object_metadata(obj)
            return encode_json({"type": event_type, "object": obj}) + b"\n"

        def bookmark(initial_end: bool = False) -> bytes:
            meta: dict = {"resourceVersion": str(self.cluster.rv), "creationTimestamp": None}
            if initial_end:
                meta["annotations"] = {"k8s.io/initial-events-end": "true"}
            return encode_json({"type": "BOOKMARK", "object": {"kind": res.kind, "apiVersion": res.api_version,
                                                               "metadata": meta}}) + b"\n"

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            await resp.prepare(ctx.request)
            for event_type, obj, _ in initial:
                await resp.write(encode(event_type, obj))
            if send_initial:
                await resp.write(bookmark(initial_end=True))
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0 or watcher.overflowed:
                    break
                wait = min(remaining, self.bookmark_interval) if allow_bookmarks else remaining
                try:
                    event_type, obj, _ = await asyncio.wait_for(watcher.queue.get(), wait)
                except asyncio.TimeoutError:
                    if allow_bookmarks and loop.time() < deadline:
                        await resp.write(bookmark())
                    continue
                await resp.write(encode(event_type, obj))
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.cluster.unwatch(watcher)
        return resp.resp

    # -- special subresources ------------------------------------------------------------------

    def _pod(self, ns: str, name: str) -> dict:
        return self.cluster.get(self.discovery.lookup("", "v1", "pods"), ns, name)

    @staticmethod
    def _container(pod: dict, wanted: str | None) -> str:
        spec = pod.get("spec") or {}
        names = [c["name"] for c in spec.get("containers") or []]
        init = [c["name"] for c in spec.get("initContainers") or []]
        podname = pod["metadata"]["name"]
        if wanted:
            if wanted not in names + init:
                raise errors.bad_request(f"container {wanted} is not valid for pod {podname}")
            return wanted
        if len(names) == 1:
            return names[0]
        msg = f"a container name must be specified for pod {podname}, choose one of: [{' '.join(names)}]"
        if init:
            msg += f" or one of the init containers: [{' '.join(init)}]"
        raise errors.bad_request(msg)

    async def pod_log(self, ctx: Context, res: Resource) -> web.StreamResponse:
        ns, name = ctx.info.namespace, ctx.info.name
        pod = self._pod(ns, name)
        container = self._container(pod, ctx.query.get("container"))
        if query_bool(ctx.query.get("previous")):
            raise errors.bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
        tail = _int_param(ctx.query, "tailLines")
        limit_bytes = _int_param(ctx.query, "limitBytes")
        timestamps = query_bool(ctx.query.get("timestamps"))
        follow = query_bool(ctx.query.get("follow"))
        path = self.cluster.sandbox_dir(ns, name) / ".logs" / f"{container}.log"
        try:
            data = path.read_bytes()
        except OSError:
            data = b""
        offset = len(data)
        if tail is not None and tail >= 0:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[len(lines) - tail:]) if tail else b""
        stamper = _Stamper(timestamps)
        data = stamper(data)
        if limit_bytes is not None and limit_bytes > 0:
            data = data[:limit_bytes]
        if not follow:
            return web.Response(body=data, content_type="text/plain")
        resp = web.StreamResponse(status=200)
        resp.content_type = "text/plain"
        resp.enable_chunked_encoding()
        await resp.prepare(ctx.request)
        uid = pod["metadata"].get("uid")
        try:
            if data:
                await resp.write(data)
            while True:
                await asyncio.sleep(self.log_poll_interval)
                live = self.cluster.find("", "pods", ns, name)
                if live is None or live["metadata"].get("uid") != uid:
                    break
                try:
                    size = path.stat().st_size
                except OSError:
                    continue
                if size < offset:
                    offset = 0
                if size > offset:
                    with path.open("rb") as fh:
                        fh.seek(offset)
                        chunk = fh.read(size - offset)
                    offset += len(chunk)
                    await resp.write(stamper(chunk))
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        return resp

    async def stream(self, ctx: Context, res: Resource, attrs: Attributes) -> web.StreamResponse:
        """exec/attach/portforward: WebSocket GETs go to kubesim.streams; SPDY is refused."""
        request = ctx.request
        upgrade = request.headers.get("Upgrade", "").lower()
        if request.method == "GET" and "websocket" in upgrade:
            # kube-apiserver >= 1.35 also requires "create" for WebSocket upgrades.
            self.auth.authorize(ctx.user, Attributes("create", True, attrs.group, attrs.resource,
                                                     attrs.subresource, attrs.namespace, attrs.name))
        pod = self._pod(ctx.info.namespace, ctx.info.name)
        phase = (pod.get("status") or {}).get("phase", "")
        sub = ctx.info.subresource
        if phase in ("Succeeded", "Failed"):
            doing = {"exec": "exec into", "attach": "attach to", "portforward": "port-forward to"}[sub]
            raise errors.bad_request(f"cannot {doing} a container in a completed pod; current phase is {phase}")
        if phase != "Running":
            raise errors.bad_request(f"pod {ctx.info.name} is not running (phase: {phase or 'Unknown'})")
        if "spdy" in upgrade:
            raise errors.bad_request(SPDY_REFUSED)
        if request.method != "GET" or "websocket" not in upgrade:
            raise errors.bad_request("Upgrade request required")
        from . import streams  # imported on first use: it pulls in the exec/port-forward machinery

        return await streams.handle(request, self.cluster, pod, sub)

    def create_token(self, ctx: Context, res: Resource) -> web.Response:
        info = ctx.info
        body = self.decode_body(ctx) if ctx.body.strip() else {}
        sa = self.cluster.get(res, info.namespace, info.name)
        spec = body.get("spec") or {}
        seconds = spec.get("expirationSeconds") or 3600
        if not isinstance(seconds, int) or seconds < 600:
            raise errors.invalid("authentication.k8s.io", "TokenRequest", info.name, [(
                "spec.expirationSeconds", "FieldValueInvalid",
                f"Invalid value: {seconds}: may not specify a duration less than 10 minutes")])
        seconds = min(seconds, 48 * 3600)
        audiences = spec.get("audiences") or [API_AUDIENCE]
        bound = spec.get("boundObjectRef") or None
        token, exp = self.auth.issue_token(info.namespace, info.name, sa["metadata"]["uid"], audiences=audiences,
                                           expiration_seconds=seconds, bound=bound)
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))
        out = {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": info.name, "namespace": info.namespace, "creationTimestamp": None},
            "spec": {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": bound},
            "status": {"token": token, "expirationTimestamp": expires},
        }
        return json_response(out, 201)

    def evict(self, ctx: Context, res: Resource) -> web.Response:
        info = ctx.info
        body = self.decode_body(ctx) if ctx.body.strip() else {}
        opts = body.get("deleteOptions") or {}
        self.cluster.delete(res, info.namespace, info.name, dry_run=_dry_run(ctx.query, opts.get("dryRun")),
                            preconditions=opts.get("preconditions"))
        return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                              "code": 201}, 201)

    def bind(self, ctx: Context, ns: str, name: str) -> web.Response:
        body = self.decode_body(ctx)
        pod_name = name or (body.get("metadata") or {}).get("name", "")
        target = (body.get("target") or {}).get("name")
        if not target:
            raise errors.invalid("", "Binding", pod_name, [("target.name", "FieldValueRequired", "Required value")])
        pods = self.discovery.lookup("", "v1", "pods")
        pod = self.cluster.get(pods, ns, pod_name)
        if (pod.get("spec") or {}).get("nodeName"):
            raise errors.conflict("", "pods", pod_name, f"pod {pod_name} is already assigned to node "
                                                        f'"{pod["spec"]["nodeName"]}"')
        self.cluster.update(pods, ns, pod_name, {**pod, "spec": {**pod["spec"], "nodeName": target}}, check_rv=False)
        return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                              "code": 201}, 201)

    def scale(self, ctx: Context, res: Resource) -> web.Response:
        info = ctx.info
        parent = self.cluster.get(res, info.namespace, info.name)

        def as_scale(obj: dict) -> dict:
            meta = obj["metadata"]
            return {
                "kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                             if k in meta},
                "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
                "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                           "selector": selector_string((obj.get("spec") or {}).get("selector"))},
            }

        if info.verb == "get":
            return json_response(as_scale(parent))
        if info.verb == "update":
            scale = self.decode_body(ctx)
        else:
            scale = self._apply_patch(as_scale(parent), ctx.body, ctx.header("Content-Type"))
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise errors.invalid("autoscaling", "Scale", info.name, [(
                "spec.replicas", "FieldValueInvalid",
                f"Invalid value: {json.dumps(replicas)}: must be greater than or equal to 0")])
        rv = (scale.get("metadata") or {}).get("resourceVersion")
        if rv and rv != parent["metadata"]["resourceVersion"]:
            raise errors.conflict(res.group, res.name, info.name, errors.MODIFIED_CONFLICT)
        dry_run = _dry_run(ctx.query)
        updated = self.cluster.update(res, info.namespace, info.name,
                                      {**parent, "spec": {**(parent.get("spec") or {}), "replicas": replicas}},
                                      dry_run=dry_run, check_rv=False)
        if dry_run:  # the object as it would be; the store (and so find()) still holds the old one
            return json_response(as_scale(updated))
        return json_response(as_scale(self.cluster.find(res.group, res.name, info.namespace, info.name) or updated))

    # -- review APIs -----------------------------------------------------------------------------

    def _review_attrs(self, spec: dict) -> Attributes:
        ra = spec.get("resourceAttributes")
        if ra:
            return Attributes(ra.get("verb", ""), True, ra.get("group", ""), ra.get("resource", ""),
                              ra.get("subresource", ""), ra.get("namespace", ""), ra.get("name", ""))
        nra = spec.get("nonResourceAttributes") or {}
        return Attributes(nra.get("verb", ""), False, path=nra.get("path", ""))

    def _review_response(self, res: Resource, body: dict, status: dict) -> web.Response:
        meta = dict(body.get("metadata") or {})
        meta.setdefault("creationTimestamp", None)
        return json_response({"kind": res.kind, "apiVersion": res.api_version, "metadata": meta,
                              "spec": body.get("spec") or {}, "status": status}, 201)

    def self_subject_access_review(self, ctx: Context, res: Resource) -> web.Response:
        body = self.decode_body(ctx)
        spec = body.get("spec") or {}
        if not spec.get("resourceAttributes") and not spec.get("nonResourceAttributes"):
            raise errors.invalid(res.group, res.kind, "", [("spec.resourceAttributes", "FieldValueRequired",
                                                            "Required value: exactly one of nonResourceAttributes "
                                                            "or resourceAttributes must be specified")])
        allowed = self.auth.allowed(ctx.user, self._review_attrs(spec))
        status = {"allowed": allowed}
        if allowed:
            status["reason"] = "kubesim: allowed for " + ("admin" if self.auth.is_admin(ctx.user) else "viewer")
        return self._review_response(res, body, status)

    def subject_access_review(self, ctx: Context, res: Resource) -> web.Response:
        body = self.decode_body(ctx)
        spec = body.get("spec") or {}
        if res.name == "localsubjectaccessreviews" and spec.get("resourceAttributes"):
            if (spec["resourceAttributes"].get("namespace") or ctx.info.namespace) != ctx.info.namespace:
                raise errors.bad_request("spec.resourceAttributes.namespace must match the namespace of the request")
            spec["resourceAttributes"]["namespace"] = ctx.info.namespace
        who = UserInfo(spec.get("user", ""), tuple(spec.get("groups") or ()), uid=spec.get("uid", ""))
        return self._review_response(res, body, {"allowed": self.auth.allowed(who, self._review_attrs(spec))})

    def self_subject_rules_review(self, ctx: Context, res: Resource) -> web.Response:
        body = self.decode_body(ctx)
        resources = [(r.group, r.name, tuple(r.subresources)) for r in self.discovery.resources.values()]
        return self._review_response(res, body, self.auth.rules(ctx.user, resources))

    def self_subject_review(self, ctx: Context, res: Resource) -> web.Response:
        body = self.decode_body(ctx) if ctx.body.strip() else {}
        meta = dict(body.get("metadata") or {})
        meta.setdefault("creationTimestamp", None)
        return json_response({"kind": res.kind, "apiVersion": res.api_version, "metadata": meta,
                              "status": {"userInfo": ctx.user.to_json()}}, 201)

    def token_review(self, ctx: Context, res: Resource) -> web.Response:
        body = self.decode_body(ctx)
        token = (body.get("spec") or {}).get("token", "")
        try:
            who = self.auth.authenticate(f"Bearer {token}", None) if token else None
        except ApiError:
            who = None
        status: dict = {"authenticated": who is not None}
        if who is not None:
            status["user"] = who.to_json()
            status["audiences"] = [API_AUDIENCE]
        else:
            status["error"] = "invalid bearer token"
        return self._review_response(res, body, status)

    def create_binding(self, ctx: Context, res: Resource) -> web.Response:
        return self.bind(ctx, ctx.info.namespace, "")

    SPECIAL_CREATE = {
        ("authorization.k8s.io", "selfsubjectaccessreviews"): self_subject_access_review,
        ("authorization.k8s.io", "subjectaccessreviews"): subject_access_review,
        ("authorization.k8s.io", "localsubjectaccessreviews"): subject_access_review,
        ("authorization.k8s.io", "selfsubjectrulesreviews"): self_subject_rules_review,
        ("authentication.k8s.io", "selfsubjectreviews"): self_subject_review,
        ("authentication.k8s.io", "tokenreviews"): token_review,
        ("", "bindings"): create_binding,
    }


class _Stamper:
    """Prefixes each log line with an RFC 3339 timestamp when ``timestamps=true``."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.at_line_start = True

    def __call__(self, data: bytes) -> bytes:
        if not self.enabled or not data:
            return data
        stamp = (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000000Z ").encode()
        out = bytearray()
        for line in data.splitlines(keepends=True):
            if self.at_line_start:
                out += stamp
            out += line
            self.at_line_start = line.endswith(b"\n")
        return bytes(out)

