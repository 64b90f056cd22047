"""Authorization stage: the connection's rules decide on the RequestInfo."""

from gateway.policy import denial_message, evaluate
from gateway.status import GatewayError


async def authorize(request, policy):
    """Stage 3: attach the Decision; refuse deny (and, until approvals land, review)."""
    rules = await policy.rules_for(request.connection)
    decision = evaluate(rules, request.principal, request.info)
    request.decision = decision
    if decision.effect != "allow":
        raise GatewayError(403, denial_message(decision, request.info, request.connection), stage="authorize")
    return decision
