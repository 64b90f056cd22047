"""Decode the protobuf request bodies kubectl >= 1.32 sends through its typed clients.

Kubernetes protobuf = magic ``k8s\\x00`` + a ``runtime.Unknown`` message whose ``raw`` field holds
the object. Only the messages below are described (field numbers from the generated.proto files of
k8s.io/api and k8s.io/apimachinery); anything else is refused with 415. A schema-driven wire
decoder of ~100 lines is less to trust than a protobuf runtime plus generated code for the whole
API, and nothing here ever *encodes* protobuf (JSON is forwarded instead).

The gateway transcodes these bodies to JSON before any policy, masking or recording sees them,
in strict mode: a non-empty field the schema does not describe is an error, never silently
dropped.  kubesim (the test double) decodes leniently, as kube-apiserver ignores nothing but
also never fails on a field it knows.
"""

from __future__ import annotations

import base64

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"


class ProtobufError(ValueError):
    pass


# A message schema maps field number -> (json name, kind). Kinds: "string", "bytes", "int",
# "bool", ("msg", schema), ("repeated", kind), ("map", value kind). Unknown fields are skipped.
TYPE_META = {1: ("apiVersion", "string"), 2: ("kind", "string")}
OWNER_REFERENCE = {1: ("kind", "string"), 3: ("name", "string"), 4: ("uid", "string"),
                   5: ("apiVersion", "string"), 6: ("controller", "bool"), 7: ("blockOwnerDeletion", "bool")}
OBJECT_META = {
    1: ("name", "string"), 2: ("generateName", "string"), 3: ("namespace", "string"),
    5: ("uid", "string"), 6: ("resourceVersion", "string"), 7: ("generation", "int"),
    11: ("labels", ("map", "string")), 12: ("annotations", ("map", "string")),
    13: ("ownerReferences", ("repeated", ("msg", OWNER_REFERENCE))), 14: ("finalizers", ("repeated", "string")),
}
META = {1: ("metadata", ("msg", OBJECT_META))}
RESOURCE_ATTRIBUTES = {1: ("namespace", "string"), 2: ("verb", "string"), 3: ("group", "string"),
                       4: ("version", "string"), 5: ("resource", "string"), 6: ("subresource", "string"),
                       7: ("name", "string")}
NON_RESOURCE_ATTRIBUTES = {1: ("path", "string"), 2: ("verb", "string")}
OBJECT_REFERENCE = {1: ("kind", "string"), 2: ("namespace", "string"), 3: ("name", "string"),
                    4: ("uid", "string"), 5: ("apiVersion", "string")}
PRECONDITIONS = {1: ("uid", "string"), 2: ("resourceVersion", "string")}
DELETE_OPTIONS = {1: ("gracePeriodSeconds", "int"), 2: ("preconditions", ("msg", PRECONDITIONS)),
                  3: ("orphanDependents", "bool"), 4: ("propagationPolicy", "string"),
                  5: ("dryRun", ("repeated", "string"))}

