"""Agents ask for their own lease with the token they already use for kubectl.

    POST /approvals/api/agent/leases/   {"connection", "duration", "reason", "rules": [...]}  -> 201
    GET  /approvals/api/agent/leases/   the caller's own leases

``Authorization: Bearer <token>`` is validated by the gateway's own authenticator
(identity.chain: OIDC JWTs, or the development static tokens), which the
application (airlock.app) hands to this view in the ASGI scope under
:data:`AUTHENTICATOR`; served without it, the API answers 503.  The lease is
always for the caller itself (its subject and issuer), and a reviewer still
has to grant it.  No cookies are involved, so there is no CSRF surface.

Everything the agent sends is validated strictly (a JSON object of at most
``MAX_BODY`` bytes with exactly the known fields, each of the right type and
size) and refused with a 4xx JSON ``{"detail": ...}``; nothing an agent sends
reaches Django's error pages, with or without DEBUG.
"""

import functools
import json
import logging

from channels.db import database_sync_to_async
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from approvals import leases
from approvals.api import LeaseSerializer
from approvals.models import Lease, LeaseState
from approvals.reviews import ApprovalError
from connections.validation import CONNECTION_NAME
from identity.principal import AuthenticationError
from kube.headers import bearer_token
from kube.media import media_type
from runtime.unavailable import answer_json

log = logging.getLogger(__name__)

MAX_OPEN_REQUESTS = 5
MAX_BODY = 16 * 1024
MAX_RULES = 100
MAX_RULE_NAME = 63
FIELDS = {"connection", "duration", "reason", "rules"}
# The ASGI scope key under which the application passes its authenticator (identity.chain) to this view.
AUTHENTICATOR = "airlock.authenticator"


def authenticator(request):
    """The application's authenticator, or None when the request did not come through it."""
    return (getattr(request, "scope", None) or {}).get(AUTHENTICATOR)


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"detail": message}, status=status)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def lease_input(request) -> dict:
    """The validated lease request from the body; ApprovalError(4xx) for anything else."""
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if not (declared.isascii() and declared.isdigit()):
        raise ApprovalError(400, "invalid Content-Length")
    if int(declared) > MAX_BODY:
        raise ApprovalError(413, f"the request body exceeds {MAX_BODY} bytes")
    if media_type(request.META.get("CONTENT_TYPE")) != "application/json":
        raise ApprovalError(415, "send the lease request as Content-Type: application/json")
    body = request.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise ApprovalError(413, f"the request body exceeds {MAX_BODY} bytes")
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise ApprovalError(400, "the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ApprovalError(400, "the body must be a JSON object")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        shown = ", ".join(json.dumps(name[:40]) for name in unknown[:5])
        raise ApprovalError(400, f"unknown fields: {shown} (a lease is always for the caller; "
                                 f"fields: {', '.join(sorted(FIELDS))})")
    connection = data.get("connection")
    if not isinstance(connection, str) or not CONNECTION_NAME.fullmatch(connection):
        raise ApprovalError(400, "connection must be a connection name")
    rules = data.get("rules")
    if rules is None:
        rules = []
    if (not isinstance(rules, list) or len(rules) > MAX_RULES
            or not all(isinstance(r, str) and 0 < len(r) <= MAX_RULE_NAME for r in rules)):
        raise ApprovalError(400, f"rules must be a list of at most {MAX_RULES} rule names")
    if not isinstance(data.get("reason"), str):
        raise ApprovalError(400, "reason must be a string")
    if "duration" not in data:
        raise ApprovalError(400, "duration is required")
    return {"connection": connection, "rules": rules, "duration": data["duration"], "reason": data["reason"]}


def agent_errors(view):
    """Answer a database that cannot be reached with a 503 JSON and any other unexpected failure with a
    bare 500 JSON: no traceback or debug page reaches an agent."""

    @functools.wraps(view)
    async def guarded(request, *args, **kwargs):
        try:
            return await view(request, *args, **kwargs)
        except Exception as exc:
            unavailable = answer_json(exc)
            if unavailable is not None:
                return unavailable
            log.error("agent lease API failed: %s", type(exc).__name__)
            return _error(500, "internal error")

    return guarded


def _own_leases(principal) -> list[dict]:
    rows = Lease.objects.filter(subject=principal.subject).prefetch_related("events")[:100]
    return LeaseSerializer(rows, many=True).data


def _request(principal, data) -> Lease:
    open_requests = Lease.objects.filter(subject=principal.subject, state=LeaseState.REQUESTED).count()
    if open_requests >= MAX_OPEN_REQUESTS:
        raise ApprovalError(429, f"you already have {open_requests} lease requests waiting for a reviewer")
    return leases.request_lease(
        connection=data["connection"], subject=principal.subject, issuer=principal.issuer, rules=data["rules"],
        duration=data["duration"], reason=data["reason"], requested_by=f"agent:{principal.username}",
    )


@csrf_exempt
@agent_errors
async def agent_leases(request):
    if request.method not in ("GET", "POST"):
        return _error(405, "use GET or POST")
    agents = authenticator(request)
    if agents is None:
        log.error("agent lease API: no authenticator in the ASGI scope (serve Airlock through airlock.asgi)")
        return _error(503, "the agent lease API is not available on this server")
    token = bearer_token([(k.lower(), v) for k, v in request.headers.items()])
    if token is None:
        return _error(401, "a bearer token is required")
    try:
        principal = await agents.authenticate(token)
    except AuthenticationError as exc:
        return _error(401, f"Unauthorized: {exc}")
    if request.method == "GET":
        return JsonResponse(await database_sync_to_async(_own_leases)(principal), safe=False)
    try:
        data = lease_input(request)
        lease = await database_sync_to_async(_request)(principal, data)
    except ApprovalError as exc:
        return _error(exc.status, exc.message)
    return JsonResponse(await database_sync_to_async(lambda: LeaseSerializer(lease).data)(), status=201)
