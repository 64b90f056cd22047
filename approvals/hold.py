"""The inline hold: a request whose rule says ``review`` waits here for a human, or is told at once.

:meth:`Holder.hold` opens (or, for an identical retry, reuses) a Review and
tells the caller once through ``on_pending`` that approval is pending.  With
the rule's ``review_hold`` ``retry`` (or when ``on_pending`` answers that the
client cannot be kept waiting) it returns at once with state ``pending``: the
agent gets a Status naming the review's URL and runs the request again once it
is approved (the approval then covers the identical retry, approvals.fingerprint).
With ``open`` it waits for the decision.  The database is the source of
truth: the row is re-read on every channel-layer wake-up (a message to the
review's group, sent by whichever process recorded a vote) and at least every
``poll_interval`` seconds, so a lost message or a missing channel layer only
delays the answer.  The channel layer is never awaited by the hold itself
(:class:`Wakeups`): when Redis is slow or away, the hold is released by its
database poll.  A restarted gateway keeps nothing: the client's retry is
matched to the review by its exact request (approvals.fingerprint).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from dataclasses import dataclass, replace

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import OperationalError

from approvals import broadcast, conf, preview, reviews
from approvals.fingerprint import effect_headers
from kube.headers import upstream_request_headers
from policy.messages import describe_request
from policy.vocabulary import HOLD_OPEN
from runtime import db
from runtime.timeouts import wait_at_most

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingReview:
    """What ``on_pending`` is told: enough to print "waiting for approval of review 42 (url)".

    ``wait``: the rule holds the request open.  ``on_pending`` returns False when the
    client cannot be kept waiting with a note (it was answered at once instead).
    """

    id: int
    url: str
    description: str
    rule_name: str
    min_approvals: int
    wait: bool = True


@dataclass(frozen=True)
class HoldOutcome:
    approved: bool
    review_id: int
    state: str  # approved | denied | pending (answered at once) | timeout | expired | used
    reviewers: tuple[str, ...] = ()
    reason: str = ""
    unmask: bool = False
    release_token: bool = False
    scope: str = "once"
    url: str = ""
    rule_name: str = ""
    description: str = ""  # the review's, when it describes another request (recent_stream_review)

    def withheld_token_message(self) -> str:
        """The 403 message for an approved ServiceAccount token request whose token the reviewers withheld."""
        by = f" ({self.reviewer})" if self.reviewers else ""
        again = ("; retry to ask for a new review, and ask the reviewer to release the token"
                 if self.scope == "once" else "")
        return (f"airlock: review {self.review_id} was approved{by} but the reviewer withheld the ServiceAccount "
                f"token: the request was not sent to the cluster and no token was minted{again}")

    @property
    def reviewer(self) -> str:
        return ", ".join(self.reviewers)

    def message(self, description: str = "") -> str:
        """The 403 message for anything but an approval (safe to show the agent)."""
        what = f": {description}" if description else ""
        where = f" ({self.url})" if self.url else ""
        if self.state == "denied":
            by = f" by {self.reviewer}" if self.reviewers else ""
            because = f": {self.reason}" if self.reason else ""
            return f"airlock: denied{by} (review {self.review_id}){because}"
        if self.state == "pending":
            rule = f" (rule {json.dumps(self.rule_name)})" if self.rule_name else ""
            at = f" at {self.url}" if self.url else ""
            return (
                f"airlock: review {self.review_id} is waiting for a reviewer{rule}{what}; nothing was done. "
                f"Once a reviewer approves it{at}, run the same request again"
            )
        if self.state == "timeout":
            return (
                f"airlock: review {self.review_id} is still pending{what}; no reviewer decided in time. "
                f"Retry the same request once review {self.review_id} is approved{where}"
            )
        if self.state == "used":
            return (
                f"airlock: the approval of review {self.review_id} was already used by an identical request{what}; "
                "retry to ask for a new review"
            )
        return f"airlock: review {self.review_id} expired without approval{what}; retry to ask for a new review"


DB_ATTEMPTS = 5


async def in_db(fn, *args):
    """Run one of approvals.reviews' transactional steps on the gateway's database pool (runtime.db).

    A transient OperationalError (a lock conflict, a serialization failure)
    rolled the transaction back, so the step is retried a few times with a
    short backoff before the error is raised (authorize turns it into a 503).
    An unavailable database is not retried: its wait is already bounded, and
    a step that timed out may still commit.
    """
    for attempt in range(DB_ATTEMPTS):
        try:
            return await db.run(fn, *args)
        except db.DatabaseUnavailable:
            raise
        except OperationalError:
            if attempt == DB_ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.05 * 2**attempt)


def held_request(request, decision) -> reviews.HeldRequest:
    """The request exactly as it will be forwarded: target, effect headers after the gateway's header hygiene, body."""
    forwarded = upstream_request_headers(request.headers, websocket=request.transport == "websocket")
    return reviews.HeldRequest(
        connection=request.connection,
        principal=request.principal,
        info=request.info,
        method=request.method,
        transport=request.transport,
        path=request.upstream_path,
        query=request.query,
        target=request.target,
        headers=effect_headers(forwarded),
        body=request.body,
        audit_id=str(request.audit_id),
        rule_id=decision.rule_id,
        rule_name=decision.rule_name,
        description=describe_request(request.info),
        dry_run_note=request.dry_run.note,
        origin=_origin(request.caller),
    )


