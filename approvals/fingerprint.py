"""Which requests count as "the same" for a review (sans-IO).

* ``fingerprint``: connection, principal (issuer + subject), verb, API group,
  resource, subresource, namespace and name.  A ``window`` approval covers
  every request with this fingerprint until it ends, whatever its body or
  query: the reviewer approved "alice may delete deployment x in prod for 15
  minutes".
* ``exact``: the fingerprint plus the canonical query (sorted parameters; the
  exec command lives there) and the SHA-256 of the body.  A ``once`` approval
  covers one request with this exact hash, so a retry of the same command is
  matched to it after a timeout or a gateway restart, while a different patch
  body or exec command needs its own review.

A body the gateway did not see at hold time is hashed as "unknown", distinct
from an empty body.
"""

import hashlib
import json
from urllib.parse import parse_qsl, urlencode

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
UNKNOWN_BODY = "unknown"


def _digest(parts) -> str:
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()


def request_fingerprint(connection: str, principal, info) -> str:
    return _digest([
        "airlock-review-v1", connection, principal.issuer, principal.subject, info.verb, info.api_group,
        info.resource, info.subresource, info.namespace, info.name,
        "" if info.is_resource_request else info.path,
    ])


def canonical_query(query: str) -> str:
    return urlencode(sorted(parse_qsl(query, keep_blank_values=True)))


def body_sha256(body: bytes | None) -> str:
    if body is None:
        return UNKNOWN_BODY
    return hashlib.sha256(body).hexdigest()


def exact_hash(fingerprint: str, query: str, body: bytes | None) -> str:
    return _digest(["airlock-review-exact-v1", fingerprint, canonical_query(query), body_sha256(body)])
