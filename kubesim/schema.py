"""Known-field checking for ``fieldValidation`` (Strict/Warn/Ignore), like kube-apiserver's decoder.

The field tree of every built-in type comes from the model classes of the official ``kubernetes``
Python client (``openapi_types`` + ``attribute_map``; generated from the same OpenAPI spec as the
API server), imported lazily on the first validated write. Types the client does not know are
accepted unchecked. Unknown fields are reported as kube-apiserver does (``spec.replicass``,
``spec.template.spec.containers[0].foo``) and dropped from what is stored, because a typed API
server cannot store them either.
"""

from __future__ import annotations

import functools
from typing import Any

_PRIMITIVES = {"str", "int", "bool", "float", "datetime", "date", "object", "bytearray"}


@functools.cache
def _models() -> Any:
    import kubernetes.client.models as models  # deferred: ~0.3 s, only needed for validated writes

    return models


def _model_for(api_version: str, kind: str) -> Any:
    group, _, version = api_version.rpartition("/")
    models = _models()
    prefix = group.split(".")[0].capitalize() if group else "Core"
    for name in (f"{prefix}{version.capitalize()}{kind}", f"{version.capitalize()}{kind}"):
        model = getattr(models, name, None)
        if model is not None and hasattr(model, "attribute_map"):
            return model
    return None


@functools.cache
def _fields_of(model_name: str) -> dict[str, str] | None:
    model = getattr(_models(), model_name, None)
    if model is None or not hasattr(model, "attribute_map"):
        return None
    return {json_name: model.openapi_types[attr] for attr, json_name in model.attribute_map.items()}


def _walk(value: Any, type_name: str, path: str, unknown: list[str], prune: bool) -> None:
    if type_name in _PRIMITIVES or value is None:
        return
    if type_name.startswith("list["):
        if isinstance(value, list):
            inner = type_name[5:-1]
            for i, item in enumerate(value):
                _walk(item, inner, f"{path}[{i}]", unknown, prune)
        return
    if type_name.startswith("dict["):
        if isinstance(value, dict):
            inner = type_name[5:-1].split(", ", 1)[1]
            for key, item in value.items():
                _walk(item, inner, f"{path}[{key}]", unknown, prune)
        return
    fields = _fields_of(type_name)
    if fields is None or not isinstance(value, dict):
        return
    for key in list(value):
        child = f"{path}.{key}" if path else key
        if key not in fields:
            unknown.append(child)
            if prune:
                del value[key]
            continue
        _walk(value[key], fields[key], child, unknown, prune)


def unknown_fields(obj: dict, *, prune: bool) -> list[str] | None:
    """Paths of fields the object's type does not declare; None when the type is not known.

    With ``prune`` the unknown fields are removed from ``obj`` in place.
    """
    model = _model_for(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
    if model is None:
        return None
    unknown: list[str] = []
    _walk(obj, model.__name__, "", unknown, prune)
    return unknown
