"""What a reviewer approves: the canonical identity of a held request (sans-IO).

One function, :func:`identify`, used by reviews (matching retries and
approvals), the dashboard and API (what is shown) and the dry-run preview
(what is asked), all from the same :class:`approvals.reviews.HeldRequest`.

* ``exact``: what a ``once`` approval covers and how an identical retry finds
  its review.  Connection, principal (issuer + subject), method, transport,
  the target exactly as forwarded (path and the raw query in order, repeated
  parameters kept: kube-apiserver reads the first ``labelSelector`` and exec's
  ``command=`` values are the argv in order), the forwarded headers that
  change the effect upstream (Content-Type picks the decoder and the patch
  type; User-Agent the default field manager; Content-Encoding), and a digest
  of the exact body forwarded.  Nothing is normalised: a request that
  differs in any byte of these needs its own review.
* ``window``: what a ``window`` approval covers until it ends, whatever the
  body or query: connection, principal, verb, API group, resource,
  subresource, namespace and the object's name (for a create, ``metadata.name``
  of the body).  Empty when the request names no single object (a create with
  only ``generateName`` or an unreadable body, a deletecollection, any write
  without a name): such a request can only be approved once.

Every digest is an HMAC-SHA256 under a key derived from ``SECRET_KEY``, never a
plain hash: reviewers see the body masked next to its digest, and the rest of
the bytes is known (kubectl's JSON is deterministic), so an unkeyed digest would
confirm guesses of a masked value offline ("Winter2025!" -> rebuild -> compare).

The version tags in the digests mean that hashes of an earlier scheme never
equal a current one: approvals stored under an earlier scheme cover nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import yaml
from django.utils.crypto import salted_hmac

from kube.bodies import loads_unique
from kube.media import declared_content_type, media_type
from kube.vocabulary import MUTATING_VERBS

# Forwarded request headers that kube-apiserver reads for the request's effect (lower-case).  Each is
# forwarded once, with the agent's first value, the one kube-apiserver reads (kube.headers).
EFFECT_HEADERS = ("content-type", "content-encoding", "user-agent")
UNKNOWN_BODY = "unknown"
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Identity:
    exact: str
    window: str  # "" when no window approval may cover the request
    name: str  # the object's name: from the path, or metadata.name of a create's body


def _keyed(purpose: str, data: bytes) -> str:
    return salted_hmac(f"airlock.approvals.fingerprint.{purpose}", data, algorithm="sha256").hexdigest()


def _digest(parts) -> str:
    return _keyed("identity", json.dumps(parts, separators=(",", ":")).encode())


def body_digest(body: bytes | None) -> str:
    """Keyed digest of the body; a body the gateway did not see is "unknown", distinct from an empty one."""
    if body is None:
        return UNKNOWN_BODY
    return _keyed("body", body)


def effect_headers(forwarded) -> tuple[tuple[str, str], ...]:
    """The effect headers among the (lower-case name, value) pairs sent upstream, in order, repeats kept."""
    return tuple((name, value) for name, value in forwarded if name in EFFECT_HEADERS)


def _yaml_mapping(node) -> dict | None:
    """A YAML mapping node's scalar keys -> nodes; None on duplicate or non-scalar keys, or no mapping."""
    if not isinstance(node, yaml.MappingNode):
        return None
    out = {}
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.value in out:
            return None
        out[key.value] = value
    return out


def created_name(headers, body: bytes | None) -> str:
    """``metadata.name`` of a create's body, or "" when there is none or it is ambiguous.

    JSON (protobuf bodies are transcoded to JSON before the hold) and YAML, as
    kube-apiserver decodes them.  A duplicated ``metadata`` or ``name`` key,
    a non-string name, YAML aliases or any other media type give "": no
    window can then cover the create.
    """
    if not body:
        return ""
    declared = declared_content_type(headers)
    media = media_type(declared) if declared else "application/json"  # kube-apiserver's default
    try:
        if media == "application/json":
            document = loads_unique(body)
            metadata = document.get("metadata") if isinstance(document, dict) else None
            name = metadata.get("name") if isinstance(metadata, dict) else None
            return name if isinstance(name, str) else ""
        if media == "application/yaml":
            root = _yaml_mapping(yaml.compose(body, Loader=_SAFE_LOADER))
            metadata = _yaml_mapping(root.get("metadata")) if root else None
            node = metadata.get("name") if metadata else None
            if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:str":
                return ""
            return node.value
    except (ValueError, yaml.YAMLError, RecursionError):
        return ""
    return ""


def identify(held) -> Identity:
    """The exact and window keys of a :class:`approvals.reviews.HeldRequest`."""
    info, principal = held.info, held.principal
    exact = _digest([
        "airlock-review-exact-v3", held.connection, principal.issuer, principal.subject, held.method, held.transport,
        held.target, [list(pair) for pair in held.headers], body_digest(held.body),
    ])
    name = info.name
    if info.is_resource_request and info.verb == "create" and not name:
        name = created_name(held.headers, held.body)
    if info.is_resource_request and info.verb in MUTATING_VERBS and not name:
        return Identity(exact, "", "")
    window = _digest([
        "airlock-review-window-v3", held.connection, principal.issuer, principal.subject, info.verb, info.api_group,
        info.resource, info.subresource, info.namespace, name, "" if info.is_resource_request else info.path,
    ])
    return Identity(exact, window, name)