SCHEMAS: dict[tuple[str, str], dict] = {
    ("authentication.k8s.io/v1", "TokenRequest"): {
        **META,
        2: ("spec", ("msg", {1: ("audiences", ("repeated", "string")), 4: ("expirationSeconds", "int"),
                             3: ("boundObjectRef", ("msg", {1: ("kind", "string"), 2: ("apiVersion", "string"),
                                                            3: ("name", "string"), 4: ("uid", "string")}))})),
    },
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): {
        **META,
        2: ("spec", ("msg", {1: ("resourceAttributes", ("msg", RESOURCE_ATTRIBUTES)),
                             2: ("nonResourceAttributes", ("msg", NON_RESOURCE_ATTRIBUTES))})),
    },
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): {**META, 2: ("spec", ("msg", {1: ("namespace", "string")}))},
    ("authentication.k8s.io/v1", "SelfSubjectReview"): dict(META),
    ("v1", "Secret"): {**META, 2: ("data", ("map", "bytes")), 3: ("type", "string"),
                       4: ("stringData", ("map", "string")), 5: ("immutable", "bool")},
    ("v1", "ConfigMap"): {**META, 2: ("data", ("map", "string")), 3: ("binaryData", ("map", "bytes")),
                          4: ("immutable", "bool")},
    ("v1", "Namespace"): {**META, 2: ("spec", ("msg", {1: ("finalizers", ("repeated", "string"))}))},
    ("v1", "ServiceAccount"): {**META, 2: ("secrets", ("repeated", ("msg", OBJECT_REFERENCE))),
                               3: ("imagePullSecrets", ("repeated", ("msg", {1: ("name", "string")}))),
                               4: ("automountServiceAccountToken", "bool")},
    ("policy/v1", "Eviction"): {**META, 2: ("deleteOptions", ("msg", DELETE_OPTIONS))},
}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def _fields(data: bytes):
    """Yield (field number, wire type, value) with value an int or bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtobufError("field number 0")
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ProtobufError("truncated field")
            value, pos = data[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise ProtobufError("truncated field")
        yield number, wire, value


def _scalar(kind: str, wire: int, value):
    if kind in ("string", "bytes"):
        if wire != 2:
            raise ProtobufError("expected a length-delimited field")
        if kind == "bytes":
            return base64.b64encode(value).decode()
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtobufError("invalid UTF-8 in a string field") from None
    if wire != 0:
        raise ProtobufError("expected a varint field")
    if kind == "bool":
        return bool(value)
    return value - (1 << 64) if value >= 1 << 63 else value


def _empty(wire: int, value) -> bool:
    """Zero-valued: Go's generated code writes empty non-nullable messages (e.g. a
    request's ``status``) as all-zero fields; those carry nothing to lose.

    Walked with an explicit stack: the bytes are the client's, nested as deep as it likes.
    """
    pending = [(wire, value)]
    while pending:
        wire, value = pending.pop()
        if wire == 0:
            if value != 0:
                return False
        elif wire in (1, 5):
            if any(value):
                return False
        elif value:
            try:
                pending.extend((w, v) for _, w, v in _fields(value))
            except ProtobufError:
                return False
    return True


def decode_message(data: bytes, schema: dict, strict: bool = False) -> dict:
    out: dict = {}
    for number, wire, value in _fields(data):
        if number not in schema:
            if strict and not _empty(wire, value):
                raise ProtobufError(f"field {number} is not understood")
            continue
        name, kind = schema[number]
        if isinstance(kind, str):
            out[name] = _scalar(kind, wire, value)
        elif kind[0] == "msg":
            if wire != 2:
                raise ProtobufError("expected an embedded message")
            out[name] = decode_message(value, kind[1], strict)
        elif kind[0] == "repeated":
            item = kind[1]
            if isinstance(item, str):
                out.setdefault(name, []).append(_scalar(item, wire, value))
            else:
                if wire != 2:
                    raise ProtobufError("expected an embedded message")
                out.setdefault(name, []).append(decode_message(value, item[1], strict))
        elif kind[0] == "map":
            if wire != 2:
                raise ProtobufError("expected a map entry")
            key, val = "", ""
            for n, w, v in _fields(value):
                if n == 1:
                    key = _scalar("string", w, v)
                elif n == 2:
                    val = _scalar(kind[1], w, v)
            out.setdefault(name, {})[key] = val
    return out


def decode(body: bytes, strict: bool = False) -> dict:
    """JSON-equivalent dict of a Kubernetes protobuf body; ProtobufError if it cannot be read."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf magic prefix")
    type_meta: dict = {}
    raw = b""
    for number, wire, value in _fields(body[len(MAGIC):]):
        if number == 1 and wire == 2:
            type_meta = decode_message(value, TYPE_META)
        elif number == 2 and wire == 2:
            raw = value
        elif number == 3 and wire == 2 and value:
            raise ProtobufError("content encodings are not supported")
    key = (type_meta.get("apiVersion", ""), type_meta.get("kind", ""))
    schema = SCHEMAS.get(key)
    if schema is None:
        raise ProtobufError(f"cannot decode protobuf {key[1] or 'objects'} ({key[0] or 'unknown version'})")
    obj = decode_message(raw, schema, strict)
    return {"apiVersion": key[0], "kind": key[1], **obj}
