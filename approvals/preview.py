"""What a held write would do: a server-side dry run (``dryRun=All``), shown as a diff.

The gateway process that holds the request runs it once while the request
waits (approvals.hold): the held request itself (method, path, query in
order, Content-Type and the other effect headers, body) with only the dry-run
switch added, ``dryRun=All`` in the query, or in the DeleteOptions body of a
DELETE that has one (kube-apiserver then ignores the query).  It stores only the
masked outcome on the Review: the web tier never needs the cluster's
credentials or the unmasked body.  The cluster computes the result with
admission, defaulting and validation, exactly as for the real request, and
persists nothing.  The current object (GET) and the result are masked like
responses (masking: Secret values, detector hits) and compared as
YAML.  In impersonation mode the dry run runs as the agent.
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass
from types import SimpleNamespace

import httpx
import yaml

from connections.credentials import cluster_headers
from kube import headers as hdr
from kube.media import media_type
from kube.vocabulary import MUTATING_VERBS
from masking.detectors import Detectors
from masking.objects import ObjectMasker, default_kind
from masking.tokens import is_token_request

TIMEOUT = httpx.Timeout(10.0)
MAX_RESPONSE = 4 * 1024 * 1024
MAX_DIFF = 256 * 1024
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
    headers: tuple[tuple[str, str], ...] = ()  # the held request's effect headers, as forwarded


def dry_run_target(target: str) -> str:
    """The forwarded target with ``dryRun=All`` appended: every parameter the agent sent stays as sent.

    kube-apiserver collects repeated ``dryRun`` values, so an agent's own
    ``dryRun`` cannot switch it off; an invalid one fails both calls alike.
    """
    return target + ("&" if "?" in target else "?") + "dryRun=All"


def delete_options_dry_run(held) -> bytes | str:
    """A DELETE's body with ``dryRun: ["All"]`` added, or why there is none.

    kube-apiserver reads DeleteOptions from the body when there is one and
    then ignores the query, so ``?dryRun=All`` next to a body would delete
    for real.
    """
    media = media_type(held.content_type)
    if held.content_type and media != "application/json":
        return "no preview: the delete options are not JSON"
    try:
        options = json.loads(held.body)
    except (ValueError, RecursionError):
        return "no preview: the delete options are not valid JSON"
    if not isinstance(options, dict):
        return "no preview: the delete options are not a JSON object"
    dry_run = options.get("dryRun", [])
    if not isinstance(dry_run, list) or not all(isinstance(v, str) for v in dry_run):
        return "no preview: the delete options hold an invalid dryRun"
    options["dryRun"] = dry_run + ["All"]
    return json.dumps(options, separators=(",", ":")).encode()


def needed(info) -> bool:
    return info.is_resource_request and info.verb in MUTATING_VERBS


def plan(held) -> tuple[Call | None, Call] | str:
    """(GET of the current object or None, the dry-run call), or why no preview is possible.

    The dry run is the held request itself: same method, path, query in
    order, effect headers (Content-Type: the patch type) and body; only the
    dry-run switch is added.
    """
    info = held.info
    if not needed(info):
        return "no preview: this request does not change anything"
    if is_token_request(info):
        return ("no preview: a ServiceAccount token request is not sent to the cluster before the approval, not even "
                "as a dry run (it could sign a token)")
    if info.subresource and info.subresource not in ("status", "scale"):
        return f"no preview: {info.resource}/{info.subresource} has no dry run"
    if held.body is None and info.verb in ("create", "update", "patch"):
        return "no preview: the request body was not available while the request was held"
    current = Call("GET", held.path) if info.name and info.verb != "create" else None
    body, target = held.body, dry_run_target(held.target)
    if info.verb in ("delete", "deletecollection") and body:
        body = delete_options_dry_run(held)
        if isinstance(body, str):
            return body
        target = held.target
    return current, Call(held.method, target, body, held.headers)


def mask(obj, info):
    """A masked copy, exactly as the gateway would show the object to the agent."""
    obj = copy.deepcopy(obj)
    ObjectMasker(mask_secrets=True, detectors=Detectors.default(), kind=default_kind(info)).document(obj)
    return obj


def _clean(obj):
    if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
        for key in NOISE:
            obj["metadata"].pop(key, None)
    return obj


def as_yaml(obj, info) -> list[str]:
    if obj is None:
        return []
    return yaml.safe_dump(_clean(mask(obj, info)), sort_keys=True, default_flow_style=False).splitlines(keepends=True)


def diff(before, after, name: str, info) -> str:
    text = "".join(difflib.unified_diff(as_yaml(before, info), as_yaml(after, info), f"{name} (current)",
                                        f"{name} (after)"))
    return text if len(text) <= MAX_DIFF else text[:MAX_DIFF] + "\n… (diff cut)\n"


def describe(info, current, result) -> Preview:
    """Turn the cluster's answers into a summary and a diff (pure)."""
    label = f"{info.resource}/{info.name}" if info.name else info.resource
    if info.verb == "deletecollection":
        items = (result or {}).get("items") or []
        names = ", ".join(sorted(str((i.get("metadata") or {}).get("name", "?")) for i in items)[:50])
        return Preview(f"would delete {len(items)} object(s)" + (f": {names}" if names else ""))
    if info.verb == "delete":
        if current is None:
            return Preview(f"{label} does not exist (the delete would fail)")
        return Preview(f"would delete {label}", diff(current, None, label, info))
    if info.verb == "create":
        name = ((result or {}).get("metadata") or {}).get("name", "") if isinstance(result, dict) else ""
        return Preview(f"would create {info.resource}/{name}" if name else f"would create a {info.resource}",
                       diff(None, result, f"{info.resource}/{name}", info))
    text = diff(current, result, label, info)
    if not text:
        # Only what the cluster said: equal answers do not prove the request changes nothing.
        return Preview(f"the cluster's dry-run answer equals the current {label}")
    return Preview(f"would change {label}", text)


