"""Load on the resilience rig while faults come and go, and the checks each fault ends with.

:class:`Load` runs clients, watches and holds against both gateways on an event loop in a thread
of its own, so the caller injects faults meanwhile.  Every request carries a unique User-Agent
(``<prefix><n>``): it is the request's key in the audit trail and in kubesim's request log.  Every
outcome is kept: the status and whether a non-2xx answer was a Kubernetes ``Status`` with that
code, or the transport error when there was no answer.

The checks (:func:`answers`, :func:`audit_gaps`, :func:`recovery`) return what is wrong instead of
raising, so the tests assert on them and the soak counts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from tests.gateway_harness import AGENT_TOKEN
from tests.resilience_rig import REVIEWER_TOKEN, Rig

NS = "/k8s/kubesim/api/v1/namespaces/default"
HOLDS = "/k8s/kubesim/apis/apps/v1/namespaces/default/deployments"
CRASHED = "GatewayCrashed"  # audit.journal.CRASHED_REASON: closed from a dead gateway's journal
# What each kind of request is answered with when nothing is wrong (the cluster's 404 for names that
# do not exist: a delete whose create was refused, a hold: approved, then forwarded).
EXPECTED = {"list": {200}, "create": {201}, "get": {404}, "delete": {200, 404}, "anonymous": {401}, "hold": {404},
            "watch": {200}, "lookup": {404}}
MIX = ("list", "create", "get", "list", "delete", "anonymous")  # what each client sends, in turn


@dataclass
class Outcome:
    """One request: who sent it where, and what came back."""

    agent: str
    gateway: str
    kind: str
    started: float
    ended: float = 0.0
    status: int | None = None  # None: no answer
    error: str = ""  # the transport error when there was no answer, or what is wrong with the answer
    ending: str = ""  # watches: "error-event" (a Status then a clean end), "end", "cut", "stopped"
    last_event: dict | None = None  # watches: the last event read
    message: str = ""  # a non-2xx answer's Status message

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def status_problem(response: httpx.Response, body: bytes) -> str:
    """Why a non-2xx answer is not a clean Kubernetes Status with its code; "" when it is."""
    if response.status_code < 300:
        return ""
    try:
        status = json.loads(body)
    except ValueError:
        return f"{response.status_code} with a body that is not JSON: {body[:120]!r}"
    if not isinstance(status, dict) or status.get("kind") != "Status" or status.get("code") != response.status_code:
        return f"{response.status_code} with a body that is not its Status: {body[:120]!r}"
    return ""


@dataclass
class Load:
    """``clients`` request loops, ``watches`` watches and ``holds`` held deletes, spread over both gateways.

    Held deletes go to the first gateway and are approved through the second (the hold is released
    across processes); they end as the cluster's 404, the deployment never existed.
    """

    rig: Rig
    prefix: str
    clients: int = 8
    watches: int = 2
    holds: int = 1
    timeout: float = 15.0  # no answer within this is a hang
    outcomes: list[Outcome] = field(default_factory=list)
    approvals: Counter = field(default_factory=Counter)

    def __post_init__(self):
        self._numbers = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"load-{self.prefix}", daemon=True)
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._watching = 0

    # -- control, from the caller's thread ----------------------------------------------------

    def start(self, settle: float = 0.0) -> "Load":
        self._thread.start()
        self._ready.wait(10)
        deadline = time.monotonic() + 30
        while self._watching < self.watches:  # every watch open before faults begin
            assert time.monotonic() < deadline and self._thread.is_alive(), "the watches did not open"
            time.sleep(0.05)
        time.sleep(settle)
        return self

    def stop(self) -> list[Outcome]:
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(self.timeout + 30)
        assert not self._thread.is_alive(), "the load did not stop"
        return self.outcomes

    def probe(self, gateway, kind: str) -> bool:
        """One request of ``kind`` ("list", "create", "lookup") through ``gateway``, kept with the
        others; answered as it should be?"""
        outcome = asyncio.run_coroutine_threadsafe(self._request(gateway, *self._plan(kind)), self._loop).result(
            self.timeout + 5)
        return outcome.status in EXPECTED[kind] and not outcome.error

    # -- the loop ----------------------------------------------------------------------------

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self):
        self._stopping = asyncio.Event()
        gateways = self.rig.gateways
        limits = httpx.Limits(max_connections=self.clients + self.watches + self.holds + 4)
        self._http = {g.name: httpx.AsyncClient(base_url=g.url, verify=self.rig.trust, timeout=self.timeout,
                                                limits=limits) for g in gateways}
        self._ready.set()
        approver = asyncio.ensure_future(self._approver(gateways[1]))
        try:
            tasks = [self._client(gateways[i % 2]) for i in range(self.clients)]
            tasks += [self._watch(gateways[i % 2]) for i in range(self.watches)]
            tasks += [self._hold(gateways[0]) for _ in range(self.holds)]
            await asyncio.gather(*tasks)  # the holds waiting at the stop are approved before they end
        finally:
            approver.cancel()
            await asyncio.gather(approver, return_exceptions=True)
            for client in self._http.values():
                await client.aclose()

    def _plan(self, kind: str, created: list[str] | None = None) -> tuple[int, str, str, str, dict | None, dict]:
        """number, kind, method, path, JSON body, extra headers: reads and writes the gateway forwards
        (a delete removes what ``created`` last holds, if anything), and a request without a token the
        gateway answers itself."""
        n = next(self._numbers)
        name = f"resil-{n}-{self.prefix.strip('/').replace('/', '-')}"
        if kind == "list":
            return n, kind, "GET", f"{NS}/configmaps?limit=5", None, {}
        if kind == "create":
            if created is not None:
                created.append(name)
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"n": str(n)}}
            return n, kind, "POST", f"{NS}/configmaps", body, {}
        if kind == "get":
            return n, kind, "GET", f"{NS}/configmaps/{name}-missing", None, {}
        if kind == "delete":
            return n, kind, "DELETE", f"{NS}/configmaps/{created.pop() if created else name}", None, {}
        if kind == "lookup":  # a connection name never seen: looked up in the database (runtime.db) each time
            return n, kind, "GET", f"/k8s/{name}/api/v1/pods", None, {}
        return n, kind, "GET", f"{NS}/pods", None, {"Authorization": ""}

    async def _request(self, gateway, n: int, kind: str, method: str, path: str, body, headers: dict,
                       timeout: float | None = None) -> Outcome:
        agent = f"{self.prefix}{n}"
        outcome = Outcome(agent, gateway.name, kind, time.monotonic())
        self.outcomes.append(outcome)
        sent = {"User-Agent": agent, "Authorization": f"Bearer {AGENT_TOKEN}", **headers}
        sent = {k: v for k, v in sent.items() if v}
        try:
            response = await self._http[gateway.name].request(
                method, path, json=body, headers=sent, timeout=timeout or self.timeout)
            outcome.status = response.status_code
            outcome.error = status_problem(response, response.content)
            if response.status_code >= 300 and not outcome.error:
                outcome.message = response.json()["message"][:200]
        except httpx.HTTPError as exc:
            outcome.error = type(exc).__name__
        outcome.ended = time.monotonic()
        return outcome

    async def _client(self, gateway):
        created: list[str] = []
        for kind in itertools.cycle(MIX):
            if self._stopping.is_set():
                return
            outcome = await self._request(gateway, *self._plan(kind, created))
            if outcome.status is None:
                await asyncio.sleep(0.05)  # the gateway is down: as a client would, retry a little later

    async def _watch(self, gateway):
        first = True
        while not self._stopping.is_set():
            agent = f"{self.prefix}{next(self._numbers)}"
            outcome = Outcome(agent, gateway.name, "watch", time.monotonic())
            self.outcomes.append(outcome)
            headers = {"User-Agent": agent, "Authorization": f"Bearer {AGENT_TOKEN}"}
            try:
                async with self._http[gateway.name].stream(
                        "GET", f"{NS}/configmaps?watch=1&allowWatchBookmarks=false", headers=headers,
                        timeout=httpx.Timeout(self.timeout, read=None)) as response:
                    outcome.status = response.status_code
                    if response.status_code != 200:
                        body = await response.aread()
                        outcome.error = status_problem(response, body)
                        if not outcome.error:
                            outcome.message = json.loads(body)["message"][:200]
                    else:
                        if first:
                            self._watching += 1
                            first = False
                        lines = response.aiter_lines()
                        while True:
                            line = await self._next_or_stop(lines)
                            if line is None:
                                outcome.ending = "stopped"
                                break
                            if line is StopAsyncIteration:
                                ended_with_error = (outcome.last_event or {}).get("type") == "ERROR"
                                outcome.ending = "error-event" if ended_with_error else "end"
                                break
                            if line:
                                outcome.last_event = json.loads(line)
            except httpx.HTTPError as exc:
                if outcome.status is None:
                    outcome.error = type(exc).__name__
                else:
                    outcome.ending = "cut"
                    outcome.error = f"the watch was cut ({type(exc).__name__})"
            outcome.ended = time.monotonic()
            if outcome.status != 200 or outcome.ending != "stopped":
                await asyncio.sleep(0.1)

    async def _next_or_stop(self, lines):
        """The next line of a watch, StopAsyncIteration at its end, None once the load is stopping."""
        step = asyncio.ensure_future(anext(lines, StopAsyncIteration))
        stop = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if step.done():
            return step.result()
        step.cancel()
        return None

    async def _hold(self, gateway):
        while not self._stopping.is_set():
            n = next(self._numbers)
            outcome = await self._request(gateway, n, "hold", "DELETE", f"{HOLDS}/resil-hold-{n}", None, {},
                                          timeout=self.timeout * 3)
            if outcome.status is None:
                await asyncio.sleep(0.05)

    async def _approver(self, gateway):
        """A reviewer approving every pending review through the other gateway."""
        api = httpx.AsyncClient(base_url=f"{gateway.url}/approvals/api", verify=self.rig.trust, timeout=self.timeout,
                                headers={"Authorization": f"Token {REVIEWER_TOKEN}"})
        async with api:
            while True:
                try:
                    listed = await api.get("/reviews/")
                    self.approvals[f"list {listed.status_code}"] += 1
                    pending = listed.json() if listed.status_code == 200 else []
                    for review in pending:
                        approved = await api.post(f"/reviews/{review['id']}/approve/", json={"reason": "soak"})
                        self.approvals[f"approve {approved.status_code}"] += 1
                except httpx.HTTPError as exc:
                    self.approvals[type(exc).__name__] += 1
                await asyncio.sleep(0.2)


# -- checks ---------------------------------------------------------------------------------------

def answers(outcomes: list[Outcome], allowed: set[int] = frozenset(), *, window: tuple[float, float] = (0, 0),
            may_fail: set[str] = frozenset()) -> list[str]:
    """What is wrong with the answers: a 500; an answer other than the expected one, unless the request
    was under way during ``window`` (the fault and its recovery) and the answer is in ``allowed``; a
    non-2xx answer that is not a Status with its code; a watch cut instead of ended; no answer (a
    hang or a dropped connection) unless its gateway is in ``may_fail`` (killed or stopped); a gateway
    in ``may_fail`` may also refuse new work during ``window`` with a 503 Status (it is shutting down)."""
    problems = []
    for o in outcomes:
        where = f"{o.agent} ({o.kind} via {o.gateway})"
        if o.status is None:
            if o.gateway not in may_fail:
                problems.append(f"{where}: no answer ({o.error}) after {o.seconds:.1f}s")
            continue
        if o.error and not (o.ending == "cut" and o.gateway in may_fail):
            problems.append(f"{where}: {o.error}")
        during = o.started <= window[1] and o.ended >= window[0]
        stopping = during and o.gateway in may_fail and o.status == 503 and not o.error
        if o.status == 500 or (o.status not in EXPECTED[o.kind] and not (during and o.status in allowed)
                               and not stopping):
            problems.append(f"{where}: answered {o.status} ({o.started - window[0]:+.2f}s to {o.ended - window[0]:+.2f}s "
                            f"from the fault): {o.message}")
    return problems


def by_status(outcomes: list[Outcome]) -> dict[str, int]:
    counts = Counter("no answer" if o.status is None else str(o.status) for o in outcomes)
    return dict(sorted(counts.items()))


def slowest(outcomes: list[Outcome]) -> dict[str, float]:
    """The longest wait for an answer, per kind of request (watches excluded: they last)."""
    longest: dict[str, float] = {}
    for o in outcomes:
        if o.kind != "watch":
            longest[o.kind] = round(max(longest.get(o.kind, 0.0), o.seconds), 2)
    return longest


def audit_gaps(rig: Rig, outcomes: list[Outcome], prefix: str, *, within: float = 30.0) -> dict:
    """Wait (at most ``within`` s) until every answered request has its completion event, then what is
    still wrong: answered requests without one or with another status, requests with two, and
    requests kubesim received that have no audit row."""
    answered = {o.agent: o.status for o in outcomes if o.status is not None}
    deadline = time.monotonic() + within
    while True:
        rows = rig.audit_rows(prefix)
        completions = Counter(agent for agent, stage, *_ in rows if stage == "ResponseComplete")
        missing = sorted(agent for agent in answered if not completions[agent])
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    codes = {agent: (code, reason) for agent, stage, code, reason in rows if stage == "ResponseComplete"}
    wrong = sorted(f"{agent}: answered {status}, recorded {codes[agent]}" for agent, status in answered.items()
                   if agent in codes and codes[agent][0] != status and codes[agent][1] != CRASHED)
    forwarded = rig.forwarded(prefix)
    return {
        "answered": len(answered),
        "missing": missing,
        "duplicated": sorted(agent for agent, count in completions.items() if count > 1),
        "wrong": wrong,
        "forwarded": len(forwarded),
        "unaudited": sorted(forwarded - set(completions)),
        "crashed": sorted(agent for agent, (_, reason) in codes.items() if reason == CRASHED),
        "received_only": sorted({agent for agent, stage, *_ in rows if stage == "RequestReceived"} - set(completions)),
    }


def settle(rig: Rig, prefix: str, *, within: float = 30.0) -> list[tuple]:
    """The audit rows of ``prefix`` once every completion event queued so far is written: a marker
    request through each gateway is recorded after everything before it (one writer queue per
    process), then the rows stop changing."""
    markers = {f"{prefix}settle-{g.name}-{time.monotonic_ns()}" for g in rig.gateways}
    for gateway, marker in zip(rig.gateways, sorted(markers)):
        httpx.get(f"{gateway.url}{NS}/configmaps?limit=1", verify=rig.trust, timeout=10,
                  headers={"User-Agent": marker, "Authorization": f"Bearer {AGENT_TOKEN}"})
    deadline = time.monotonic() + within
    previous = None
    while True:
        rows = rig.audit_rows(prefix)
        if markers <= {agent for agent, *_ in rows} and rows == previous:
            return rows
        assert time.monotonic() < deadline, "the audit events did not settle"
        previous = rows
        time.sleep(0.5)


def recovery(probe, *, within: float, pause: float = 0.1) -> float:
    """Seconds until ``probe()`` (a request needing what came back) succeeds; raises past ``within``."""
    started = time.monotonic()
    while not probe():
        assert time.monotonic() - started < within, f"not recovered {within}s after the fault ended"
        time.sleep(pause)
    return time.monotonic() - started


# -- faults ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fault:
    """A dependency made unavailable: ``inject(rig)`` is a context manager (the fault lasts while it is
    entered); ``allowed`` the answers requests may get meanwhile; ``probes`` the kinds of request
    that need the dependency (a write, a database lookup, a read from the cluster), whose first
    success on every gateway after the fault ends measures the recovery."""

    name: str
    inject: Callable[[Rig], contextlib.AbstractContextManager]
    allowed: frozenset[int]
    probes: tuple[str, ...]


@contextlib.contextmanager
def _proxy(proxy, how: str):
    getattr(proxy, how)()
    try:
        yield
    finally:
        proxy.resume()


DATABASE_DOWN = frozenset({503})  # "the gateway's database is unavailable" (writes; reads past the cache bound)
DATABASE = ("create", "lookup")
FAULTS = {fault.name: fault for fault in (
    Fault("database refused", lambda rig: _proxy(rig.db_proxy, "refuse"), DATABASE_DOWN, DATABASE),
    Fault("database partitioned", lambda rig: _proxy(rig.db_proxy, "partition"), DATABASE_DOWN, DATABASE),
    Fault("database frozen", lambda rig: rig.database_frozen(), DATABASE_DOWN, DATABASE),
    Fault("redis refused", lambda rig: _proxy(rig.redis_proxy, "refuse"), frozenset(), DATABASE),
    Fault("redis partitioned", lambda rig: _proxy(rig.redis_proxy, "partition"), frozenset(), DATABASE),
    Fault("cluster refused", lambda rig: _proxy(rig.cluster_proxy, "refuse"), frozenset({502}), ("list",)),
    Fault("cluster partitioned", lambda rig: _proxy(rig.cluster_proxy, "partition"), frozenset({504}), ("list",)),
    Fault("cluster frozen", lambda rig: rig.cluster_frozen(), frozenset({504}), ("list",)),
)}


def inject(load: Load, fault: Fault, seconds: float, *, recover_within: float) -> dict:
    """``fault`` for ``seconds`` while ``load`` runs, then the seconds until every gateway answers a
    request needing the dependency again (no restart); the window answers may be ``fault.allowed``,
    ``in_place`` the moments the fault was fully in place, from after it was made to before it was undone."""
    began = time.monotonic()
    with fault.inject(load.rig):
        in_place = time.monotonic()
        time.sleep(seconds)
        undoing = time.monotonic()
    healed = time.monotonic()
    recovered = recovery(lambda: all([load.probe(g, kind) for g in load.rig.gateways for kind in fault.probes]),
                         within=recover_within)
    return {"fault": fault.name, "seconds": round(healed - began, 2), "recovery_s": round(recovered, 2),
            "window": (began, healed + recovered + 1.0), "in_place": (in_place, undoing)}


def cut_off(outcomes: list[Outcome], in_place: tuple[float, float]) -> list[Outcome]:
    """The requests for the cluster (watches aside: they may be quiet) that began and ended while the
    cluster could not answer anything: whatever they got, the gateway answered itself."""
    return [o for o in outcomes if o.kind not in ("anonymous", "watch") and in_place[0] <= o.started
            and o.ended <= in_place[1]]


def kill_and_restart(load: Load, victim, *, recover_within: float) -> dict:
    """SIGKILL ``victim`` while ``load`` runs, start it again (it replays the dead process's journal
    before it listens), then the seconds until it serves a write."""
    killed = time.monotonic()
    victim.kill()
    time.sleep(0.5)
    victim.start()
    restarted = time.monotonic()
    recovered = recovery(lambda: load.probe(victim, "create"), within=recover_within)
    return {"fault": f"gateway {victim.name} SIGKILLed", "restart_s": round(restarted - killed, 2),
            "recovery_s": round(recovered, 2), "window": (killed, time.monotonic())}


def terminate_and_restart(load: Load, victim, *, drain_within: float, recover_within: float) -> dict:
    """SIGTERM ``victim`` while ``load`` runs; its exit status and the seconds it took to drain; then
    start it again and the seconds until it serves a write."""
    stopped = time.monotonic()
    victim.terminate()
    code = victim.wait(drain_within)
    drained = time.monotonic() - stopped
    victim.start()
    recovered = recovery(lambda: load.probe(victim, "create"), within=recover_within)
    return {"fault": f"gateway {victim.name} SIGTERMed", "exit_code": code, "drain_s": round(drained, 2),
            "recovery_s": round(recovered, 2), "window": (stopped, time.monotonic())}


def watches_open_at(outcomes: list[Outcome], gateway: str, moment: float) -> list[Outcome]:
    """The watches through ``gateway`` that were open at ``moment``."""
    return [o for o in outcomes if o.kind == "watch" and o.gateway == gateway and o.status == 200
            and o.started < moment <= (o.ended or moment)]
