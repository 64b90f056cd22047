"""A bounded, seeded fuzz of what agents send a gateway: request lines and headers, JSON and YAML
bodies, WebSocket frames.  Used by tests/e2e_resilience/test_fuzz.py (a few hundred cases) and
bench/soak.py (more).

Cases come from ``random.Random(seed)``: the same seed gives the same bytes, so a failure is
replayed by its seed and number.  Each case is sent over its own TLS connection, raw, so nothing
a client library would fix or refuse gets in the way.  Each carries ``User-Agent: fuzz/<n>`` (the
key of its audit event) unless the mutation is aimed at that header.  :func:`problems` says what
is wrong with the outcomes: a 500, no answer and no close within the bound (a hang), an error that
is not a Kubernetes ``Status`` (protocol-level garbage may instead get the HTTP server's own 400
and a close), a WebSocket ended with 1011 (its 500), more than one completion event for a case, a
completion event whose status is not the one answered, and an answered request that reached the
gateway without one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import re
import ssl
import struct
import time
from collections import Counter
from dataclasses import dataclass, field

from tests.gateway_harness import AGENT_TOKEN

CONFIGMAPS = "/k8s/kubesim/api/v1/namespaces/default/configmaps"
EXEC = "/k8s/kubesim/api/v1/namespaces/payments/pods/debug-shell/exec?command=cat&stdin=true&stdout=true"
AGENT = re.compile(r"fuzz/(\d+)")
# Answers the HTTP server gives itself, before a request reaches the gateway (no audit event), each
# with "Connection: close": uvicorn's plain-text 400 for what does not parse as HTTP/1.1 (as Go's
# net/http in kube-apiserver answers it), airlock.server's 408 (headers or body too slow) and 431
# (headers too large).
SERVER_ANSWERS = {400, 408, 431}
WS_CLOSE_OK = {1000, 1002, 1003, 1007, 1008, 1009}  # 1011 would be the WebSocket's 500
STALL_SECONDS = 1.0  # how long a stalling client waits before it goes away
MASK = b"\x1f\x2e\x3d\x4c"  # the client's masking key: any key will do, a fixed one keeps cases reproducible


@dataclass
class Case:
    number: int
    family: str  # "http", "body" or "websocket"
    name: str
    request: bytes  # the whole request (http, body) or the upgrade request (websocket)
    frames: list[bytes] = field(default_factory=list)  # websocket: sent after a 101
    # websocket: the frames leave the session open (a frame whose rest never comes, as from a client
    # that stalled): the client goes away after a moment, and the gateway must still record it
    stalls: bool = False

    @property
    def api(self) -> bool:
        """Aimed at the Kubernetes API (``/k8s/``); other targets reach the dashboard's HTML pages."""
        target = self.request.split(b" ", 2)[1] if self.request.count(b" ") >= 2 else b""
        return target.startswith(b"/k8s/") or target.startswith(b"https://127.0.0.1/k8s/")


@dataclass
class Result:
    case: Case
    status: int | None = None
    content_type: str = ""
    body: bytes = b""
    closed: bool = False  # the server closed the connection (or ended the WebSocket)
    closing: bool = False  # the answer said "Connection: close"
    close_code: int | None = None
    seconds: float = 0.0
    error: str = ""


# -- generation ------------------------------------------------------------------------------------

def _request(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b"",
             version: bytes = b"HTTP/1.1") -> bytes:
    head = method + b" " + target + b" " + version + b"\r\n"
    head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return head + b"\r\n" + body


def _base_headers(n: int) -> list[tuple[bytes, bytes]]:
    return [(b"Host", b"127.0.0.1"), (b"User-Agent", f"fuzz/{n}".encode()),
            (b"Authorization", f"Bearer {AGENT_TOKEN}".encode()), (b"Accept", b"application/json")]


def _junk(rng: random.Random, size: int, low: int = 0x80, high: int = 0xFF) -> bytes:
    return bytes(rng.randint(low, high) for _ in range(size))


