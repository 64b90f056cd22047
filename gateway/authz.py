"""Authorization stage: the connection's rules decide on the RequestInfo.

deny -> 403.  A rule with ``requires_lease`` also needs an active lease for the
principal on this connection, found by the application's lease cache
(``leases``, an approvals.lease_check.LeaseCache; exact expiry, no query on a
warm path); without one, such a rule refuses.  review -> the approvals Holder opens a review and either holds
the request until a reviewer decides or answers at once (the rule's
``review_hold``); without a holder it is refused, as before approvals.  A dry
run (kube.dryrun) is decided as one and is never held.  An approved
ServiceAccount token request whose token the reviewer withheld is refused
here, before anything reaches the cluster.
"""

import json
import logging
from dataclasses import dataclass

from django.db import DatabaseError

from gateway.pipeline import GatewayRequest
from kube.status import GatewayError
from masking import tokens
from policy.evaluate import Decision, evaluate
from policy.messages import denial_message, describe_request
from policy.vocabulary import ALLOW, REVIEW
from runtime import db

log = logging.getLogger(__name__)
STORE_DOWN = "airlock: approvals are unavailable right now (database error); the request was not forwarded"


async def decide(request: GatewayRequest, policy) -> Decision:
    """Stage 3a: what the connection's rules say of the request (a refusal comes in :func:`permit`)."""
    try:
        rules = await policy.rules_for(request.connection)
    except db.DatabaseUnavailable:
        raise GatewayError(503, db.DOWN_MESSAGE) from None  # runtime.db logs outages
    return evaluate(rules, request.principal, request.info, dry_run=request.dry_run.honoured)


@dataclass(frozen=True)
class Authorized:
    """Stage 3b's result: the request with the lease and the approved review it goes ahead under, and
    how its answer is masked, as far as it got; ``refusal`` when it does not go ahead."""

    request: GatewayRequest
    refusal: GatewayError | None = None

    def admitted(self) -> GatewayRequest:
        if self.refusal is not None:
            raise self.refusal
        return self.request


async def permit(request: GatewayRequest, holder=None, *, on_pending=None, leases=None) -> Authorized:
    """Stage 3b for the request with its decision: the lease a rule requires, the hold a review
    rule asks for (``on_pending(PendingReview)`` is called once when the request starts waiting for
    a reviewer), then the masking of its answer.

    A refusal is returned, not raised, with the request as far as it got, so what was decided
    (and the lease found) is recorded with it; a store that fails still raises (503).
    """
    decision = request.decision
    if decision.effect not in (ALLOW, REVIEW) or (decision.effect == REVIEW and holder is None):
        return Authorized(request, GatewayError(403, denial_message(decision, request.info, request.connection)))
    try:
        if decision.requires_lease:
            lease = await find_lease(request.connection, request.principal, decision.rule_name, leases)
            if lease is None:
                return Authorized(request, GatewayError(
                    403, lease_refusal(request.connection, request.principal, decision, request.info)))
            request = request.evolve(lease=lease)
        if decision.effect == REVIEW:
            outcome = await holder.hold(request, decision, on_pending=on_pending)
    except DatabaseError as exc:
        if not isinstance(exc, db.DatabaseUnavailable):  # runtime.db logs outages, rate-limited
            log.error("authorize: approvals store failed: %s", type(exc).__name__)
        raise GatewayError(503, STORE_DOWN) from None
    if decision.effect == REVIEW:
        if not outcome.approved:
            return Authorized(request, GatewayError(
                403, outcome.message(describe_request(request.info)), details=review_details(outcome.review_id)))
        request = request.evolve(review=outcome)
        if tokens.is_token_request(request.info) and not outcome.release_token:
            # Not even a dry run: nothing promises that the cluster would not sign a token for one.
            return Authorized(request, GatewayError(
                403, outcome.withheld_token_message(), details=review_details(outcome.review_id)))
    return Authorized(request.evolve(**masking_of(request)))


async def authorize(request: GatewayRequest, policy, holder=None, *, on_pending=None, leases=None) -> GatewayRequest:
    """Stage 3 in one call: :func:`decide`, then :func:`permit`; the authorized request, or the refusal raised."""
    request = request.evolve(decision=await decide(request, policy))
    return (await permit(request, holder, on_pending=on_pending, leases=leases)).admitted()


def masking_of(request: GatewayRequest) -> dict:
    """Whether the agent's copy of the answer is masked, and whether a TokenRequest's token is released."""
    review = request.review
    if tokens.is_token_request(request.info):
        # Masked in every copy the gateway keeps; the agent's copy gets it back only when released.
        release = review.release_token if review is not None else not request.decision.mask_secrets
        return {"mask_secrets": True, "release_token": release}
    if review is not None and review.unmask:
        return {"mask_secrets": False}  # every approver granted unmasking; recorded with the review
    return {"mask_secrets": request.decision.mask_secrets}


async def fallback_refusal(holder, request: GatewayRequest, refused: GatewayError) -> GatewayError:
    """A review-gated upgrade the gateway does not relay (kubectl's SPDY retry after its WebSocket
    was held or refused) answers with what its WebSocket attempt was told: the review's state and URL."""
    if holder is None or request.decision is None or request.decision.effect != REVIEW:
        return refused
    try:
        outcome = await holder.recent_stream_review(request)
    except DatabaseError:  # only a better message was at stake: the refusal stands as it is
        return refused
    if outcome is None:
        return refused
    return GatewayError(403, outcome.message(outcome.description or describe_request(request.info)),
                        details=review_details(outcome.review_id))


def review_details(review_id: int) -> dict:
    """The Status details naming a review (clients print the message; tools may read these)."""
    return {"group": "airlock.dev", "kind": "reviews", "name": str(review_id)}


async def find_lease(connection: str, principal, rule_name: str, leases=None):
    """The principal's active lease on ``connection`` for a ``requires_lease`` rule, or None
    (always None without a lease cache)."""
    if leases is None:
        return None
    return await leases.find(connection, principal, rule_name)


def lease_refusal(connection: str, principal, decision, info) -> str:
    """How an agent without the lease a rule requires gets one."""
    rule = json.dumps(decision.rule_name)
    return (
        f"airlock: rule {rule} (connection {connection}) requires an active lease: "
        f"{describe_request(info)}. Ask for one with this token and have a reviewer grant it: "
        f'POST /approvals/api/agent/leases/ {{"connection": "{connection}", "rules": '
        f'[{rule}], "duration": "30m", "reason": "..."}}, or an operator runs: manage.py lease request '
        f"--connection {connection} --subject {json.dumps(principal.subject)} "
        f'--rule {decision.rule_name} --duration 30m --reason "..."'
    )
