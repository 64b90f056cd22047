"""Agents ask for their own lease with the token they already use for kubectl.

    POST /approvals/api/agent/leases/   {"connection", "duration", "reason", "rules": [...]}  -> 201
    GET  /approvals/api/agent/leases/   the caller's own leases

``Authorization: Bearer <token>`` is validated exactly like at the gateway
(gateway.authn: OIDC JWTs, or the development static tokens); the lease is
always for the caller itself (its subject and issuer), and a reviewer still
has to grant it.  No cookies are involved, so there is no CSRF surface.
"""

import json

from channels.db import database_sync_to_async
from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

from approvals import leases
from approvals.api import LeaseSerializer
from approvals.models import Lease, LeaseState
from approvals.reviews import ApprovalError
from gateway.headers import bearer_token
from gateway.identity import AuthenticationError

MAX_OPEN_REQUESTS = 5
MAX_BODY = 16 * 1024
_authenticators: dict[tuple, object] = {}


def authenticator():
    """The gateway's authenticator chain for the current settings, built once per configuration."""
    from gateway.authn import build_authenticator

    key = (settings.AIRLOCK_DEV_STATIC_TOKENS, json.dumps(settings.AIRLOCK_OIDC_ISSUERS, sort_keys=True))
    if key not in _authenticators:
        _authenticators.clear()
        _authenticators[key] = build_authenticator()
    return _authenticators[key]


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"detail": message}, status=status)


def _own_leases(principal) -> list[dict]:
    rows = Lease.objects.filter(subject=principal.subject).prefetch_related("events")[:100]
    return LeaseSerializer(rows, many=True).data


def _request(principal, data) -> Lease:
    open_requests = Lease.objects.filter(subject=principal.subject, state=LeaseState.REQUESTED).count()
    if open_requests >= MAX_OPEN_REQUESTS:
        raise ApprovalError(429, f"you already have {open_requests} lease requests waiting for a reviewer")
    rules = data.get("rules", [])
    return leases.request_lease(
        connection=data.get("connection"), subject=principal.subject, issuer=principal.issuer,
        rules=rules if rules is not None else [], duration=data.get("duration"), reason=data.get("reason"),
        requested_by=f"agent:{principal.username}",
    )


@csrf_exempt
async def agent_leases(request):
    if request.method not in ("GET", "POST"):
        return _error(405, "use GET or POST")
    token = bearer_token([(k.lower(), v) for k, v in request.headers.items()])
    if token is None:
        return _error(401, "a bearer token is required")
    try:
        principal = await authenticator().authenticate(token)
    except AuthenticationError as exc:
        return _error(401, f"Unauthorized: {exc}")
    if request.method == "GET":
        return JsonResponse(await database_sync_to_async(_own_leases)(principal), safe=False)
    if len(request.body) > MAX_BODY:
        return _error(413, f"the request body exceeds {MAX_BODY} bytes")
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        return _error(400, "the body must be a JSON object")
    if not isinstance(data, dict):
        return _error(400, "the body must be a JSON object")
    try:
        lease = await database_sync_to_async(_request)(principal, data)
    except ApprovalError as exc:
        return _error(exc.status, exc.message)
    return JsonResponse(await database_sync_to_async(lambda: LeaseSerializer(lease).data)(), status=201)