def _origin(caller) -> str:
    """What reviewers are told about an in-process caller (gateway.pipeline.InProcessCaller): "mcp: delete"."""
    if caller is None:
        return ""
    return f"{caller.origin}: {caller.detail}" if caller.detail else caller.origin


def review_url(review_id: int, base_url: str = "") -> str:
    """The review's page: under AIRLOCK_DASHBOARD_URL, else under the address the agent reached
    the gateway at (the dashboard is served on the same host), else the path alone."""
    path = f"/approvals/reviews/{review_id}/"
    link = conf.dashboard_link(path)
    return link if link != path else base_url.rstrip("/") + path


async def compute_preview(held: reviews.HeldRequest, review_id: int, connections, *, transport=None) -> None:
    """Run the dry run for a new review and store its masked outcome (never raises).

    ``connections``: the application's connection registry (``await connections(name)`` -> Upstream or None).
    """
    try:
        upstream = await connections(held.connection) if connections is not None else None
        if upstream is None:
            result = preview.Preview("no preview", error=f"connection {held.connection} is not available")
        else:
            result = await preview.run(held, upstream, transport=transport)
    except Exception as exc:
        log.warning("preview of review %d failed: %s", review_id, type(exc).__name__)
        result = preview.Preview("no preview", error=f"the preview failed ({type(exc).__name__})")
    try:
        await in_db(reviews.save_preview, review_id, result.summary, result.diff, result.error)
    except Exception as exc:
        log.error("preview of review %d could not be stored: %s", review_id, type(exc).__name__)


