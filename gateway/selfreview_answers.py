"""The gateway's own answer to ``kubectl auth whoami`` / ``auth can-i`` (``--list``): the I/O half.

gateway.selfreviews is sans-IO (what a review asks, what the answer says); this module reads the
connection's rules and the agent's leases and asks the cluster the part only it can answer, as
the connection's identity.  The answer is recorded like any other (gateway.exchange).
"""

import asyncio
import json
import logging

import httpx
from django.db import DatabaseError

import masking
from connections.credentials import cluster_headers
from gateway import selfreviews
from gateway.authz import find_lease, lease_refusal
from gateway.exchange import Exchange
from policy.vocabulary import ALLOW
from gateway.refusals import STATUS_HEADERS
from kube import headers as hdr
from kube.status import GatewayError
from runtime import db

log = logging.getLogger(__name__)


class SelfReviews:
    def __init__(self, policy, pool, leases=None):
        self.policy = policy
        self.pool = pool
        self.leases = leases  # approvals.lease_check.LeaseCache, or None: no leases

    async def answer(self, exchange: Exchange, upstream, send):
        """Answer whoami / can-i / can-i --list for the agent; recorded like any answer."""
        request = exchange.request
        kind = selfreviews.review_kind(request.info)
        review = selfreviews.read(request.body, request.info, kind)
        if kind == selfreviews.IDENTITY:
            cluster_username = upstream.impersonation_user_prefix + request.principal.username \
                if upstream.impersonates else ""
            status = selfreviews.identity(request.principal, connection=request.connection,
                                          cluster_username=cluster_username)
        elif kind == selfreviews.ACCESS:
            status = await self.access_review(request, upstream, selfreviews.access_question(review))
        else:
            status = await self.rules_review(request, upstream, selfreviews.rules_namespace(review))
        body = json.dumps(selfreviews.answer(request.info, kind, review, status), separators=(",", ":")).encode()
        # It echoes what the agent asked; the trail keeps no Secret value the request body would not keep.
        body = masking.mask_values_in_record(body, exchange.record_values)
        exchange.code = 201
        exchange.response_started = True
        await send({"type": "http.response.start", "status": 201, "headers": STATUS_HEADERS})
        exchange.capture(body)
        await send({"type": "http.response.body", "body": body})

    async def access_review(self, request, upstream, info) -> dict:
        rules = await self.connection_rules(request.connection)
        decision = selfreviews.access_decision(rules, request.principal, info)
        refusal = ""
        if decision.effect == ALLOW and decision.requires_lease:
            if await self.lease_held(request, decision.rule_name) is None:
                refusal = lease_refusal(request.connection, request.principal, decision, info)
        verdict = selfreviews.access_verdict(decision, info, request.connection, refusal)
        if verdict.ask_cluster:
            answer = await self.ask_cluster(upstream, request, selfreviews.ACCESS,
                                            selfreviews.cluster_access_question(info))
            verdict = selfreviews.with_cluster_access(verdict, *answer, request.connection)
        return verdict.status()

    async def rules_review(self, request, upstream, namespace: str) -> dict:
        rules = await self.connection_rules(request.connection)
        leased = set()
        for rule in rules:
            if rule.effect == ALLOW and rule.requires_lease and rule.applies_to(request.principal):
                if await self.lease_held(request, rule.name) is not None:
                    leased.add(rule.name)
        ours = selfreviews.airlock_rules(rules, request.principal, namespace, request.connection, leased)
        answer = await self.ask_cluster(upstream, request, selfreviews.RULES,
                                        selfreviews.cluster_rules_question(namespace))
        return selfreviews.with_cluster_rules(ours, *answer, request.connection)

    async def connection_rules(self, connection: str):
        try:
            return await self.policy.rules_for(connection)
        except db.DatabaseUnavailable:
            raise GatewayError(503, db.DOWN_MESSAGE) from None

    async def lease_held(self, request, rule_name: str):
        try:
            return await find_lease(request.connection, request.principal, rule_name, self.leases)
        except DatabaseError:
            raise GatewayError(503, "airlock: leases are unavailable right now (database error)") from None

    async def ask_cluster(self, upstream, request, kind: str, question: bytes) -> tuple[dict | None, str]:
        """Create the review ``question`` on the cluster as the connection's identity: its status, or why not."""
        headers = [("content-type", "application/json"), ("accept", "application/json"),
                   ("accept-encoding", "identity"), *cluster_headers(upstream, request.principal)]
        try:
            async with asyncio.timeout(upstream.first_byte_timeout):
                response = await self.pool.client(upstream).post(
                    upstream.server_url + selfreviews.CLUSTER_PATHS[kind], content=question, headers=hdr.encode(headers))
        except TimeoutError:
            return None, f"no answer within {upstream.first_byte_timeout:g} s"
        except httpx.HTTPError as exc:
            log.warning("upstream %s unreachable for a %s: %s", request.connection, kind, type(exc).__name__)
            return None, "it is unreachable"
        return selfreviews.cluster_status(kind, response.status_code, response.content)
