"""PATCH semantics of kube-apiserver for kubesim, the API server double (sans-IO).

``apply_patch(obj, body, content_type)`` returns a new object and never mutates ``obj``.
Supported media types and where their rules come from:

* ``application/json-patch+json`` -- RFC 6902 (the ``jsonpatch`` package applies the
  operations; ``test`` compares with JSON equality, so ``true`` never equals ``1``).
* ``application/merge-patch+json`` -- RFC 7386, with the null pruning of
  evanphx/json-patch that kube-apiserver uses.
* ``application/strategic-merge-patch+json`` -- Kubernetes strategic merge patch with
  ``$patch: replace|delete|merge``, ``$retainKeys``, ``$setElementOrder/<list>`` and
  ``$deleteFromPrimitiveList/<list>``; list merge keys come from ``merge_key``.
* ``application/apply-patch+yaml`` -- server-side apply approximated as a merge of the
  applied configuration into the live object: no field ownership, so fields and list
  items the live object has but the configuration omits are kept; null values are
  ignored; ``$`` keys are plain data. Creating a missing object is the caller's job
  (pass ``{}``).

Errors raise ``PatchError(message, code)`` with kube-apiserver's status codes: 415 for
an unsupported media type, 413 for too many JSON patch operations, 400 for bodies that
do not parse or malformed directives, 422 for patches that cannot be applied. Messages
name paths and keys but never echo values, because patched objects include Secrets.

Long because it is kube-apiserver's four patch media types side by side, with strategic merge's
directives; comparing them is the point.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import jsonpatch
import jsonpointer
import yaml

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# The order kube-apiserver lists them in its 415 message for built-in resources.
SUPPORTED_PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)

# kube-apiserver refuses JSON patches with more operations than this (413).
MAX_JSON_PATCH_OPERATIONS = 10000


class PatchError(Exception):
    """A patch kube-apiserver would refuse; ``code`` is the HTTP status to answer with."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.message = message
        self.code = code

    def __repr__(self) -> str:
        return f"PatchError({self.message!r}, {self.code})"


def media_type(content_type: str) -> str:
    """The patch type named by a Content-Type header; parameters are ignored.

    Raises PatchError 415 when the type is not one kube-apiserver accepts for PATCH.
    """
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if base not in SUPPORTED_PATCH_TYPES:
        raise PatchError(
            "the body of the request was in an unknown format - accepted media types include: "
            + ", ".join(SUPPORTED_PATCH_TYPES),
            415,
        )
    return base


def apply_patch(obj: dict, patch: bytes, content_type: str) -> dict:
    """Apply a PATCH request body to ``obj`` and return the patched copy."""
    kind = media_type(content_type)
    if not isinstance(patch, (bytes, bytearray, memoryview)):
        raise TypeError("the patch body must be bytes")
    body = bytes(patch)
    target = copy.deepcopy(obj)
    try:
        if kind == JSON_PATCH:
            result = _apply_json_patch(target, _load_json(body))
        elif kind == MERGE_PATCH:
            result = _apply_merge_patch(target, _load_json(body))
        elif kind == STRATEGIC_MERGE_PATCH:
            result = _apply_strategic_merge_patch(target, _load_json(body))
        else:
            result = _apply_server_side(target, _load_yaml(body))
    except RecursionError:
        raise PatchError("the patch or the object is nested too deeply", 422) from None
    if not isinstance(result, dict):
        raise PatchError("patch: Invalid value: the patched object is not a JSON object", 422)
    return result


# --- parsing -----------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _load_json(body: bytes) -> Any:
    """Parse a JSON body strictly (UTF-8, no NaN/Infinity), as Go's json.Valid would."""
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise PatchError("invalid JSON patch", 400) from None


class _YAMLLoader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings and keys as JSON strings.

    Kubernetes turns YAML into JSON first, so ``1:`` and ``true:`` are the distinct keys
    "1" and "true" (a plain dict would merge them, as 1 == True in Python).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        self.flatten_mapping(node)
        return {
            _plain_key(self.construct_object(key, deep=deep)): self.construct_object(value, deep=deep)
            for key, value in node.value
        }


_YAMLLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _load_yaml(body: bytes) -> dict:
    """Parse an apply configuration; aliases may not expand beyond a budget (alias bombs)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PatchError("error decoding patch: yaml: invalid UTF-8 in the document", 400) from None
    try:
        document = yaml.load(text, Loader=_YAMLLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        # str(exc) quotes the offending source line, which may hold secret values.
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else 0
        problem = exc.problem or exc.context or "the document is not valid YAML"
        raise PatchError(f"error decoding patch: yaml: line {line}: {problem}", 400) from None
    except (yaml.YAMLError, RecursionError):
        raise PatchError("error decoding patch: yaml: the document is not valid YAML", 400) from None
    budget = [10_000 + len(body)]  # a YAML node takes at least a byte unless it is an alias
    try:
        value = _plain_json(document, budget)
    except RecursionError:
        raise PatchError("error decoding patch: yaml: the document is nested too deeply", 400) from None
    if not isinstance(value, dict):
        raise PatchError(
            "error decoding patch: json: cannot unmarshal "
            f"{_json_type(value)} into Go value of type map[string]interface {{}}",
            400,
        )
    return value


def _plain_json(value: Any, budget: list[int]) -> Any:
    """Copy YAML data into plain JSON types, counting nodes so aliases cannot explode."""
    budget[0] -= 1
    if budget[0] < 0:
        raise PatchError("error decoding patch: yaml: document contains excessive aliasing", 400)
    if isinstance(value, dict):
        return {k: _plain_json(v, budget) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_json(v, budget) for v in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float) and value == value and value not in (float("inf"), float("-inf")):
        return value
    raise PatchError(
        f"error decoding patch: yaml: a value of type {type(value).__name__} cannot be represented in JSON",
        400,
    )


def _plain_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    if isinstance(key, (int, float)):
        return str(key)
    raise PatchError("error decoding patch: yaml: mapping keys must be scalars", 400)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _json_equal(a: Any, b: Any) -> bool:
    """JSON value equality: numbers compare by value, booleans are not numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _render_path(path: tuple[str, ...]) -> str:
    return "." + ".".join(path) if path else "."


# --- JSON patch (RFC 6902) ---------------------------------------------------------------

_OPS_WITH_VALUE = frozenset({"add", "replace", "test"})
_OPS_WITH_FROM = frozenset({"move", "copy"})
_ALL_OPS = _OPS_WITH_VALUE | _OPS_WITH_FROM | {"remove"}


def _apply_json_patch(target: dict, operations: Any) -> Any:
    if operations is None:
        return target
    if not isinstance(operations, list):
        raise PatchError(
            f"json: cannot unmarshal {_json_type(operations)} into Go value of type jsonpatch.Patch", 400
        )
    if len(operations) > MAX_JSON_PATCH_OPERATIONS:
        raise PatchError(
            f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, "
            f"got {len(operations)}",
            413,
        )
    doc: Any = target
    for operation in operations:
        _check_operation(operation)
        if operation["op"] == "test":
            _test_operation(doc, operation)
            continue
        try:
            doc = jsonpatch.JsonPatch([operation]).apply(doc, in_place=True)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, LookupError, TypeError, ValueError):
            # The library's own messages quote document values; say only what failed where.
            raise PatchError(_operation_failure(operation), 422) from None
    return doc


def _check_operation(operation: Any) -> None:
    if not isinstance(operation, dict):
        raise PatchError(
            f"json: cannot unmarshal {_json_type(operation)} into Go value of type jsonpatch.Operation", 400
        )
    kind = operation.get("op")
    if not isinstance(kind, str) or kind not in _ALL_OPS:
        raise PatchError(f"Unexpected kind: {_shown(kind)}", 422)
    if not isinstance(operation.get("path"), str):
        raise PatchError(f"{kind} operation failed to decode path: operation missing path field", 422)
    if kind in _OPS_WITH_FROM and not isinstance(operation.get("from"), str):
        raise PatchError(f"{kind} operation failed to decode from: operation missing from field", 422)
    if kind in _OPS_WITH_VALUE and "value" not in operation:
        raise PatchError(f"{kind} operation failed: operation missing value field", 422)