def _status_error(info, response: httpx.Response) -> str:
    try:
        status = response.json()
    except ValueError:
        status = {}
    if not isinstance(status, dict):
        status = {}
    reason = status.get("reason") or response.reason_phrase
    message = status.get("message") if isinstance(status.get("message"), str) else ""
    if message:
        masked = mask({"kind": "Status", "message": message}, info).get("message", "")
        if info.resource != "secrets":
            return f"the cluster answered {response.status_code} {reason}: {masked}"
    return f"the cluster answered {response.status_code} {reason}"


async def _send(client, upstream, headers, call: Call) -> httpx.Response:
    request_headers = [*headers, ("Accept", "application/json"), *call.headers]
    return await client.request(call.method, upstream.server_url + call.target, headers=hdr.encode(request_headers),
                                content=call.body)


def _json(response: httpx.Response):
    if len(response.content) > MAX_RESPONSE:
        raise ValueError("response too large")
    return json.loads(response.content)


async def run(held, upstream, *, transport=None) -> Preview:
    """Ask the cluster; never raises for cluster or network trouble (the preview says what went wrong).

    ``held`` is an approvals.reviews.HeldRequest (the request with its real body).
    """
    planned = plan(held)
    if isinstance(planned, str):
        return Preview(planned)
    current_call, dry_call = planned
    info = held.info
    principal = SimpleNamespace(username=held.principal.username, groups=tuple(held.principal.groups))
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
                    return Preview("no preview", error=_status_error(info, response))
            response = await _send(client, upstream, headers, dry_call)
            if response.status_code >= 400:
                return Preview("the dry run was refused", error=_status_error(info, response))
            result = _json(response) if response.content else None
    except (httpx.HTTPError, ValueError) as exc:
        return Preview("no preview", error=f"the cluster could not be asked ({type(exc).__name__})")
    return describe(info, current, result)
