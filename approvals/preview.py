"""What a held write would do: a server-side dry run (``dryRun=All``), shown as a diff.

The cluster computes the result with admission, defaulting and validation,
exactly as it would for the real request, but persists nothing.  The current
object (GET) and the dry-run result are compared as YAML.  Secret values are
masked on both sides before anything is compared or shown.  In impersonation
mode the dry run runs as the agent (Impersonate-User/-Group), so it also
reports what the agent's own RBAC would refuse.
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass
from types import SimpleNamespace
from urllib.parse import parse_qsl, urlencode

import httpx
import yaml

from approvals.models import BodyState

MASK = "*** (masked)"
TIMEOUT = httpx.Timeout(10.0)
MAX_RESPONSE = 4 * 1024 * 1024
NOISE = ("managedFields",)


@dataclass(frozen=True)
class Preview:
    summary: str
    diff: str = ""
    error: str = ""


@dataclass(frozen=True)
class Call:
    method: str
    target: str
    body: bytes | None = None
    content_type: str = ""


def dry_run_target(path: str, query: str) -> str:
    params = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "dryRun"]
    params.append(("dryRun", "All"))
    return path + "?" + urlencode(params)


def plan(review) -> tuple[Call | None, Call] | str:
    """(GET of the current object or None, the dry-run call), or why no preview is possible."""
    if review.verb not in ("create", "update", "patch", "delete", "deletecollection"):
        return "no preview: this request does not change anything"
    if review.subresource and review.subresource not in ("status", "scale"):
        return f"no preview: {review.resource}/{review.subresource} has no dry run"
    needs_body = review.verb in ("create", "update", "patch")
    if needs_body and review.body_state != BodyState.STORED:
        return "no preview: the request body is not stored (" + BodyState(review.body_state).label.lower() + ")"
    body = review.body.encode() if review.body_state == BodyState.STORED else None
    current = Call("GET", review.path) if review.name and review.verb != "create" else None
    return current, Call(review.method, dry_run_target(review.path, review.query), body, review.content_type)


def mask(obj):
    """A copy with every Secret's data/stringData values replaced (also inside lists)."""
    obj = copy.deepcopy(obj)

    def walk(node):
        if isinstance(node, dict):
            if node.get("kind") == "Secret":
                for field in ("data", "stringData"):
                    if isinstance(node.get(field), dict):
                        node[field] = {key: MASK for key in node[field]}
            items = node.get("items")
            if isinstance(items, list):
                for item in items:
                    walk(item)
        return node

    return walk(obj)


def _clean(obj):
    if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
        for key in NOISE:
            obj["metadata"].pop(key, None)
    return obj


def as_yaml(obj) -> list[str]:
    if obj is None:
        return []
    return yaml.safe_dump(_clean(mask(obj)), sort_keys=True, default_flow_style=False).splitlines(keepends=True)


def diff(before, after, name: str) -> str:
    return "".join(difflib.unified_diff(as_yaml(before), as_yaml(after), f"{name} (current)", f"{name} (after)"))


def describe(review, current, result) -> Preview:
    """Turn the cluster's answers into a summary and a diff (pure)."""
    label = f"{review.resource}/{review.name}" if review.name else review.resource
    if review.verb == "deletecollection":
        items = (result or {}).get("items") or []
        names = ", ".join(sorted(str((i.get("metadata") or {}).get("name", "?")) for i in items)[:50])
        return Preview(f"would delete {len(items)} object(s)" + (f": {names}" if names else ""))
    if review.verb == "delete":
        if current is None:
            return Preview(f"{label} does not exist (the delete would fail)")
        return Preview(f"would delete {label}", diff(current, None, label))
    if review.verb == "create":
        name = ((result or {}).get("metadata") or {}).get("name", "") if isinstance(result, dict) else ""
        return Preview(f"would create {review.resource}/{name}" if name else f"would create a {review.resource}",
                       diff(None, result, f"{review.resource}/{name}"))
    text = diff(current, result, label)
    return Preview(f"would change {label}" if text else f"no change to {label}", text)


def _status_error(review, response: httpx.Response) -> str:
    try:
        status = response.json()
    except ValueError:
        status = {}
    reason = status.get("reason") or response.reason_phrase
    message = status.get("message") if isinstance(status.get("message"), str) else ""
    if review.resource == "secrets" or not message:
        return f"the cluster answered {response.status_code} {reason}"
    return f"the cluster answered {response.status_code} {reason}: {message}"


async def _send(client, upstream, headers, call: Call) -> httpx.Response:
    request_headers = dict(headers)
    request_headers["Accept"] = "application/json"
    if call.body is not None:
        request_headers["Content-Type"] = call.content_type or "application/json"
    return await client.request(call.method, upstream.server_url + call.target, headers=request_headers,
                                content=call.body)


def _json(response: httpx.Response):
    if len(response.content) > MAX_RESPONSE:
        raise ValueError("response too large")
    return json.loads(response.content)


async def run(review, upstream, *, transport=None) -> Preview:
    """Ask the cluster; never raises for cluster or network trouble (the preview says what went wrong)."""
    from gateway.proxy import cluster_headers

    planned = plan(review)
    if isinstance(planned, str):
        return Preview(planned)
    current_call, dry_call = planned
    principal = SimpleNamespace(username=review.principal_username, groups=tuple(review.principal_groups))
    headers = cluster_headers(upstream, principal)
    options = {"transport": transport} if transport is not None else {"verify": upstream.ssl_context()}
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT, **options) as client:
            current = None
            if current_call is not None:
                response = await _send(client, upstream, headers, current_call)
                if response.status_code == 200:
                    current = _json(response)
                elif response.status_code != 404:
                    return Preview("no preview", error=_status_error(review, response))
            response = await _send(client, upstream, headers, dry_call)
            if response.status_code >= 400:
                return Preview("the dry run was refused", error=_status_error(review, response))
            result = _json(response) if response.content else None
    except (httpx.HTTPError, ValueError) as exc:
        return Preview("no preview", error=f"the cluster could not be asked ({type(exc).__name__})")
    return describe(review, current, result)