def _test_operation(doc: Any, operation: dict) -> None:
    path = operation["path"]
    try:
        current = jsonpointer.resolve_pointer(doc, path)
    except (jsonpointer.JsonPointerException, KeyError, IndexError, TypeError):
        raise PatchError(f"testing value {path} failed: test failed", 422) from None
    if not _json_equal(current, operation["value"]):
        raise PatchError(f"testing value {path} failed: test failed", 422)


def _operation_failure(operation: dict) -> str:
    kind, path = operation["op"], operation["path"]
    if kind in _OPS_WITH_FROM:
        return f"{kind} operation does not apply: doc is missing from path: {operation['from']}: missing value"
    if kind == "replace":
        return f"replace operation does not apply: doc is missing key: {path}: missing value"
    return f'{kind} operation does not apply: doc is missing path: "{path}": missing value'


# --- JSON merge patch (RFC 7386) ---------------------------------------------------------


def _apply_merge_patch(target: dict, patch: Any) -> Any:
    if isinstance(patch, list):
        # RFC 7386 replaces the whole document, which then cannot be an object (422).
        return _prune_nulls(patch)
    if not isinstance(patch, dict):
        raise PatchError("Invalid JSON Patch", 400)
    return _merge_patch_object(target, patch)


def _merge_patch_object(target: dict, patch: dict) -> dict:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            target[key] = _merge_patch_object(target[key], value)
        else:
            target[key] = _prune_nulls(value)
    return target


def _prune_nulls(value: Any) -> Any:
    """Drop null members of objects, however deep; null array elements stay."""
    if isinstance(value, dict):
        return {k: _prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune_nulls(v) for v in value]
    return value


# --- merge keys ---------------------------------------------------------------------------

# Lists that strategic merge patch merges element by element, and the key that pairs the
# elements up (Go struct tags patchStrategy:"merge" patchMergeKey:"..." in k8s.io/api).
# A path is the tuple of field names from the object root, list positions left out:
# Pod ("spec", "containers"), Deployment ("spec", "template", "spec", "containers", "env").
# Any list not listed here (tolerations, args, command, externalIPs, rules, ...) is
# replaced wholesale by the patch.
_CONTAINER_LISTS = frozenset({"containers", "initContainers", "ephemeralContainers"})

# Fields of a container.
_CONTAINER_LIST_KEYS = {
    "env": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
}

# Fields of a PodSpec (found under a field named "spec": pod, template or jobTemplate).
_POD_SPEC_LIST_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "schedulingGates": "name",
    "resourceClaims": "name",
}

# Lists identified by the last path elements.
_SUFFIX_LIST_KEYS = {
    ("metadata", "ownerReferences"): "uid",
    ("spec", "ports"): "port",  # Service
    ("status", "addresses"): "type",  # Node
}

# Lists identified by their full path.
_ROOT_LIST_KEYS = {
    ("secrets",): "name",  # ServiceAccount
}

# status.conditions of every built-in kind merge by type.
_ANY_DEPTH_LIST_KEYS = {"conditions": "type"}

# Lists of scalars that are merged as sets instead of replaced.
_MERGED_SCALAR_LISTS = frozenset({("metadata", "finalizers"), ("spec", "podCIDRs")})


def merge_key(path: tuple[str, ...]) -> str | None:
    """The merge key of the list at ``path``, or None when the list is replaced whole.

    containers, initContainers, ephemeralContainers: name; their env: name, ports:
    containerPort, volumeMounts: mountPath, volumeDevices: devicePath; pod spec volumes,
    imagePullSecrets, schedulingGates, resourceClaims: name, hostAliases: ip,
    topologySpreadConstraints: topologyKey; Service spec.ports: port; Node status.addresses:
    type; any conditions: type; metadata.ownerReferences: uid; ServiceAccount secrets: name.
    """
    if not path:
        return None
    field = path[-1]
    parent = path[-2] if len(path) > 1 else None
    if parent in _CONTAINER_LISTS and field in _CONTAINER_LIST_KEYS:
        return _CONTAINER_LIST_KEYS[field]
    if parent == "spec" and field in _POD_SPEC_LIST_KEYS:
        return _POD_SPEC_LIST_KEYS[field]
    if tuple(path[-2:]) in _SUFFIX_LIST_KEYS:
        return _SUFFIX_LIST_KEYS[tuple(path[-2:])]
    if tuple(path) in _ROOT_LIST_KEYS:
        return _ROOT_LIST_KEYS[tuple(path)]
    return _ANY_DEPTH_LIST_KEYS.get(field)


