"""Request bodies: the write-back guard and the masked copy kept in the audit trail.

The guard exists because masked output looks like data: ``kubectl get secret -o yaml |
kubectl replace -f -`` (or an edit, apply or patch built from masked output) would store the
placeholder over the real value.  Any create/update/patch whose body holds the placeholder,
plain or base64-encoded, anywhere (Secret ``data``/``stringData``, but also a masked env value
or annotation written back) is refused with a clear message.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

import yaml

from kube.bodies import JSON_BODIES, YAML_BODIES, decode
from kube.media import media_type
from kube.vocabulary import OBJECT_BODY_VERBS
from masking.base import MaskReport, WriteRefused
from masking.detectors import Detectors
from masking.objects import ObjectMasker
from masking.placeholder import PLACEHOLDER, PLACEHOLDER_B64

_RAW_MARKERS = (PLACEHOLDER.encode(), PLACEHOLDER_B64.encode())
_BASE64 = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")
_UNPARSED = object()
_MAX_PATH = 200


def _parse(content_type: str | None, body: bytes, *, aliases: bool):
    """The decoded body for JSON and YAML content types; _UNPARSED for anything else.

    Decoded within kube.bodies' depth and size limits (the parse stage refused anything
    beyond them).  Without ``aliases``, YAML that uses anchors is not decoded: walking a
    decoded alias bomb would expand it.
    """
    media = media_type(content_type)
    if media not in JSON_BODIES and media not in YAML_BODIES:
        return _UNPARSED
    try:
        return decode(media, body, aliases=aliases)
    except (ValueError, yaml.YAMLError, RecursionError):
        return _UNPARSED


def _holds_placeholder(text: str) -> bool:
    if PLACEHOLDER in text:
        return True
    if len(text) >= 24 and _BASE64.fullmatch(text):
        try:
            return PLACEHOLDER.encode() in base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return False
    return False


def _find_placeholder(value) -> str | None:
    """Path (``data.password``) of the first string holding the placeholder, or None.

    Shared YAML aliases are walked once, so an alias bomb costs its size, not its expansion.
    """
    seen: set[int] = set()
    stack = [(value, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if _holds_placeholder(node):
                return path or "(the body)"
        elif isinstance(node, (dict, list)):
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, dict):
                for key, child in node.items():
                    key_text = str(key)
                    if _holds_placeholder(key_text):
                        return path or "(a key)"
                    stack.append((child, f"{path}.{key_text}" if path else key_text))
            else:
                stack.extend((child, f"{path}[{i}]") for i, child in enumerate(node))
    return None


def _show(path: str) -> str:
    return path if len(path) <= _MAX_PATH else path[: _MAX_PATH - 3] + "..."


def check_write(info, content_type: str | None, body: bytes) -> None:
    """Refuse (WriteRefused) a write whose body would store the mask placeholder."""
    if not getattr(info, "is_resource_request", False) or info.verb not in OBJECT_BODY_VERBS or not body:
        return
    parsed = _parse(content_type, body, aliases=True)
    where = None if parsed is _UNPARSED else _find_placeholder(parsed)
    if where is None and not any(marker in body for marker in _RAW_MARKERS):
        return
    what = "Secret" if (info.api_group, info.resource) == ("", "secrets") else info.resource or "object"
    name = f' "{info.name}"' if info.name else ""
    at = f" at {_show(where)}" if where else ""
    raise WriteRefused(
        f"airlock: refusing to write {what}{name}: the body holds the masking placeholder "
        f"{PLACEHOLDER}{at} (base64 or plain). Values read through the gateway are masked; writing "
        "them back would replace the real data. Send the real values, or leave those keys out "
        "(a merge patch or server-side apply keeps fields it is not given)."
    )


def mask_request_body_for_record(info, content_type: str | None, body: bytes, *, detectors: Detectors | None = None) -> bytes:
    """A copy of a request body that is safe to keep in the audit trail.

    JSON and YAML bodies are decoded, masked like responses (Secret data/stringData, the
    last-applied annotation, detector fields), every remaining string is run through the
    detectors, and the result is returned as compact JSON (a YAML body is recorded as JSON).
    JSON patches have their ``value`` members masked.  A body that cannot be decoded is
    recorded as the placeholder when it is written to Secrets or tokens, else as its bytes
    with detector hits masked.
    """
    if not body:
        return body
    detectors = detectors if detectors is not None else Detectors.default()
    report = MaskReport()
    masker = ObjectMasker.for_request(info, mask_secrets=True, detectors=detectors, report=report)
    parsed = _parse(content_type, body, aliases=False)
    if parsed is _UNPARSED:
        if masker.kind in ("Secret", "TokenRequest"):
            return PLACEHOLDER.encode()
        return detectors.mask_bytes(body, report.counts)
    if media_type(content_type) == "application/json-patch+json" and isinstance(parsed, list):
        parsed = _mask_json_patch(parsed, masker)
    else:
        masker.document(parsed)
    parsed = _mask_strings(parsed, detectors, report.counts)
    try:
        return json.dumps(parsed, separators=(",", ":"), default=str).encode()
    except (TypeError, ValueError, RecursionError):
        return PLACEHOLDER.encode()


def _mask_json_patch(ops: list, masker: ObjectMasker) -> list:
    """RFC 6902 operations: for Secrets every written value is masked, else by detectors."""
    for op in ops:
        if not isinstance(op, dict) or "value" not in op:
            continue
        if masker.kind == "Secret":
            path = op.get("path") if isinstance(op.get("path"), str) else ""
            if path in ("", "/"):
                masker.object(op["value"], "Secret", force_secret=True)
            elif not path.startswith(("/metadata/labels", "/metadata/name", "/metadata/namespace", "/type")):
                op["value"] = _all_masked(op["value"], masker.report)
        elif isinstance(op["value"], dict):
            masker.object(op["value"], masker.kind)
    return ops


def _all_masked(value, report: MaskReport):
    if isinstance(value, dict):
        return {k: _all_masked(v, report) for k, v in value.items()}
    if isinstance(value, list):
        return [_all_masked(v, report) for v in value]
    if value is None or isinstance(value, bool):
        return value
    report.add("secret-data")
    return PLACEHOLDER


def _mask_strings(value, detectors: Detectors, counts: dict[str, int]):
    """Every string leaf through the detectors; name/value pairs by name as well."""
    if isinstance(value, str):
        return detectors.mask_text(value, counts)
    if isinstance(value, list):
        return [_mask_strings(v, detectors, counts) for v in value]
    if isinstance(value, dict):
        name = value.get("name")
        out = {}
        for key, child in value.items():
            if key == "value" and isinstance(name, str) and isinstance(child, str):
                out[key] = detectors.mask_pair(name, child, counts)
            else:
                out[key] = _mask_strings(child, detectors, counts)
        return out
    return value
