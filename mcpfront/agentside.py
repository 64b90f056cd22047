"""The tools about Airlock itself: what the agent may do here, its reviews, its leases.

``explain_policy`` reads the connection's rules as the gateway evaluates them (policy.cache, the
application's PolicyCache) and lists those that apply to the agent, first match first;
``review_status`` and ``wait_for_review`` read only the agent's own reviews (its issuer and
subject); ``request_lease`` goes through the agent lease API (approvals.agent_api) in-process
with the agent's token, so its checks are the API's.
"""

from __future__ import annotations

import asyncio
import json
import time

from approvals.hold import review_url
from approvals.models import Review
from mcpfront.inprocess import Call
from mcpfront.kubeapi import ToolInputError, trim
from policy.vocabulary import ALLOW, DENY, HOLD_OPEN, REVIEW
from runtime import db

MAX_WAIT_SECONDS = 300
POLL_SECONDS = 1.0


def _patterns(globs) -> str:
    return ",".join(globs.patterns) if globs else "-"


def describe_rule(rule) -> str:
    if rule.broken:
        return f"{rule.name}: broken rule, refuses everything until an administrator fixes it"
    if rule.non_resource_urls and not rule.resources:
        what = f"non-resource URLs {_patterns(rule.non_resource_urls)}"
    else:
        what = (f"{','.join(sorted(rule.verbs)) or '-'} {_patterns(rule.resources)} in API groups "
                f"{_patterns(rule.api_groups)}, namespaces {_patterns(rule.namespaces)}, names {_patterns(rule.names)}")
    effect = {ALLOW: "allowed", DENY: "denied", REVIEW: "needs a reviewer's approval"}.get(rule.effect, rule.effect)
    notes = []
    if rule.effect == REVIEW:
        notes.append("held open until decided" if rule.hold == HOLD_OPEN else "answered at once, retry once approved")
        notes.append(f"{rule.min_approvals} approval(s)")
    if rule.requires_lease:
        notes.append("only under an active lease (request_lease)")
    if rule.dry_run != "any":
        notes.append(f"dry runs: {rule.dry_run}")
    if rule.effect == ALLOW and not rule.mask_secrets:
        notes.append("Secret values not masked")
    return f"{rule.name} ({effect}): {what}" + (f" [{'; '.join(notes)}]" if notes else "")


async def explain_policy(policy, call: Call, principal) -> str:
    rules = [r for r in await policy.rules_for(call.connection) if r.applies_to(principal)]
    head = (f"Rules of connection {call.connection} for {principal.username} (groups: "
            f"{', '.join(principal.groups) or 'none'}), first match decides; anything no rule allows is denied. "
            "MCP tool calls are Kubernetes API requests under these same rules. A held request answers at once "
            "with a review to wait for (wait_for_review), then the same tool call is repeated.")
    if not rules:
        return head + "\nNo rule applies to you here: every request is denied."
    return trim(head + "\n" + "\n".join(f"{i}. {describe_rule(r)}" for i, r in enumerate(rules, 1)))


def _own_review(review_id: int, connection: str, principal) -> dict | None:
    review = Review.objects.filter(pk=review_id, connection=connection, principal_subject=principal.subject,
                                   principal_issuer=principal.issuer).first()
    if review is None:
        return None
    return {"id": review.pk, "state": review.state, "description": review.description,
            "rule": review.rule_name, "reason": review.reason,
            "origin": review.origin}


def _review_id(value) -> int:
    try:
        review_id = int(value)
    except (TypeError, ValueError):
        raise ToolInputError("review_id is a review number, e.g. 42") from None
    if review_id <= 0:
        raise ToolInputError("review_id is a review number, e.g. 42")
    return review_id


def _words(state: dict, url: str) -> str:
    what = f"review {state['id']} ({state['description']}; rule {json.dumps(state['rule'])}): {state['state']}"
    if state["state"] == "pending":
        return what + f". A reviewer decides at {url}; call wait_for_review to wait for the decision."
    if state["state"] == "approved":
        return what + ". Repeat the same tool call with the same arguments: the approval covers that identical request."
    because = f" (reason: {state['reason']})" if state["reason"] else ""
    return what + f"{because}. The request was not approved; do not repeat it unless a person asks you to."


async def review_status(call: Call, principal, review_id) -> str:
    review_id = _review_id(review_id)
    state = await db.run(_own_review, review_id, call.connection, principal)
    if state is None:
        raise ToolInputError(f"you have no review {review_id} on connection {call.connection}")
    return _words(state, review_url(review_id, f"{call.scheme}://{call.host}" if call.host else ""))


async def wait_for_review(call: Call, principal, review_id, timeout_seconds=60, progress=None) -> str:
    """Polls the agent's own review until a reviewer decides or ``timeout_seconds`` pass; ``progress``
    (the MCP progress notification, when the client asked for it) is told each poll."""
    review_id = _review_id(review_id)
    timeout = max(1.0, min(float(timeout_seconds), MAX_WAIT_SECONDS))
    url = review_url(review_id, f"{call.scheme}://{call.host}" if call.host else "")
    started = time.monotonic()
    while True:
        state = await db.run(_own_review, review_id, call.connection, principal)
        if state is None:
            raise ToolInputError(f"you have no review {review_id} on connection {call.connection}")
        waited = time.monotonic() - started
        if state["state"] != "pending":
            return _words(state, url)
        if waited >= timeout:
            return (f"review {review_id} is still pending after {int(waited)} s ({url}). Call wait_for_review "
                    "again to keep waiting, or do something else and come back.")
        if progress is not None:
            await progress(waited, timeout, f"waiting for a reviewer to decide review {review_id}")
        await asyncio.sleep(min(POLL_SECONDS, timeout - waited))


async def request_lease(client, django_app, call: Call, duration, reason: str, rules=None) -> str:
    body = json.dumps({"connection": call.connection, "duration": duration, "reason": reason,
                       "rules": list(rules or [])}).encode()
    answer = await client.django(django_app, call, "POST", "/approvals/api/agent/leases/", body)
    document = answer.json() if isinstance(answer.json(), dict) else {}
    if not answer.ok:
        raise ToolInputError(f"the lease request was refused ({answer.status}): {document.get('detail', answer.message())}")
    return (f"lease {document.get('id')} requested ({document.get('state', 'requested')}): a reviewer grants it in "
            f"the dashboard; rules that need a lease apply once it is granted.")