def merges_scalars(path: tuple[str, ...]) -> bool:
    """Whether the list of scalars at ``path`` is merged as a set (finalizers, podCIDRs)."""
    return tuple(path[-2:]) in _MERGED_SCALAR_LISTS


# --- strategic merge patch and server-side apply -----------------------------------------

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder"
_DELETE_FROM_LIST = "$deleteFromPrimitiveList"
_DROP = object()  # a value that removes its key


def _apply_strategic_merge_patch(target: dict, patch: Any) -> dict:
    if patch is None:
        return target
    if not isinstance(patch, dict):
        raise PatchError(
            f"json: cannot unmarshal {_json_type(patch)} into Go value of type map[string]interface {{}}", 400
        )
    return _Merger(directives=True).merge_map(target, patch, ())


def _apply_server_side(target: dict, config: dict) -> dict:
    metadata = config.get("metadata")
    if isinstance(metadata, dict) and metadata.get("managedFields") is not None:
        raise PatchError("metadata.managedFields must be nil", 400)
    for field, what in (("apiVersion", "version"), ("kind", "kind")):
        live = target.get(field)
        if live and config.get(field) != live:
            given = config.get(field) if isinstance(config.get(field), str) else ""
            raise PatchError(
                f"Incorrect {what} specified in apply patch. Specified patch {what}: {given}, expected: {live}",
                400,
            )
    return _Merger(directives=False).merge_map(target, config, ())


def _directive_field(key: str, prefix: str, error: str) -> str:
    head, sep, field = key.partition("/")
    if head != prefix or not sep or not field:
        raise PatchError(error, 400)
    return field