HEADER_VALUES = [
    lambda rng: "café".encode(),
    lambda rng: "日本語のエージェント".encode(),
    lambda rng: b"\xc3\x28",  # invalid UTF-8
    lambda rng: b"\xff\xfe\xfd",
    lambda rng: _junk(rng, rng.randint(1, 64)),
    lambda rng: b"a\x00b",
    lambda rng: b"a\x7fb",
    lambda rng: b"a\x0bb",
    lambda rng: b"a\rb",
    lambda rng: b" padded \t",
    lambda rng: b"x" * rng.choice([1000, 8000, 70000]),
]


def _mutate_head(rng: random.Random, n: int) -> tuple[str, bytes]:
    """A request to list ConfigMaps with one to three things wrong in its line or headers."""
    method, target, version = b"GET", (CONFIGMAPS + "?limit=1").encode(), b"HTTP/1.1"
    headers = _base_headers(n)
    body = b""
    names = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["value", "name", "dup", "fold", "many", "length", "method", "version", "target", "auth",
                           "impersonate", "half"])
        names.append(kind)
        if kind == "value":
            header = rng.choice([b"User-Agent", b"X-Custom", b"Accept", b"Kubectl-Session", b"Content-Type",
                                 b"Accept-Language", b"Referer"])
            value = rng.choice(HEADER_VALUES)(rng)
            if header == b"User-Agent":
                value = f"fuzz/{n} ".encode() + value
            headers.append((header, value))
        elif kind == "name":
            headers.append((rng.choice([b"X-Caf\xc3\xa9", b"X Space", b"X:Colon", b"", b"X\x00", _junk(rng, 4)]), b"v"))
        elif kind == "dup":
            headers.append(rng.choice([
                (b"Host", b"evil.example"), (b"Authorization", b"Bearer not-a-token"),
                (b"Authorization", f"Bearer {AGENT_TOKEN}".encode()), (b"Accept", b"application/yaml"),
                (b"Content-Type", b"application/json"), (b"User-Agent", f"fuzz/{n}".encode()),
                (b"Content-Length", b"0"), (b"Transfer-Encoding", b"chunked"),
            ]))
        elif kind == "fold":
            headers.append((b"X-Folded", b"first\r\n second"))
        elif kind == "many":
            headers += [(f"X-H{i}".encode(), b"v") for i in range(rng.choice([100, 1000, 5000]))]
        elif kind == "length":
            method = rng.choice([b"POST", b"GET", b"DELETE"])
            payload = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"fuzz-%d"}}' % n
            headers.append((b"Content-Type", b"application/json"))
            combo = rng.choice(["cl+te", "te-te", "te-gzip", "te-bad-chunk", "cl-negative", "cl-plus", "cl-hex",
                                "cl-list", "cl-long", "cl-short", "te-space", "te-upper", "chunk-ext", "cl-huge"])
            names[-1] = f"length:{combo}"
            chunked = b"%x\r\n" % len(payload) + payload + b"\r\n0\r\n\r\n"
            if combo == "cl+te":
                headers += [(b"Content-Length", b"%d" % len(payload)), (b"Transfer-Encoding", b"chunked")]
                body = chunked
            elif combo == "te-te":
                headers += [(b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"identity")]
                body = chunked
            elif combo == "te-gzip":
                headers.append((b"Transfer-Encoding", b"gzip, chunked"))
                body = chunked
            elif combo == "te-bad-chunk":
                headers.append((b"Transfer-Encoding", b"chunked"))
                body = b"zz\r\n" + payload + b"\r\n0\r\n\r\n"
            elif combo in ("cl-negative", "cl-plus", "cl-hex", "cl-list"):
                value = {"cl-negative": b"-1", "cl-plus": b"+%d" % len(payload), "cl-hex": b"0x%x" % len(payload),
                         "cl-list": b"%d, %d" % (len(payload), len(payload))}[combo]
                headers.append((b"Content-Length", value))
                body = payload
            elif combo == "cl-long":
                headers.append((b"Content-Length", b"%d" % (len(payload) + 100)))
                body = payload  # the rest never comes
            elif combo == "cl-short":
                headers.append((b"Content-Length", b"%d" % (len(payload) // 2)))
                body = payload
            elif combo == "te-space":
                headers.append((b"Transfer-Encoding", b" chunked"))
                body = chunked
            elif combo == "te-upper":
                headers.append((b"Transfer-Encoding", b"CHUNKED"))
                body = chunked
            elif combo == "chunk-ext":
                headers.append((b"Transfer-Encoding", b"chunked"))
                body = b"%x;ext=\xff\r\n" % len(payload) + payload + b"\r\n0\r\nTrailer: \xc3\xa9\r\n\r\n"
            else:
                headers.append((b"Content-Length", b"99999999999999999999"))
                body = payload
        elif kind == "method":
            method = rng.choice([b"get", b"FOO", b"G\x00T", b"A" * 300, b"CONNECT", b"TRACE", b"OPTIONS", b"HEAD",
                                 b"PRI"])
        elif kind == "version":
            version = rng.choice([b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b"HTTP/9.9", b"", b"http/1.1"])
        elif kind == "target":
            target = rng.choice([
                b"https://127.0.0.1" + target, b"*", CONFIGMAPS.encode() + b"/%00", CONFIGMAPS.encode() + b"%2F..%2F",
                b"/k8s/kubesim/api/v1/namespaces/default/../kube-system/secrets",
                b"/k8s/kubesim//api/v1//namespaces/default/configmaps", b"/k8s/kubesim/api/v1/" + b"a/" * 4000,
                b"/k8s/kub\xc3\xa9sim/api/v1/pods", b"/k8s/kubesim/api/v1/pods?" + _junk(rng, 8),
                CONFIGMAPS.encode() + b"?watch=0&watch=1&limit=1&timeoutSeconds=1",
                CONFIGMAPS.encode() + b"?labelSelector=" + b"a%3D" * 3000, CONFIGMAPS.encode() + b"?%zz=1&limit=%",
                CONFIGMAPS.encode() + b"#fragment", b"/k8s/", b"/k8s/%ff/api", b"/k8s/kubesim/api/v1/namespaces/%2e%2e",
            ])
        elif kind == "auth":
            headers = [h for h in headers if h[0] != b"Authorization"]
            headers.append((b"Authorization", rng.choice([
                b"Bearer", b"Bearer ", b"Bearer  " + AGENT_TOKEN.encode(), b"bearer " + AGENT_TOKEN.encode(),
                b"Basic YWRtaW46YWRtaW4=", b"Bearer " + b"a" * 20000, b"Bearer \xc3\xa9t\xc3\xa9",
                b"Bearer " + AGENT_TOKEN.encode() + b"\x00",
            ])))
        elif kind == "impersonate":
            headers.append(rng.choice([(b"Impersonate-User", b"system:admin"), (b"Impersonate-Group", b"system:masters"),
                                       (b"Impersonate-Uid", b"0"), (b"Impersonate-Extra-Scopes", b"\xff"),
                                       (b"X-Remote-User", b"admin")]))
        else:  # half: the rest of the request never comes
            names[-1] = "half"
    raw = _request(method, target, headers, body, version)
    if "half" in names:
        raw = raw[:rng.randint(1, len(raw) - 1)]
    return "+".join(names), raw


def _deep(depth: int, opener: str, closer: str) -> str:
    return opener * depth + closer * depth


def _laughs() -> bytes:
    """Nine levels of nine aliases each: 9^9 strings once the aliases are expanded."""
    lines = ["a: &a [x,x,x,x,x,x,x,x,x]"]
    lines += [f"{c}: &{c} [{','.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
    return ("\n".join(lines) + "\n").encode()


JSON_BODIES = {
    "deep-array-1000": lambda rng, n: _deep(1000, "[", "]"),
    "deep-array-10001": lambda rng, n: _deep(10001, "[", "]"),
    "deep-array-100000": lambda rng, n: _deep(100000, "[", "]"),
    "deep-object-5000": lambda rng, n: '{"a":' * 5000 + "1" + "}" * 5000,
    "deep-in-data": lambda rng, n: ('{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"fuzz-%d"},"data":'
                                    % n) + '{"a":' * 3000 + '"x"' + "}" * 3000 + "}",
    "wide-object": lambda rng, n: json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                              "metadata": {"name": f"fuzz-{n}"},
                                              "data": {f"k{i}": "v" for i in range(50000)}}),
    "wide-array": lambda rng, n: "[" + ",".join("1" for _ in range(500000)) + "]",
    "nan": lambda rng, n: '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"fuzz-%d","generation":NaN}}' % n,
    "infinity": lambda rng, n: '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"fuzz-%d","generation":-Infinity}}' % n,
    "huge-number": lambda rng, n: '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"fuzz-%d","generation":1%s}}' % (n, "0" * 400),
    "1e999": lambda rng, n: '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"fuzz-%d","generation":1e999}}' % n,
    "duplicate-keys": lambda rng, n: '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"fuzz-%d","name":"other-%d"},"data":{"a":"1","a":"2"}}' % (n, n),
    "duplicate-kind": lambda rng, n: '{"apiVersion":"v1","kind":"ConfigMap","kind":"Secret","metadata":{"name":"fuzz-%d"},"stringData":{"a":"b"}}' % n,
    "lone-surrogate": lambda rng, n: '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"fuzz-%d"},"data":{"a":"\\ud800"}}' % n,
    "nul-escape": lambda rng, n: '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"fuzz-%d"},"data":{"a\\u0000":"\\u0000"}}' % n,
    "wrong-types": lambda rng, n: '{"apiVersion":1,"kind":[],"metadata":"x","data":5}',
    "truncated": lambda rng, n: '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"fuzz-',
    "trailing": lambda rng, n: '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"fuzz-%d"}} {"x":1}' % n,
    "empty": lambda rng, n: "",
    "null": lambda rng, n: "null",
    "bom": lambda rng, n: '\ufeff{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"fuzz-%d"}}' % n,
}
RAW_BODIES = {
    "invalid-utf8-string": lambda rng, n: b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"fuzz-%d"},"data":{"a":"\xff\xfe"}}' % n,
    "invalid-utf8-key": lambda rng, n: b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"fuzz-%d"},"data":{"\xc3\x28":"b"}}' % n,
    "random-bytes": lambda rng, n: _junk(rng, rng.randint(1, 2000), 0, 255),
    "yaml-laughs": lambda rng, n: _laughs(),
    "yaml-deep-flow": lambda rng, n: b"[" * 20000 + b"]" * 20000,
    "yaml-deep-block": lambda rng, n: b"".join(b"  " * i + b"a:\n" for i in range(2000)) + b"  " * 2000 + b"b\n",
    "yaml-python-tag": lambda rng, n: b"!!python/object/apply:os.system ['true']\n",
    "yaml-binary": lambda rng, n: b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fuzz-%d}\nbinaryData: {a: !!binary AAEC}\n" % n,
    "yaml-merge": lambda rng, n: b"base: &b {apiVersion: v1, kind: ConfigMap}\n<<: *b\nmetadata: {name: fuzz-%d}\n" % n,
    "yaml-multi-doc": lambda rng, n: b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fuzz-%d}\n---\nkind: Secret\n" % n,
    "yaml-duplicate": lambda rng, n: b"apiVersion: v1\nkind: ConfigMap\nkind: Secret\nmetadata: {name: fuzz-%d}\n" % n,
    "yaml-recursive": lambda rng, n: b"a: &a [*a]\n",
    "yaml-undefined-alias": lambda rng, n: b"a: *nothing\n",
    "yaml-tabs": lambda rng, n: b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n\tname: fuzz-%d\n" % n,
    "yaml-invalid-utf8": lambda rng, n: b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fuzz-%d}\ndata: {a: \xff}\n" % n,
    "yaml-nan": lambda rng, n: b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fuzz-%d, generation: .nan}\n" % n,
    "yaml-long-key": lambda rng, n: b"? " + b"k" * 100000 + b"\n: v\n",
}
CONTENT_TYPES = [b"application/json", b"application/yaml", b"application/merge-patch+json",
                 b"application/strategic-merge-patch+json", b"application/json-patch+json",
                 b"application/apply-patch+yaml", b"application/vnd.kubernetes.protobuf", b"text/plain",
                 b"application/json; charset=latin1", b"multipart/form-data; boundary=x", None]


