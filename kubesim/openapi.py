"""OpenAPI documents: operations generated from discovery, object schemas from Kubernetes' own.

What kubectl 1.37 needs for ``apply`` with ``--validate=strict`` (the default): it asks
/openapi/v3, fetches the group-version document and looks for the PATCH operation tagged with the
object's ``x-kubernetes-group-version-kind``; if that operation lists the ``fieldValidation`` query
parameter, validation is left to the server (kubectl then sends ``fieldValidation=Strict``). The PATCH
request bodies list the four patch media types like kube-apiserver.

``components.schemas`` (and v2 ``definitions``) are the definitions of Kubernetes 1.37 as the
``kubernetes-validate`` package ships them (JSON Schema converted from kube-apiserver's OpenAPI, with the
descriptions and the ``x-kubernetes-patch-merge-key``/``-patch-strategy``/``-list-type`` metadata kubectl
computes strategic-merge patches from), turned back into kube-apiserver's form: one type per node, no
``null``, ``$ref`` with siblings wrapped in ``allOf`` (v3), no added ``enum`` on apiVersion/kind.  Each
group-version document carries the kinds of that group-version and every schema they reference, so
``kubectl explain`` works.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import struct
from pathlib import Path

from .discovery import Discovery, Resource

VERSION_INFO = {"title": "Kubernetes", "version": "v1.37.1"}
PATCH_TYPES = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
]
WRITE_PARAMS = ["dryRun", "fieldManager", "fieldValidation"]
LIST_PARAMS = ["allowWatchBookmarks", "continue", "fieldSelector", "labelSelector", "limit",
               "resourceVersion", "resourceVersionMatch", "sendInitialEvents", "timeoutSeconds", "watch"]


SCHEMA_FILE = ("kubernetes-json-schema", "v1.37.0-local", "_definitions.json")
# Lost in the JSON Schema conversion (a oneOf of types): kube-apiserver's own shapes.
SCALARS = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": "string", "format": "int-or-string"},
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": "string"},
}


@functools.cache
def _definitions() -> dict[str, dict]:
    """The 1.37 definitions shipped by kubernetes-validate (found without importing the package)."""
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("kubesim's OpenAPI schemas need the kubernetes-validate package (requirements-dev.txt)")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*SCHEMA_FILE)
    return json.loads(path.read_bytes())["$defs"]


def _node(node, prefix: str, v3: bool, name: str = ""):
    """One schema node in kube-apiserver's form (``prefix``: where ``$ref`` points)."""
    if isinstance(node, list):
        return [_node(item, prefix, v3) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict = {}
    for key, value in node.items():
        if key == "type" and isinstance(value, list):
            value = next((t for t in value if t != "null"), "object")
        elif key == "$ref":
            value = prefix + value.rsplit("/", 1)[1]
        elif key == "enum" and name in ("apiVersion", "kind"):
            continue
        elif key == "properties":
            value = {prop: _node(sub, prefix, v3, prop) for prop, sub in value.items()}
        elif key in ("items", "additionalProperties", "allOf", "oneOf", "anyOf", "not"):
            value = _node(value, prefix, v3)
        out[key] = value
    if v3 and "$ref" in out and len(out) > 1:
        out["allOf"] = [{"$ref": out.pop("$ref")}]
    return out


@functools.cache
def schemas(v3: bool) -> dict[str, dict]:
    prefix = "#/components/schemas/" if v3 else "#/definitions/"
    out = {}
    for name, definition in _definitions().items():
        if name in SCALARS:
            out[name] = dict(SCALARS[name])
        else:
            out[name] = _node(definition, prefix, v3)
    return out


def _refs(node, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def schemas_for(group: str, version: str, v3: bool) -> dict[str, dict]:
    """The kinds of one group-version and everything they reference."""
    every = schemas(v3)
    pending = [name for name, s in every.items()
               if any(g.get("group") == group and g.get("version") == version
                      for g in s.get("x-kubernetes-group-version-kind") or ())]
    chosen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in chosen or name not in every:
            continue
        chosen.add(name)
        found: set[str] = set()
        _refs(every[name], found)
        pending.extend(found - chosen)
    return {name: every[name] for name in sorted(chosen)}


def _q(name: str) -> dict:
    kind = "integer" if name in ("limit", "timeoutSeconds") else (
        "boolean" if name in ("allowWatchBookmarks", "watch", "sendInitialEvents", "force") else "string")
    return {"name": name, "in": "query", "uniqueItems": True, "schema": {"type": kind}}


def _op(res: Resource, action: str, op_id: str, gvk: dict, params: list[str], *, body: list[str] | None = None) -> dict:
    op: dict = {
        "operationId": op_id,
        "tags": [f"{res.group.replace('.k8s.io', '') or 'core'}_{res.version}"],
        "parameters": [_q(p) for p in params],
        "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
    }
    if body:
        op["requestBody"] = {"content": {t: {"schema": {"type": "object"}} for t in body}, "required": True}
    return op


def resource_paths(res: Resource) -> dict[str, dict]:
    """OpenAPI v3 path items for a resource and its subresources."""
    paths: dict[str, dict] = {}
    gvk = {"group": res.group, "version": res.version, "kind": res.kind}
    prefix = f"/apis/{res.group}/{res.version}" if res.group else f"/api/{res.version}"
    scope = f"{prefix}/namespaces/{{namespace}}/{res.name}" if res.namespaced else f"{prefix}/{res.name}"
    name_id = res.kind
    ns_word = "Namespaced" if res.namespaced else ""
    path_params = [{"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}}] \
        if res.namespaced else []
    collection: dict = {"parameters": path_params}
    if "list" in res.verbs:
        collection["get"] = _op(res, "list", f"list{ns_word}{name_id}", gvk, LIST_PARAMS)
    if "create" in res.verbs:
        collection["post"] = _op(res, "post", f"create{ns_word}{name_id}", gvk, WRITE_PARAMS,
                                 body=["*/*"])
    if "deletecollection" in res.verbs:
        collection["delete"] = _op(res, "deletecollection", f"deleteCollection{ns_word}{name_id}", gvk,
                                   ["dryRun", "fieldSelector", "labelSelector", "gracePeriodSeconds",
                                    "propagationPolicy"], body=["*/*"])
    if len(collection) > 1:
        paths[scope] = collection
    item_params = path_params + [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    item: dict = {"parameters": item_params}
    if "get" in res.verbs:
        item["get"] = _op(res, "get", f"read{ns_word}{name_id}", gvk, [])
    if "update" in res.verbs:
        item["put"] = _op(res, "put", f"replace{ns_word}{name_id}", gvk, WRITE_PARAMS, body=["*/*"])
    if "patch" in res.verbs:
        item["patch"] = _op(res, "patch", f"patch{ns_word}{name_id}", gvk, WRITE_PARAMS + ["force"],
                            body=PATCH_TYPES)
    if "delete" in res.verbs:
        item["delete"] = _op(res, "delete", f"delete{ns_word}{name_id}", gvk,
                             ["dryRun", "gracePeriodSeconds", "propagationPolicy"], body=["*/*"])
    if len(item) > 1:
        paths[f"{scope}/{{name}}"] = item
    for sub in res.subresources.values():
        sub_gvk = {"group": sub.group, "version": sub.version, "kind": sub.kind}
        entry: dict = {"parameters": item_params}
        sid = f"{name_id}{sub.name.capitalize()}"
        if "get" in sub.verbs:
            entry["get"] = _op(res, "get", f"read{ns_word}{sid}", sub_gvk, [])
        if "create" in sub.verbs:
            entry["post"] = _op(res, "post", f"create{ns_word}{sid}", sub_gvk, WRITE_PARAMS, body=["*/*"])
        if "update" in sub.verbs:
            entry["put"] = _op(res, "put", f"replace{ns_word}{sid}", sub_gvk, WRITE_PARAMS, body=["*/*"])
        if "patch" in sub.verbs:
            entry["patch"] = _op(res, "patch", f"patch{ns_word}{sid}", sub_gvk, WRITE_PARAMS + ["force"],
                                 body=PATCH_TYPES)
        if len(entry) > 1:
            paths[f"{scope}/{{name}}/{sub.name}"] = entry
    return paths


def _to_v2(path_item: dict) -> dict:
    out: dict = {}
    for method, op in path_item.items():
        if method == "parameters":
            out["parameters"] = [{"name": p["name"], "in": p["in"], "required": True, "type": "string"}
                                 for p in op]
            continue
        v2 = {k: v for k, v in op.items() if k not in ("requestBody", "parameters")}
        v2["parameters"] = [{"name": p["name"], "in": "query", "uniqueItems": True,
                             "type": p["schema"]["type"]} for p in op["parameters"]]
        if "requestBody" in op:
            v2["consumes"] = list(op["requestBody"]["content"])
            v2["parameters"].append({"name": "body", "in": "body", "required": True, "schema": {"type": "object"}})
        v2["produces"] = ["application/json"]
        v2["schemes"] = ["https"]
        out[method] = v2
    return out


# -- OpenAPI v2 as protobuf (gnostic's openapi.v2.Document), what client-go's OpenAPISchema() reads ----

V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
V2_PROTOBUF_ACCEPTED = (V2_PROTOBUF, "application/com.github.proto-openapi.spec.v2@v1.0+protobuf")


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _text(number: int, value: str) -> bytes:
    return _field(number, value.encode())


def _number(number: int, value) -> bytes:
    if isinstance(value, bool):
        return _varint(number << 3) + _varint(int(value))
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 1) + struct.pack("<d", float(value))


def _any(number: int, value) -> bytes:
    """gnostic Any: the value as YAML text (JSON is YAML)."""
    return _field(number, _text(2, json.dumps(value)))


# Schema fields of gnostic's openapi.v2.Schema by JSON name: (field number, kind).
_SCALAR_FIELDS = {
    "$ref": (1, "text"), "format": (2, "text"), "title": (3, "text"), "description": (4, "text"),
    "default": (5, "any"), "multipleOf": (6, "double"), "maximum": (7, "double"), "exclusiveMaximum": (8, "bool"),
    "minimum": (9, "double"), "exclusiveMinimum": (10, "bool"), "maxLength": (11, "int"), "minLength": (12, "int"),
    "pattern": (13, "text"), "maxItems": (14, "int"), "minItems": (15, "int"), "uniqueItems": (16, "bool"),
    "maxProperties": (17, "int"), "minProperties": (18, "int"), "discriminator": (26, "text"),
    "readOnly": (27, "bool"), "example": (30, "any"),
}


def _schema(node: dict) -> bytes:
    out = bytearray()
    for key, value in node.items():
        if key in _SCALAR_FIELDS:
            number, kind = _SCALAR_FIELDS[key]
            if kind == "text":
                out += _text(number, str(value))
            elif kind == "any":
                out += _any(number, value)
            elif kind == "double":
                out += _number(number, float(value))
            else:
                out += _number(number, bool(value) if kind == "bool" else int(value))
        elif key == "required":
            out += b"".join(_text(19, str(v)) for v in value)
        elif key == "enum":
            out += b"".join(_any(20, v) for v in value)
        elif key == "additionalProperties":
            out += _field(21, _field(1, _schema(value)) if isinstance(value, dict) else _number(2, bool(value)))
        elif key == "type":
            out += _field(22, b"".join(_text(1, t) for t in ([value] if isinstance(value, str) else value)))
        elif key == "items" and isinstance(value, dict):
            out += _field(23, _field(1, _schema(value)))
        elif key == "allOf":
            out += b"".join(_field(24, _schema(v)) for v in value)
        elif key == "properties":
            out += _field(25, b"".join(_field(1, _text(1, name) + _field(2, _schema(sub)))
                                      for name, sub in value.items()))
        elif key.startswith("x-"):
            out += _field(31, _text(1, key) + _any(2, value))
    return bytes(out)


def v2_protobuf_document(definitions: dict[str, dict]) -> bytes:
    """The Document with its definitions (what kubectl's client-side validation and apply read)."""
    info = _text(1, VERSION_INFO["title"]) + _text(2, VERSION_INFO["version"])
    named = b"".join(_field(1, _text(1, name) + _field(2, _schema(schema))) for name, schema in sorted(definitions.items()))
    return _text(1, "2.0") + _field(2, info) + _field(9, named)


class OpenAPI:
    """Pre-encoded OpenAPI v2 and v3 documents (built on first use, then cached)."""

    def __init__(self, discovery: Discovery) -> None:
        self.discovery = discovery
        self._v3: dict[str, bytes] | None = None
        self._v3_root: bytes | None = None
        self._v2: bytes | None = None
        self._v2_protobuf: bytes | None = None

    def _build_v3(self) -> None:
        docs: dict[str, bytes] = {}
        root: dict = {"paths": {}}
        for group, version in self.discovery.group_versions:
            paths: dict = {}
            for res in self.discovery.resources.values():
                if res.group == group and res.version == version:
                    paths.update(resource_paths(res))
            doc = {"openapi": "3.0.0", "info": VERSION_INFO, "paths": paths,
                   "components": {"schemas": schemas_for(group, version, v3=True)}}
            body = json.dumps(doc, separators=(",", ":")).encode()
            key = f"apis/{group}/{version}" if group else f"api/{version}"
            docs[key] = body
            digest = hashlib.sha512(body).hexdigest().upper()[:128]
            root["paths"][key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
        self._v3 = docs
        self._v3_root = json.dumps(root, separators=(",", ":")).encode()

    def v3_root(self) -> bytes:
        if self._v3_root is None:
            self._build_v3()
        return self._v3_root

    def v3_document(self, key: str) -> bytes | None:
        if self._v3 is None:
            self._build_v3()
        return self._v3.get(key)

    def v2_protobuf(self) -> bytes:
        if self._v2_protobuf is None:
            self._v2_protobuf = v2_protobuf_document(schemas(v3=False))
        return self._v2_protobuf

    def v2(self) -> bytes:
        if self._v2 is None:
            paths: dict = {}
            for res in self.discovery.resources.values():
                for path, item in resource_paths(res).items():
                    paths[path] = _to_v2(item)
            doc = {"swagger": "2.0", "info": VERSION_INFO, "paths": paths, "definitions": schemas(v3=False)}
            self._v2 = json.dumps(doc, separators=(",", ":")).encode()
        return self._v2
