"""OpenAPI documents, generated from discovery: operations only, no object schemas.

What kubectl 1.37 needs for ``apply`` with ``--validate=strict`` (the default): it asks
/openapi/v3, fetches the group-version document and looks for the PATCH operation tagged with the
object's ``x-kubernetes-group-version-kind``; if that operation lists the ``fieldValidation`` query
parameter, validation is left to the server (kubectl then sends ``fieldValidation=Strict``) and no
schema is needed. The PATCH request bodies list the four patch media types like kube-apiserver.
``components.schemas`` stays empty on purpose: kubectl would otherwise compute strategic-merge
patches from schemas that lack the patch-merge-key metadata instead of from its compiled-in types.
"""

from __future__ import annotations

import hashlib
import json

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


class OpenAPI:
    """Pre-encoded OpenAPI v2 and v3 documents (built on first use, then cached)."""

    def __init__(self, discovery: Discovery) -> None:
        self.discovery = discovery
        self._v3: dict[str, bytes] | None = None
        self._v3_root: bytes | None = None
        self._v2: bytes | None = None

    def _build_v3(self) -> None:
        docs: dict[str, bytes] = {}
        root: dict = {"paths": {}}
        for group, version in self.discovery.group_versions:
            paths: dict = {}
            for res in self.discovery.resources.values():
                if res.group == group and res.version == version:
                    paths.update(resource_paths(res))
            doc = {"openapi": "3.0.0", "info": VERSION_INFO, "paths": paths, "components": {"schemas": {}}}
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

    def v2(self) -> bytes:
        if self._v2 is None:
            paths: dict = {}
            for res in self.discovery.resources.values():
                for path, item in resource_paths(res).items():
                    paths[path] = _to_v2(item)
            doc = {"swagger": "2.0", "info": VERSION_INFO, "paths": paths, "definitions": {}}
            self._v2 = json.dumps(doc, separators=(",", ":")).encode()
        return self._v2
