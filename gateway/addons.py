"""The addons the gateway attaches to its hooks (gateway.hooks): the audit trail and the lease binding.

:class:`AuditRecording` is how every request reaches the audit trail (audit.recorder), fail closed:
the arrival is journaled before anything is answered, a held request is committed while it
waits, anything that can change the cluster is committed before it is forwarded (anything else
journaled again), and the completion is queued.  An audit trail that cannot take a record
refuses the request (503).

:class:`LeaseBinding` ties a request admitted under a lease to that lease while it is forwarded:
when the lease expires or is revoked, the request's Cut ends its stream (approvals.live).
"""

import logging

from audit.events import needs_durable_record
from audit.recorder import AuditUnavailable
from gateway.exchange import RECEIVED, RESPONSE_COMPLETE, Exchange
from kube.status import GatewayError

log = logging.getLogger(__name__)


class AuditRecording:
    def __init__(self, recorder):
        self.recorder = recorder

    async def parsed(self, exchange: Exchange):
        """Journal the request as it arrived (before it was understood: a crash leaves it in the audit
        trail, closed as "gateway crashed" on recovery), or refuse it."""
        self._journal(exchange.arrival())

    async def held(self, exchange: Exchange, pending):
        """Commit the held request's RequestReceived with its review id, so a hold is in the audit
        trail while it waits.  Secret values are not known yet (they are learnt once the hold ends),
        so this record keeps the path only and no body; the completion records both, masked."""
        record = exchange.record(RECEIVED, review_id=str(pending.id), request_uri=exchange.request.upstream_path,
                                 request_body=b"")
        await self._commit(record)

    async def forwarded(self, exchange: Exchange):
        """Anything that can change the cluster is durably recorded first, anything else journaled, or refused."""
        request = exchange.request
        if needs_durable_record(request.info, request.method):
            await self._commit(exchange.record(RECEIVED))
        else:
            self._journal(exchange.record(RECEIVED))

    async def completed(self, exchange: Exchange):
        try:
            await self.recorder.finish(exchange.record(RESPONSE_COMPLETE))
        except Exception:
            log.exception("audit event %s could not be queued", exchange.audit_id)

    def _journal(self, record):
        try:
            self.recorder.received(record)
        except AuditUnavailable as exc:
            raise GatewayError(503, f"airlock: {exc}") from None

    async def _commit(self, record):
        try:
            await self.recorder.begin(record)
        except AuditUnavailable as exc:
            raise GatewayError(503, f"airlock: {exc}") from None


class LeaseBinding:
    """Registers a request that a rule let through under a lease with approvals.live while it is
    forwarded, so the lease's expiry or revocation ends its stream (a watch with an ERROR event,
    exec with a Status on the error channel); an answer that is not a stream is not affected."""

    def __init__(self, live):
        self.live = live  # approvals.live.LiveStreams: register(principal, connection, lease_id, cut, expires_at=), unregister(handle)

    async def forwarded(self, exchange: Exchange):
        request = exchange.request
        lease = request.lease
        if lease is not None:
            exchange.lease_handle = self.live.register(request.principal, request.connection, lease.id, exchange.cut,
                                                       expires_at=lease.expires_at)

    async def completed(self, exchange: Exchange):
        if exchange.lease_handle is not None:
            self.live.unregister(exchange.lease_handle)
            exchange.lease_handle = None