class _Merger:
    """Merges a strategic merge patch (directives=True) or an apply configuration into a copy.

    Both arguments of every method are private copies, so they are changed in place.
    """

    def __init__(
        self,
        directives: bool,
        list_key: Callable[[tuple[str, ...]], str | None] = merge_key,
        scalar_set: Callable[[tuple[str, ...]], bool] = merges_scalars,
    ):
        self.directives = directives
        self.list_key = list_key
        self.scalar_set = scalar_set

    # maps

    def merge_map(self, original: dict, patch: dict, path: tuple[str, ...]) -> dict:
        if self.directives and _DIRECTIVE in patch:
            directive = patch.pop(_DIRECTIVE)
            if directive == "delete":
                return {}
            if directive == "replace":
                return self.merge_map({}, patch, path)
            if directive != "merge":
                raise PatchError(f"unknown patch type: {_shown(directive)} in map at {_render_path(path)}", 400)
        if self.directives:
            self._retain_keys(original, patch)
            self._set_element_orders(original, patch, path)
        deletions = []
        for key, value in patch.items():
            if self.directives and key.startswith(_DELETE_FROM_LIST):
                deletions.append((key, value))
            elif self.directives and key.startswith("$"):
                raise PatchError(f"unknown directive {key} at {_render_path(path)}", 400)
            elif value is None:
                if self.directives:
                    original.pop(key, None)
            else:
                self._merge_field(original, key, value, path + (key,))
        for key, value in deletions:
            self._delete_from_list(original, key, value)
        return original

    def _merge_field(self, original: dict, key: str, value: Any, path: tuple[str, ...]) -> None:
        current = original.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            original[key] = self.merge_map(current, value, path)
        elif isinstance(current, list) and isinstance(value, list):
            original[key] = self.merge_list(current, value, path)
        else:
            fresh = self.fresh(value, path)
            if fresh is _DROP:
                original.pop(key, None)
            else:
                original[key] = fresh

    def fresh(self, value: Any, path: tuple[str, ...]) -> Any:
        """A patch value with nothing to merge into: directives resolved, nulls dropped."""
        if isinstance(value, dict):
            if self.directives and value.get(_DIRECTIVE) == "delete":
                return _DROP
            return self.merge_map({}, value, path)
        if isinstance(value, list):
            return self.merge_list([], value, path)
        return value

    def _retain_keys(self, original: dict, patch: dict) -> None:
        if _RETAIN_KEYS not in patch:
            return
        retained = patch.pop(_RETAIN_KEYS)
        if not isinstance(retained, list) or not all(isinstance(k, str) for k in retained):
            raise PatchError("invalid patch format of retainKeys", 400)
        keep = set(retained)
        for key, value in patch.items():
            if value is None or key.startswith((_DELETE_FROM_LIST, _SET_ORDER)):
                continue
            if key not in keep:
                raise PatchError("invalid patch format of retainKeys", 400)
        for key in [k for k in original if k not in keep]:
            del original[key]

    def _delete_from_list(self, original: dict, key: str, value: Any) -> None:
        field = _directive_field(key, _DELETE_FROM_LIST, "invalid patch format of primitive list")
        if not isinstance(value, list) or any(isinstance(v, (dict, list)) for v in value):
            raise PatchError("invalid patch format of primitive list", 400)
        current = original.get(field)
        if isinstance(current, list):
            original[field] = [v for v in current if not any(_json_equal(v, d) for d in value)]

    # $setElementOrder

    def _set_element_orders(self, original: dict, patch: dict, path: tuple[str, ...]) -> None:
        bad = "invalid patch format of setElementOrder list"
        for key in [k for k in patch if k.startswith(_SET_ORDER)]:
            order = patch.pop(key)
            field = _directive_field(key, _SET_ORDER, bad)
            list_path = path + (field,)
            current = original.get(field)
            patch_list = patch.pop(field, None)
            if (
                not isinstance(order, list)
                or (current is not None and not isinstance(current, list))
                or (patch_list is not None and not isinstance(patch_list, list))
            ):
                raise PatchError(bad, 400)
            mkey = self._list_key_for(list_path, patch_list or [], order)
            if mkey is None and any(isinstance(item, (dict, list)) for item in order):
                raise PatchError(bad, 400)
            if mkey is not None and not all(isinstance(item, dict) and mkey in item for item in order):
                raise PatchError(bad, 400)
            if current is None and patch_list is None:
                continue
            if patch_list is None:
                merged = current
            else:
                self._check_order(patch_list, order, mkey, list_path)
                if mkey is None:
                    merged = self._merge_scalars(current or [], patch_list, list_path)
                else:
                    merged = self._merge_by_key(current or [], patch_list, list_path, mkey)
            original[field] = _reorder(merged, order, current or [], _identity(mkey))

    def _check_order(self, patch_list: list, order: list, mkey: str | None, path: tuple[str, ...]) -> None:
        """Items of the patch list must appear in the $setElementOrder list, in that order."""
        identity = _identity(mkey)
        wanted = [identity(item) for item in order]
        position = 0
        for item in patch_list:
            if isinstance(item, dict) and _DIRECTIVE in item:
                continue
            if mkey is not None and not (isinstance(item, dict) and mkey in item):
                raise PatchError(f"map does not contain declared merge key: {mkey} at {_render_path(path)}", 422)
            ident = identity(item)
            while position < len(wanted) and wanted[position] != ident:
                position += 1
            if position == len(wanted):
                raise PatchError(
                    f"the order in the patch list doesn't match the $setElementOrder list at {_render_path(path)}",
                    400,
                )
            position += 1

    # lists

    def merge_list(self, current: list, patch: list, path: tuple[str, ...]) -> list:
        mkey = self._list_key_for(path, patch)
        if mkey is not None:
            return self._merge_by_key(current, patch, path, mkey)
        if self.scalar_set(path):
            return self._merge_scalars(current, patch, path)
        # Replaced whole; directive items such as {"$patch": "replace"} are dropped.
        kept = [item for item in patch if not (self.directives and isinstance(item, dict) and _DIRECTIVE in item)]
        return [value for value in (self.fresh(item, path) for item in kept) if value is not _DROP]

    def _merge_scalars(self, current: list, patch: list, path: tuple[str, ...]) -> list:
        if any(isinstance(v, (dict, list)) for v in current + patch):
            raise PatchError(f"list element types are not identical at {_render_path(path)}", 422)
        identity = _identity(None)
        merged, seen = [], set()
        for value in current + patch:
            if identity(value) not in seen:
                seen.add(identity(value))
                merged.append(value)
        return _reorder(merged, patch, current, identity)

    def _merge_by_key(self, current: list, patch: list, path: tuple[str, ...], mkey: str) -> list:
        if not all(isinstance(item, dict) for item in current + patch):
            raise PatchError(f"list element types are not identical at {_render_path(path)}", 422)
        missing = f"map does not contain declared merge key: {mkey} at {_render_path(path)}"
        identity = _identity(mkey)
        items = []
        for item in patch:
            directive = item.get(_DIRECTIVE) if self.directives else None
            if directive is None:
                items.append(item)
            elif directive == "delete":
                if mkey not in item:
                    raise PatchError(missing, 422)
                current = [c for c in current if identity(c) != identity(item)]
            elif directive == "replace":
                current = []
            elif directive != "merge":
                raise PatchError(f"unknown patch type: {_shown(directive)} in list at {_render_path(path)}", 400)
        if any(mkey not in item for item in current + items):
            raise PatchError(missing, 422)
        merged = list(current)
        where = _positions(merged, identity)
        for item in items:
            found = where.get(identity(item))
            if found is None:
                where[identity(item)] = len(merged)
                merged.append(self.merge_map({}, item, path))
            else:
                merged[found] = self.merge_map(merged[found], item, path)
        return _reorder(merged, items, current, identity)

    def _list_key_for(self, path: tuple[str, ...], patch: list, order: list | None = None) -> str | None:
        """The table's merge key, else the one kubectl's directives reveal for this list.

        kubectl writes $setElementOrder entries and ``$patch: delete`` items with nothing
        but the merge key, so a list missing from the table still merges as upstream.
        """
        mkey = self.list_key(path)
        if mkey is not None or not self.directives:
            return mkey
        if order and all(isinstance(item, dict) and len(item) == 1 for item in order):
            keys = {next(iter(item)) for item in order}
            if len(keys) == 1:
                return keys.pop()
        for item in patch:
            if isinstance(item, dict) and item.get(_DIRECTIVE) == "delete":
                others = [k for k in item if k != _DIRECTIVE]
                if len(others) == 1:
                    return others[0]
        return None