class Holder:
    """Holds review-gated requests until a decision, a timeout, or the client going away.

    For writes, the first holder of a review also runs its dry-run preview in
    the background against the cluster ``connections`` finds (the application's
    connection registry; ``previews=False`` turns previews off; ``transport`` is
    for tests).  Background work (previews, leaving a review's group) is kept
    referenced by the holder until it ends.
    """

    def __init__(self, *, connections=None, timeout: float | None = None, poll_interval: float | None = None,
                 previews: bool = True, transport=None):
        self.connections = connections
        self._timeout = timeout
        self._poll_interval = poll_interval
        self.previews = previews
        self.transport = transport
        self._background: set[asyncio.Task] = set()

    def in_background(self, task: asyncio.Task) -> asyncio.Task:
        """Keep ``task`` referenced until it is done."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def start_preview(self, held: reviews.HeldRequest, review_id: int) -> asyncio.Task | None:
        if not (self.previews and preview.needed(held.info)):
            return None
        if not await in_db(reviews.claim_preview, review_id):
            return None
        # Runs to completion even if this request goes away: reviewers still need it.
        return self.in_background(asyncio.get_running_loop().create_task(
            compute_preview(held, review_id, self.connections, transport=self.transport)))

    @property
    def timeout(self) -> float:
        return float(self._timeout if self._timeout is not None else settings.AIRLOCK_REVIEW_HOLD_SECONDS)

    @property
    def poll_interval(self) -> float:
        value = self._poll_interval if self._poll_interval is not None else settings.AIRLOCK_REVIEW_POLL_SECONDS
        return max(0.05, float(value))

    async def hold(self, request, decision, *, on_pending=None) -> HoldOutcome:
        held = held_request(request, decision)
        review, settlement = await in_db(reviews.open_review, held)
        url = review_url(review.pk, request.base_url)
        if settlement is not None:
            return _outcome(settlement, url)
        await self.start_preview(held, review.pk)
        wait = decision.hold == HOLD_OPEN
        pending = HoldOutcome(approved=False, review_id=review.pk, state="pending", url=url,
                              rule_name=review.rule_name)
        if not wait:
            await self._tell(on_pending, review, url, wait)
            return pending
        wakeups = Wakeups.listen(broadcast.review_group(review.pk), self.in_background)
        try:
            if await self._tell(on_pending, review, url, wait) is False:
                return pending
            return await self._wait(review.pk, str(request.audit_id), wakeups, url)
        finally:
            wakeups.close()

    async def recent_stream_review(self, request) -> HoldOutcome | None:
        """What the agent's WebSocket attempt at this exec, attach or port-forward was told (see
        reviews.recent_stream_review), for the SPDY retry kubectl makes after a refused WebSocket."""
        settlement = await in_db(reviews.recent_stream_review, request.connection, request.principal, request.info,
                                 request.upstream_path)
        if settlement is None:
            return None
        outcome = _outcome(settlement, review_url(settlement.review_id, request.base_url))
        return replace(outcome, rule_name=settlement.details.get("rule_name", ""),
                       description=settlement.details.get("description", ""))

    @staticmethod
    async def _tell(on_pending, review, url: str, wait: bool):
        if on_pending is None:
            return None
        result = on_pending(PendingReview(review.pk, url, review.description, review.rule_name,
                                          review.min_approvals, wait))
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _wait(self, review_id: int, audit_id: str, wakeups: "Wakeups", url: str) -> HoldOutcome:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            settlement = await in_db(reviews.settle, review_id)
            if settlement is not None:
                return _outcome(settlement, url)
            remaining = deadline - loop.time()
            if remaining <= 0:
                await in_db(reviews.record_timeout, review_id, audit_id)
                return HoldOutcome(approved=False, review_id=review_id, state="timeout", url=url)
            await wakeups.wait(min(remaining, self.poll_interval))


class Wakeups:
    """Channel-layer messages to one review's group, as an Event the hold waits on with a timeout.

    Joining the group and receiving run in a background task, each
    channel-layer call bounded by AIRLOCK_CHANNEL_LAYER_TIMEOUT_SECONDS
    (receiving excepted: it waits for a message).  If the layer fails or is
    slow, the task gives up and the hold keeps polling the database; leaving
    the group happens in the background too.
    """

    def __init__(self, layer, group: str, in_background):
        self.layer = layer
        self.group = group
        self.in_background = in_background  # keeps a task referenced until done (the Holder's)
        self.channel: str | None = None
        self.event = asyncio.Event()
        self.task: asyncio.Task | None = None

    @classmethod
    def listen(cls, group: str, in_background) -> "Wakeups":
        wakeups = cls(get_channel_layer(), group, in_background)
        if wakeups.layer is not None:
            wakeups.task = asyncio.get_running_loop().create_task(wakeups._receive())
        return wakeups

    async def _receive(self) -> None:
        timeout = broadcast.timeout()
        try:
            channel = await wait_at_most(self.layer.new_channel("airlock.hold."), timeout)
            await wait_at_most(self.layer.group_add(self.group, channel), timeout)
            self.channel = channel
            while True:
                await self.layer.receive(channel)
                self.event.set()
        except Exception as exc:
            log.warning("channel layer unavailable for %s, polled only: %s", self.group, type(exc).__name__)

    async def wait(self, timeout: float) -> None:
        """Until a message arrived (since the last wait) or ``timeout`` seconds passed."""
        try:
            async with asyncio.timeout(timeout):
                await self.event.wait()
        except TimeoutError:
            pass
        self.event.clear()

    def close(self) -> None:
        if self.task is None:
            return
        self.task.cancel()  # its clean-up may wait for the layer: keep it referenced, never await it
        self.in_background(self.task)
        if self.channel is not None:
            self.in_background(asyncio.get_running_loop().create_task(_logged(
                wait_at_most(self.layer.group_discard(self.group, self.channel), broadcast.timeout()),
                f"leave {self.group}")))


async def _logged(awaitable, what: str) -> None:
    try:
        await awaitable
    except Exception as exc:
        log.warning("could not %s: %s", what, type(exc).__name__)


def _outcome(settlement: reviews.Settlement, url: str) -> HoldOutcome:
    return HoldOutcome(
        approved=settlement.approved,
        review_id=settlement.review_id,
        state=settlement.state,
        reviewers=settlement.reviewers,
        reason=settlement.reason,
        unmask=settlement.unmask,
        release_token=settlement.release_token,
        scope=settlement.scope,
        url=url,
    )
