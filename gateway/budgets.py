"""Agent budgets, the gateway's stage between authorization and forwarding (gateway.app).

What a rule lets each agent spend is the rule's ``budget`` (policy.budgets); the counters are
gateway.budgetstore's, keyed by connection, rule and agent (issuer and subject, hashed), so every
gateway process sharing the Redis database counts the same budget.  Where it runs:

1. **after the decision, before the lease and the hold** (:meth:`Budgets.before_permit`): loop
   detection.  A resource request that the same agent sent unchanged (method, path, query, body)
   and that was refused or failed (a 4xx answer but 401 and 429: refused by a rule, not found,
   invalid, in conflict; a 5xx is the gateway's or the cluster's failure, which a client may
   rightly retry) more often than the loop window allows (the rule's ``budget.loop``, else ``AIRLOCK_BUDGET_LOOP``) is answered 429
   until the oldest repeat leaves the window.  The shared counters are asked only about requests
   this process saw fail within the window, so healthy traffic costs no Redis round trip (a loop
   spread over n processes may get n - 1 more tries).  For a review rule, its windows and slots
   are looked at too, without spending: no reviewer is asked to approve what the budget would
   refuse now.
2. **once admitted, just before forwarding** (:meth:`Budgets.spend`): a request the rule allows,
   or a held request now approved, spends one from each window (``quota`` and ``rate``) and holds
   a concurrency slot (``concurrent``) until it completes.  A denied request spends nothing, and
   neither does a held one until it is forwarded.
3. **when the request completes** (the ``completed`` hook, :meth:`Budgets.completed`): the slot is
   released (also when the session was cut or the client went away; a process that dies frees
   none, its slots expire ``AIRLOCK_BUDGET_SLOT_SECONDS`` after their last renewal), and a failing
   answer counts one repeat for loop detection; a refusal of the gateway's own is counted before
   it is sent (:meth:`Budgets.refused`), so the agent's next try already meets it.

**What the agent sees.**  A 429 ``Status`` (reason ``TooManyRequests``) whose message names the
budget, the rule and the absolute UTC time at which the next request fits, with
``details.retryAfterSeconds``.  ``Retry-After`` is sent only when that wait is at most
``AIRLOCK_BUDGET_RETRY_AFTER_MAX_SECONDS``: client-go (kubectl) sleeps through a 429 with
``Retry-After`` silently, up to 10 times, printing nothing (approvals/README.md), which is the
right thing for a rate or a loop (the command just runs slower, then prints the real answer) and
the wrong one for a quota an hour away (ten silent hours); the Python client's urllib3 does the
same up to 3 times for GET, PUT and DELETE.  Without the header client-go and the Python client
do not retry: kubectl prints ``Error from server (TooManyRequests): <message>`` at
once.  A concurrency refusal never sends it: nobody knows when a session ends.

**When the counters cannot be read** (Redis away or slower than
``AIRLOCK_BUDGET_STORE_TIMEOUT_SECONDS``): a request whose rule has a budget is refused, 503,
before forwarding (fail closed: a budget is a limit on what an agent may do); loop detection is
skipped (fail open: it only slows requests that are refused or failing anyway, and it must not put
Redis on the path of every request).  Both are counted (``airlock_budget_store_failures``).

Every throttle is counted (``airlock_budget_throttles{connection, budget}``) and is its request's
audit event: the completion records 429, ``TooManyRequests`` and the message naming the budget.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

from gateway.budgetstore import MemoryCounters, StoreUnavailable, Usage
from gateway.budgetstore import from_settings as counters_from_settings
from kube.status import GatewayError
from policy.budgets import Budget, Window, duration, loop_setting
from policy.messages import describe_request
from policy.vocabulary import ALLOW, REVIEW
from runtime import metrics

log = logging.getLogger(__name__)
TOO_MANY = "TooManyRequests"
NOT_LOOPS = frozenset({401, 429})  # no agent to count for; a throttle is not counted again
FAILED_MEMORY = 10_000  # failed requests this process remembers (loop detection asks Redis only about them)
STORE_DOWN = ("airlock: the budget of rule {rule} (connection {connection}) cannot be counted right now (the "
              "budget store is unavailable); the request was not forwarded. Try again in a few seconds")


class Throttled(GatewayError):
    """A 429 ``Status`` naming the budget; ``Retry-After`` only when ``header`` (a short wait)."""

    def __init__(self, message: str, *, budget: str, rule: str, retry_after: int, header: bool, limit: str):
        details = {"group": "airlock.dev", "kind": "budgets", "name": rule,
                   "causes": [{"reason": budget, "message": limit}], "retryAfterSeconds": retry_after}
        super().__init__(429, message, reason=TOO_MANY, details=details)
        self.budget = budget
        self.retry_after = retry_after
        self.header = header

    def headers(self) -> list[tuple[bytes, bytes]]:
        headers = super().headers()
        if self.header:
            headers.append((b"retry-after", str(self.retry_after).encode()))
        return headers


def utc(moment: float) -> str:
    """``2026-12-06T11:36:12Z``: the absolute time a message names (rounded up to the second)."""
    return datetime.fromtimestamp(math.ceil(moment), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def agent_key(principal) -> str:
    """The agent a budget is counted for: its issuer and subject, hashed (no identity in Redis keys)."""
    text = f"{principal.issuer}\0{principal.subject or principal.username}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def request_key(request) -> str:
    """The same request, for loop detection: method, transport, path, query and body, hashed."""
    digest = hashlib.sha256()
    for part in (request.method, request.transport, request.upstream_path, request.query):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\0")
    digest.update(request.body or b"")
    return digest.hexdigest()[:32]


def window_message(kind: str, window: Window, rule: str, request, reset_at: float, now: float) -> str:
    what = describe_request(request.info)
    return (f"airlock: too many requests: rule {json.dumps(rule)} (connection {request.connection}) allows each "
            f"agent {window.text} ({kind}), and {request.principal.username} has used them: {what} was not "
            f"forwarded. The {kind} resets at {utc(reset_at)} (in {duration(math.ceil(reset_at - now))}): "
            "the next request fits then")


def loop_message(window: Window, rule: str, request, reset_at: float, now: float) -> str:
    what = describe_request(request.info)
    return (f"airlock: slowed down (loop detection, rule {json.dumps(rule)}, connection {request.connection}): "
            f"this same request ({what}) was refused or failed {window.amount} times within "
            f"{duration(window.seconds)}, so it is not tried again before {utc(reset_at)} (in "
            f"{duration(math.ceil(reset_at - now))}). Repeating it unchanged will not change the answer: read the "
            "error it got, then change the request or what makes it fail")


def slot_message(limit: int, rule: str, request, reset_at: float) -> str:
    what = describe_request(request.info)
    return (f"airlock: too many at once: rule {json.dumps(rule)} (connection {request.connection}) allows each "
            f"agent {limit} at once (concurrent), and {request.principal.username} has {limit} open: {what} was not "
            "started. Run it again once one of them has ended (the slot of a session whose gateway stopped is "
            f"free by {utc(reset_at)})")


class Budgets:
    """The budget stage (``before_permit``, ``spend``) and its ``completed`` hook.

    ``counters``: gateway.budgetstore's RedisCounters or MemoryCounters; ``loop``: the default loop
    window (AIRLOCK_BUDGET_LOOP; None: off unless a rule says); ``clock``: UNIX seconds.
    """

    def __init__(self, counters=None, *, loop: Window | None = None, retry_after_max: int = 60,
                 slot_seconds: float = 60.0, clock: Callable[[], float] = time.time):
        self.counters = counters if counters is not None else MemoryCounters(clock)
        self.loop = loop
        self.retry_after_max = retry_after_max
        self.slot_seconds = slot_seconds
        self.clock = clock
        self._slots: dict = {}  # audit id -> (slot key, token, renewal task), from spend to completed
        self._failed: OrderedDict[tuple, float] = OrderedDict()  # request hint -> when it last failed here
        self._early: dict[str, bool] = {}  # audit ids counted by refused(), not to be counted again

    @classmethod
    def from_settings(cls, config) -> Budgets:
        return cls(counters_from_settings(config), loop=loop_setting(getattr(config, "AIRLOCK_BUDGET_LOOP", "")),
                   retry_after_max=int(getattr(config, "AIRLOCK_BUDGET_RETRY_AFTER_MAX_SECONDS", 60)),
                   slot_seconds=float(getattr(config, "AIRLOCK_BUDGET_SLOT_SECONDS", 60)))

    def start(self) -> None:
        """At the gateway's startup: the counters' clients (the first request does not wait for them)."""
        self.counters.start()

    async def aclose(self) -> None:
        for _, _, task in self._slots.values():
            task.cancel()
        await self.counters.aclose()

    # -- keys ---------------------------------------------------------------------------------

    @staticmethod
    def _key(request, *parts: str) -> str:
        return ":".join((request.connection, *parts, agent_key(request.principal)))

    def loop_window(self, request) -> Window | None:
        """The loop window for this request (None: not watched): resource requests of a known agent."""
        decision = request.decision
        if decision is None or request.principal is None or not request.info.is_resource_request:
            return None
        budget = decision.budget
        if budget.loop_off:
            return None
        return budget.loop or self.loop

    def _loop_key(self, request) -> str:
        return self._key(request, "loop", request_key(request))

    @staticmethod
    def _hint(request) -> tuple:
        """What this process remembers of a failed request (cheap: the body's length, not its hash)."""
        principal = request.principal
        return (request.connection, principal.issuer, principal.subject, request.method, request.transport,
                request.upstream_path, request.query, len(request.body or b""))

    def _failed_here(self, request, window: Window) -> bool:
        """Whether this process saw the request fail within the window: only then are the shared
        counters asked, so a request that never failed here costs no Redis round trip.  A loop spread
        over several processes is seen by each after its first failure there."""
        seen = self._failed.get(self._hint(request))
        return seen is not None and self.clock() - seen <= window.seconds

    def _remember_failure(self, request) -> None:
        hint = self._hint(request)
        self._failed[hint] = self.clock()
        self._failed.move_to_end(hint)
        while len(self._failed) > FAILED_MEMORY:
            self._failed.popitem(last=False)

    # -- the stage ----------------------------------------------------------------------------

    async def before_permit(self, request, *, holder: bool = True) -> None:
        """Loop detection, then (a review rule, with a holder) the rule's windows without spending.
        Raises Throttled, or GatewayError 503 when a budgeted rule's counters cannot be read."""
        window = self.loop_window(request)
        if window is not None and self._failed_here(request, window):
            try:
                usage = await self.counters.peek(self._loop_key(request), window)
            except StoreUnavailable:
                metrics.BUDGET_STORE_FAILURES.labels("skipped").inc()
                usage = None
            if usage is not None and not usage.allowed:
                raise self._throttled("loop", request, loop_message(
                    window, request.decision.rule_name, request, usage.reset_at, self.clock()),
                    usage.reset_at, window.text)
        decision = request.decision
        if holder and decision is not None and decision.effect == REVIEW and decision.budget.spends:
            await self._counted(request, self._peek(request, decision.budget))

    async def spend(self, request, audit_id) -> None:
        """Spend the admitted request's budget: each window, and a slot held until it completes."""
        decision = request.decision
        if decision is None or decision.effect not in (ALLOW, REVIEW) or not decision.budget.spends:
            return
        await self._counted(request, self._spend(request, str(audit_id), decision.budget))

    async def _counted(self, request, awaitable):
        try:
            return await awaitable
        except StoreUnavailable:
            metrics.BUDGET_STORE_FAILURES.labels("refused").inc()
            raise GatewayError(503, STORE_DOWN.format(rule=json.dumps(request.decision.rule_name),
                                                      connection=request.connection)) from None

    async def _peek_windows(self, request, budget: Budget) -> None:
        for kind, window in budget.windows():
            usage = await self.counters.peek(self._key(request, request.decision.rule_name, kind), window)
            if not usage.allowed:
                raise self._window_throttled(kind, window, request, usage)

    async def _peek(self, request, budget: Budget) -> None:
        """The windows and the slots, spending nothing (before a reviewer is asked)."""
        await self._peek_windows(request, budget)
        if budget.concurrent is not None:
            rule = request.decision.rule_name
            usage = await self.counters.free(self._key(request, rule, "slots"), budget.concurrent)
            if not usage.allowed:
                raise self._slot_throttled(budget.concurrent, request, usage)

    def _slot_throttled(self, limit: int, request, usage: Usage) -> Throttled:
        message = slot_message(limit, request.decision.rule_name, request, usage.reset_at)
        return self._throttled("concurrent", request, message, usage.reset_at, f"{limit} at once", header=False)

    async def _spend(self, request, token: str, budget: Budget) -> None:
        rule = request.decision.rule_name
        windows = budget.windows()
        if len(windows) > 1 or (windows and budget.concurrent is not None):
            await self._peek_windows(request, budget)  # nothing spent when any of them is out
        slot = None
        if budget.concurrent is not None:
            slot = self._key(request, rule, "slots")
            usage = await self.counters.acquire(slot, budget.concurrent, token, self.slot_seconds)
            if not usage.allowed:
                raise self._slot_throttled(budget.concurrent, request, usage)
        try:
            for kind, window in windows:
                usage = await self.counters.hit(self._key(request, rule, kind), window)
                if not usage.allowed:
                    raise self._window_throttled(kind, window, request, usage)
        except BaseException:
            if slot is not None:
                await self._release(slot, token)
            raise
        if slot is not None:
            self._slots[token] = (slot, token, asyncio.ensure_future(self._renew(slot, token)))

    async def _renew(self, slot: str, token: str) -> None:
        """Keep a running session's slot from expiring (a third of its lifetime at a time)."""
        while True:
            await asyncio.sleep(self.slot_seconds / 3)
            try:
                await self.counters.renew(slot, token, self.slot_seconds)
            except StoreUnavailable:
                pass  # tried again next time; the slot expires only if every renewal fails

    async def _release(self, slot: str, token: str) -> None:
        try:
            await self.counters.release(slot, token)
        except StoreUnavailable:
            log.warning("a budget slot could not be released; it expires on its own")

    def _window_throttled(self, kind: str, window: Window, request, usage: Usage) -> Throttled:
        message = window_message(kind, window, request.decision.rule_name, request, usage.reset_at, self.clock())
        return self._throttled(kind, request, message, usage.reset_at, window.text)

    def _throttled(self, kind: str, request, message: str, reset_at: float, limit: str, *,
                   header: bool = True) -> Throttled:
        wait = max(1, math.ceil(reset_at - self.clock()))
        metrics.BUDGET_THROTTLES.labels(metrics.connection_label(request.connection), kind).inc()
        return Throttled(message, budget=kind, rule=request.decision.rule_name, retry_after=wait,
                         header=header and wait <= self.retry_after_max, limit=limit)

    # -- the hook -----------------------------------------------------------------------------

    async def refused(self, exchange) -> None:
        """The gateway refuses the request (``exchange.code`` set) and is about to answer: a refusal is
        counted for loop detection now, before the agent can send the request again (a cluster's
        4xx is counted when it completes)."""
        await self._count_failure(exchange)

    async def completed(self, exchange) -> None:
        """Release the request's slot; count a refused or failing answer for loop detection."""
        held = self._slots.pop(str(exchange.audit_id), None)
        if held is not None:
            slot, token, task = held
            task.cancel()
            await self._release(slot, token)
        if self._early.pop(str(exchange.audit_id), None) is None:
            await self._count_failure(exchange)

    async def _count_failure(self, exchange) -> None:
        request = exchange.request
        if request is None or not 400 <= exchange.code < 500 or exchange.code in NOT_LOOPS:
            return
        window = self.loop_window(request)
        if window is None:
            return
        self._remember_failure(request)
        if len(self._early) > FAILED_MEMORY:  # refusals whose completion never came: not kept for ever
            self._early.clear()
        self._early[str(exchange.audit_id)] = True
        try:
            await self.counters.hit(self._loop_key(request), window)
        except StoreUnavailable:
            metrics.BUDGET_STORE_FAILURES.labels("skipped").inc()
        except Exception:
            log.exception("loop count of %s failed", exchange.audit_id)