def _shown(value: Any) -> str:
    """A directive or op name fit to quote in an error: a short word, else its JSON type."""
    if isinstance(value, str) and value.isascii() and value.isalpha() and len(value) <= 32:
        return value
    return f"<{_json_type(value)}>"


def _hashable(value: Any) -> Any:
    """A hashable stand-in with JSON equality (1 == 1.0, true != 1)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    if isinstance(value, (dict, list)):
        return ("json", json.dumps(value, sort_keys=True))
    return (type(value).__name__, value)


def _identity(mkey: str | None) -> Callable[[Any], Any]:
    """How list items are told apart: the merge key's value, or the scalar itself."""
    if mkey is None:
        return _hashable
    return lambda item: _hashable(item.get(mkey)) if isinstance(item, dict) else ("missing", None)


def _positions(items: list, identity: Callable[[Any], Any]) -> dict:
    where: dict = {}
    for position, item in enumerate(items):
        where.setdefault(identity(item), position)
    return where


def _reorder(merged: list, wanted_order: list, server_order: list, identity: Callable[[Any], Any]) -> list:
    """Order merged items as kube-apiserver does.

    Items named in ``wanted_order`` (the patch list or $setElementOrder) come in that
    order; the others keep their live order; the two runs are interleaved so that a
    live-only item precedes a patch item only when the live list had it first.
    """
    wanted = _positions(wanted_order, identity)
    live = _positions(server_order, identity)
    from_patch = sorted((m for m in merged if identity(m) in wanted), key=lambda m: wanted[identity(m)])
    server_only = [m for m in merged if identity(m) not in wanted]
    result = []
    i = j = 0
    while i < len(server_only) or j < len(from_patch):
        if j >= len(from_patch):
            result.append(server_only[i])
            i += 1
        elif i >= len(server_only):
            result.append(from_patch[j])
            j += 1
        else:
            left = live.get(identity(server_only[i]))
            right = live.get(identity(from_patch[j]))
            if left is not None and right is not None and left < right:
                result.append(server_only[i])
                i += 1
            else:
                result.append(from_patch[j])
                j += 1
    return result
