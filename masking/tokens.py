"""ServiceAccount tokens minted by ``create token`` (TokenRequest): never kept, given only when released.

A TokenRequest response carries a fresh credential in ``status.token``.  The gateway masks it in
every copy it keeps (the audit trail's response body, the reviewers' views), whatever the rule
or review says.  The agent's copy differs from the recorded one in that one field, and only when
the token was released: by the rule (``maskSecrets: false``) or by every approving reviewer of a
held request (``release_token``).  A reviewer who withholds it stops the request before it reaches
the cluster (gateway.authz), so no token is minted at all.  Sans-IO.
"""

from __future__ import annotations

import json

from kube.bodies import loads_json
from masking.placeholder import PLACEHOLDER

# verb, API group, resource, subresource of POST /api/v1/namespaces/NS/serviceaccounts/NAME/token
TOKEN_REQUEST = ("create", "", "serviceaccounts", "token")


def is_token_request(info) -> bool:
    """``info``: a RequestInfo or an approvals Review (both carry these attributes)."""
    return (info.verb, info.api_group, info.resource, info.subresource) == TOKEN_REQUEST


def _token(document) -> str | None:
    status = document.get("status") if isinstance(document, dict) else None
    token = status.get("token") if isinstance(status, dict) else None
    return token if isinstance(token, str) and token else None


def release(masked: bytes, raw: bytes) -> bytes | None:
    """The masked response with ``status.token`` taken from the cluster's raw response; None when
    there is no masked token to release (an error Status, a response without a token).

    Nothing but that field changes: the masked body is decoded, the one value put back, and the
    document encoded again (compact, as the masker writes it, with its final newline if it had one).
    """
    try:
        shown = loads_json(masked)
    except ValueError:
        return None
    if _token(shown) != PLACEHOLDER or shown.get("kind") != "TokenRequest":
        return None
    try:
        token = _token(loads_json(raw))
    except (ValueError, UnicodeDecodeError):
        token = None
    if token is None:
        return None
    shown["status"]["token"] = token
    ending = b"\n" if masked.endswith(b"\n") else b""  # kube-apiserver's documents end with one
    return json.dumps(shown, separators=(",", ":")).encode() + ending