def _body_case(rng: random.Random, n: int) -> tuple[str, bytes]:
    generators = {**{k: (lambda g: lambda rng, n: g(rng, n).encode("utf-8", "surrogatepass"))(g)
                     for k, g in JSON_BODIES.items()}, **RAW_BODIES}
    name = rng.choice(sorted(generators))
    body = generators[name](rng, n)
    content_type = rng.choice(CONTENT_TYPES)
    method, target = rng.choice([
        (b"POST", CONFIGMAPS.encode()), (b"PUT", f"{CONFIGMAPS}/fuzz-{n}".encode()),
        (b"PATCH", f"{CONFIGMAPS}/fuzz-{n}?fieldManager=fuzz".encode()),
        (b"POST", CONFIGMAPS.encode() + b"?fieldValidation=Strict"),
        (b"POST", b"/k8s/kubesim/api/v1/namespaces/default/secrets"),
    ])
    headers = _base_headers(n) + [(b"Content-Length", b"%d" % len(body))]
    if content_type is not None:
        headers.append((b"Content-Type", content_type))
    return f"{name} as {(content_type or b'none').decode()} ({method.decode()})", _request(method, target, headers, body)


def ws_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True,
             declared: int | None = None) -> bytes:
    """One client frame, as given (a wrong length, RSV bits, no mask: whatever the case needs)."""
    length = len(payload) if declared is None else declared
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    flag = 0x80 if mask else 0
    if length < 126:
        head += bytes([flag | length])
    elif length < 1 << 16:
        head += bytes([flag | 126]) + struct.pack("!H", length)
    else:
        head += bytes([flag | 127]) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    key = (MASK * (len(payload) // 4 + 1))[:len(payload)]
    masked = (int.from_bytes(payload) ^ int.from_bytes(key)).to_bytes(len(payload))
    return head + MASK + masked


def _close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


WS_MUTATIONS = {
    "bad-opcode": lambda rng: [ws_frame(rng.choice([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]), b"\x00hi")],
    "rsv-bits": lambda rng: [ws_frame(2, b"\x00hi", rsv=rng.randint(1, 7))],
    "unmasked": lambda rng: [ws_frame(2, b"\x00hi", mask=False)],
    "fragmented-ping": lambda rng: [ws_frame(9, b"p", fin=False)],
    "long-ping": lambda rng: [ws_frame(9, b"p" * 200)],
    "orphan-continuation": lambda rng: [ws_frame(0, b"\x00hi")],
    "interleaved-fragments": lambda rng: [ws_frame(2, b"\x00a", fin=False), ws_frame(2, b"\x00b")],
    "invalid-utf8-text": lambda rng: [ws_frame(1, b"\x00\xff\xfe")],
    "channel-9": lambda rng: [ws_frame(2, b"\x09data")],
    "channel-255": lambda rng: [ws_frame(2, b"\xffdata")],
    "empty-message": lambda rng: [ws_frame(2, b"")],
    "error-channel-from-client": lambda rng: [ws_frame(2, b"\x03{}")],
    "resize-junk": lambda rng: [ws_frame(2, b"\x04" + rng.choice([b"{", b"[]", b'{"Width":-1,"Height":1e999}',
                                                                    b"\xff", b'{"Width":' + b"9" * 100 + b"}"]))],
    "close-stdin-twice": lambda rng: [ws_frame(2, b"\xff\x00"), ws_frame(2, b"\xff\x00"), ws_frame(2, b"\x00late")],
    "close-code-999": lambda rng: [ws_frame(8, _close_payload(999))],
    "close-code-1005": lambda rng: [ws_frame(8, _close_payload(1005))],
    "close-bad-reason": lambda rng: [ws_frame(8, _close_payload(1000, b"\xff"))],
    "close-one-byte": lambda rng: [ws_frame(8, b"\x03")],
    "oversized-message": lambda rng: [ws_frame(2, b"\x00" + b"x" * (16 * 2**20 + 1))],
    "declared-huge": lambda rng: [ws_frame(2, b"\x00abc", declared=2**63 - 1)],
    "text-stdin": lambda rng: [ws_frame(1, b"\x00hello")],
    "valid-stdin": lambda rng: [ws_frame(2, b"\x00hello\n")],
}


STALLING = {"declared-huge"}


def _ws_case(rng: random.Random, n: int) -> tuple[str, bytes, list[bytes]]:
    name = rng.choice(sorted(WS_MUTATIONS))
    frames = WS_MUTATIONS[name](rng)
    if frames[-1][0] & 0x0F != 8 and name not in STALLING:
        frames.append(ws_frame(8, _close_payload(1000)))  # a session the server keeps open must still end
    key = base64.b64encode(rng.randbytes(16))
    headers = _base_headers(n) + [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket"),
                                  (b"Sec-WebSocket-Version", b"13"), (b"Sec-WebSocket-Key", key),
                                  (b"Sec-WebSocket-Protocol", b"v5.channel.k8s.io")]
    return name, _request(b"GET", EXEC.encode(), headers), frames


def cases(seed: int, count: int, *, start: int = 0) -> list[Case]:
    """``count`` cases from ``seed``: about 45 % request heads, 40 % bodies, 15 % WebSocket sessions."""
    rng = random.Random(seed)
    made = []
    for n in range(start, start + count):
        draw = rng.random()
        if draw < 0.45:
            name, raw = _mutate_head(rng, n)
            made.append(Case(n, "http", name, raw))
        elif draw < 0.85:
            name, raw = _body_case(rng, n)
            made.append(Case(n, "body", name, raw))
        else:
            name, raw, frames = _ws_case(rng, n)
            made.append(Case(n, "websocket", name, raw, frames, stalls=name in STALLING))
    return made


# -- running ---------------------------------------------------------------------------------------

async def _read_response(reader: asyncio.StreamReader, result: Result) -> bytes:
    """The first response's head and body; sets status/content_type/body; returns bytes read past it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await reader.read(65536)
        if not chunk:
            result.closed = True
            if data:
                result.error = f"the connection closed in the middle of a response head: {data[:80]!r}"
            return b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3})", lines[0])
    if match is None:
        result.error = f"not an HTTP response: {lines[0][:80]!r}"
        return b""
    result.status = int(match.group(1))
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    result.content_type = fields.get(b"content-type", b"").decode("latin-1")
    result.closing = fields.get(b"connection", b"").lower() == b"close"
    if result.status == 101:
        return rest
    if b"content-length" in fields:
        length = int(fields[b"content-length"])
        while len(rest) < length:
            chunk = await reader.read(65536)
            if not chunk:
                break
            rest += chunk
        result.body = rest[:length]
        return rest[length:]
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                chunk = await reader.read(65536)
                if not chunk:
                    result.body = body
                    result.error = "the chunked body ended early"
                    return b""
                rest += chunk
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                chunk = await reader.read(65536)
                if not chunk:
                    result.body = body + rest
                    result.error = "the chunked body ended early"
                    return b""
                rest += chunk
            body += rest[:size]
            rest = rest[size + 2:]
            if size == 0:
                result.body = body
                return rest
    result.body = rest + await reader.read()
    result.closed = True
    return b""


async def _read_ws_until_closed(reader: asyncio.StreamReader, buffered: bytes, result: Result) -> None:
    """Server frames until its close frame (kept in close_code) or the end of the connection."""
    data = buffered
    while True:
        while len(data) >= 2:
            length = data[1] & 0x7F
            offset = 2
            if length == 126:
                if len(data) < 4:
                    break
                length, offset = struct.unpack("!H", data[2:4])[0], 4
            elif length == 127:
                if len(data) < 10:
                    break
                length, offset = struct.unpack("!Q", data[2:10])[0], 10
            if len(data) < offset + length:
                break
            opcode, payload = data[0] & 0x0F, data[offset:offset + length]
            data = data[offset + length:]
            if opcode == 8:
                result.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                result.closed = True
                return
        chunk = await reader.read(65536)
        if not chunk:
            result.closed = True
            return
        data += chunk


async def run_case(host: str, port: int, context: ssl.SSLContext, case: Case, bound: float) -> Result:
    result = Result(case)
    started = time.monotonic()
    writer = None
    try:
        async with asyncio.timeout(bound):
            reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
            writer.write(case.request)
            await writer.drain()
            rest = await _read_response(reader, result)
            if result.status == 101:
                for frame in case.frames:
                    writer.write(frame)
                    await writer.drain()
                if case.stalls:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(_read_ws_until_closed(reader, rest, result), STALL_SECONDS)
                else:
                    await _read_ws_until_closed(reader, rest, result)
    except TimeoutError:
        result.error = f"no answer and no close within {bound:g}s"
    except (ConnectionError, ssl.SSLError, OSError):
        result.closed = True  # reset: the server dropped the connection
    finally:
        if writer is not None:
            writer.transport.abort()
    result.seconds = time.monotonic() - started
    return result


async def run_all(ports: list[int], ca_file, all_cases: list[Case], *, bound: float, concurrency: int = 8
                  ) -> list[Result]:
    """Every case once, ``concurrency`` at a time, alternating over the gateways' ports."""
    context = ssl.create_default_context(cafile=str(ca_file))
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, case: Case) -> Result:
        async with gate:
            return await run_case("127.0.0.1", ports[index % len(ports)], context, case, bound)

    return list(await asyncio.gather(*(one(i, case) for i, case in enumerate(all_cases))))


# -- checks ----------------------------------------------------------------------------------------

def is_status(result: Result) -> bool:
    try:
        status = json.loads(result.body)
    except ValueError:
        return False
    return isinstance(status, dict) and status.get("kind") == "Status" and status.get("code") == result.status


def problems(results: list[Result], events: list[tuple[str, int | None]]) -> list[str]:
    """What is wrong, one line per case; ``events`` are (user agent, response code) of the completion
    events recorded for the fuzz."""
    recorded: dict[int, list[int | None]] = {}
    for agent, code in events:
        match = AGENT.search(agent or "")
        if match:
            recorded.setdefault(int(match.group(1)), []).append(code)
    found = []
    for r in results:
        where = f"case {r.case.number} ({r.case.family}: {r.case.name})"
        codes = recorded.get(r.case.number, [])
        if r.error:
            found.append(f"{where}: {r.error}")
        if r.status == 500 or (r.status is not None and r.status >= 500 and not is_status(r)):
            found.append(f"{where}: answered {r.status}: {r.body[:200]!r}")
        elif r.status is not None and r.status >= 400 and r.case.api and not is_status(r) and not (
                r.status in SERVER_ANSWERS and r.closing):
            found.append(f"{where}: answered {r.status} without a Status: {r.body[:200]!r}")
        if r.case.family == "websocket" and r.status == 101 and r.close_code not in WS_CLOSE_OK | {None}:
            found.append(f"{where}: the WebSocket ended with {r.close_code}")
        if len(codes) > 1:
            found.append(f"{where}: {len(codes)} completion events")
        if codes and r.status is not None and codes[0] != r.status:
            found.append(f"{where}: answered {r.status}, recorded {codes[0]}")
        # Only the gateway records: the Status 404 for a target outside /k8s/ (airlock.routing) is no cluster request.
        if not codes and r.status is not None and (is_status(r) or r.status < 400) and r.status not in SERVER_ANSWERS \
                and (r.case.api or r.status != 404):
            found.append(f"{where}: answered {r.status} without a completion event")
    return found


def summary(results: list[Result]) -> dict:
    return {
        "cases": len(results),
        "by_family": dict(Counter(r.case.family for r in results)),
        "answers": dict(sorted(Counter(str(r.status) if r.status else "closed" for r in results).items())),
        "slowest_s": round(max((r.seconds for r in results), default=0.0), 2),
    }
