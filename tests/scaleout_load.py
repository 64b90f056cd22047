"""Load and scenarios through the scale-out rig's balancer (tests/scaleout_rig.py), and their checks.

:class:`Load` runs request loops on an event loop in a thread of its own, every request on a new
connection (so HAProxy's round-robin spreads them over the replicas), while the caller runs a
scenario:

* :func:`hold_open`: a delete held open on replica A is approved through replica B; the held
  request is forwarded once, its identical retry is not;
* :func:`hold_retry`: a delete answered at once (``review_hold: retry``) on replica A, approved
  through B, retried through C: forwarded once, and not again;
* :func:`lease_cut`: watches and exec sessions under a lease, opened through the balancer until
  every replica holds some, and the lease revoked through one replica: every stream ends with a
  ``Status``.

Every request to the data path carries a unique User-Agent (``<prefix><n>``), its key in the audit
trail and in kubesim's request log; its :class:`~tests.resilience_load.Outcome` is kept, so the
checks (:func:`problems`, :func:`audit_check`) count requests sent against audit completions.
Scenarios return what they saw and a list of what was wrong.  Long because the load, the scenarios
and the checks all work on one ledger and its stream helpers; apart they would import each other.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import ssl
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field

import httpx

from tests import wsraw
from tests.gateway_harness import AGENT_TOKEN
from tests.resilience_load import EXPECTED, Outcome, status_problem
from tests.scaleout_rig import LEASED, ONCALL_TOKEN, ScaleOut, client_port

NS = "/k8s/kubesim/api/v1/namespaces/default"
SHOP = "/api/v1/namespaces/shop"
PROBE = "/k8s/kubesim/api/v1/namespaces/shop/configmaps?limit=1"
MIX = ("list", "create", "get", "list", "delete", "anonymous")
EXEC = "/api/v1/namespaces/payments/pods/debug-shell/exec?command=sleep&command=300&stdout=true&stderr=true"
EXEC_PROTOCOL = "v5.channel.k8s.io"
# What the scenarios' requests are answered with when all is well (the load's: resilience_load.EXPECTED).
SCENARIO_EXPECTED = {"probe": {200}, "held": {200}, "held-again": {403}, "pending": {403}, "released": {200},
                     "watch": {200}, "exec": {101}, "refused": {403}}
WAIT = 30.0  # seconds: any one step of a scenario (a review appearing, a stream ending)


@dataclass
class Ledger:
    """Every data-path request sent, by User-Agent."""

    prefix: str
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self):
        self._numbers = itertools.count()

    def agent(self) -> str:
        return f"{self.prefix}{next(self._numbers)}"

    def record(self, agent: str, kind: str, status: int | None, started: float, *, error: str = "",
               message: str = "") -> Outcome:
        outcome = Outcome(agent, "balancer", kind, started, time.monotonic(), status, error, message=message)
        self.outcomes.append(outcome)
        return outcome

    def request(self, client: httpx.Client, kind: str, method: str, path: str, *, agent: str | None = None,
                **kwargs) -> httpx.Response:
        """One request with a fresh User-Agent (or ``agent``: a retry identical to an earlier request
        carries its User-Agent, which is part of what a reviewer approves), kept in the ledger."""
        agent = agent or self.agent()
        started = time.monotonic()
        try:
            response = client.request(method, path, headers={"User-Agent": agent}, **kwargs)
        except httpx.HTTPError as exc:
            self.record(agent, kind, None, started, error=type(exc).__name__)
            raise
        problem = status_problem(response, response.content)
        message = response.json().get("message", "") if response.status_code >= 300 and not problem else ""
        self.record(agent, kind, response.status_code, started, error=problem, message=message)
        return response


class Load:
    """``clients`` loops of list, create, get, list, delete, anonymous through the balancer, each
    request on a connection of its own."""

    def __init__(self, rig: ScaleOut, ledger: Ledger, clients: int = 4, timeout: float = 15.0):
        self.rig = rig
        self.ledger = ledger
        self.clients = clients
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="scaleout-load", daemon=True)
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()

    def start(self) -> "Load":
        self._thread.start()
        assert self._ready.wait(10), "the load did not start"
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(self.timeout + 30)
        assert not self._thread.is_alive(), "the load did not stop"

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self):
        self._stopping = asyncio.Event()
        self._ready.set()
        await asyncio.gather(*(self._client() for _ in range(self.clients)))

    async def _client(self):
        limits = httpx.Limits(max_keepalive_connections=0)  # a new connection, so a new replica, each time
        created: list[str] = []
        async with httpx.AsyncClient(base_url=self.rig.url, verify=self.rig.trust, timeout=self.timeout,
                                     limits=limits) as http:
            for kind in itertools.cycle(MIX):
                if self._stopping.is_set():
                    return
                await self._request(http, kind, created)

    async def _request(self, http: httpx.AsyncClient, kind: str, created: list[str]) -> None:
        agent = self.ledger.agent()
        name = agent.strip("/").replace("/", "-")  # unique across ledgers: a DNS label from the User-Agent
        headers = {"User-Agent": agent, "Authorization": f"Bearer {AGENT_TOKEN}"}
        body = None
        if kind == "list":
            method, path = "GET", f"{NS}/configmaps?limit=5"
        elif kind == "create":
            method, path = "POST", f"{NS}/configmaps"
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"n": name}}
            created.append(name)
        elif kind == "get":
            method, path = "GET", f"{NS}/configmaps/{name}-missing"
        elif kind == "delete":
            method, path = "DELETE", f"{NS}/configmaps/{created.pop() if created else name}"
        else:
            method, path = "GET", f"{NS}/pods"
            del headers["Authorization"]
        started = time.monotonic()
        try:
            response = await http.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            self.ledger.record(agent, kind, None, started, error=type(exc).__name__)
            await asyncio.sleep(0.05)
            return
        problem = status_problem(response, response.content)
        message = response.json()["message"][:200] if response.status_code >= 300 and not problem else ""
        self.ledger.record(agent, kind, response.status_code, started, error=problem, message=message)


def problems(outcomes: list[Outcome]) -> list[str]:
    """What is wrong with the answers: no answer, a 5xx, an answer other than the expected one, a
    non-2xx answer that is not a Kubernetes Status of its code."""
    expected = {**EXPECTED, **SCENARIO_EXPECTED}
    found = []
    for o in outcomes:
        where = f"{o.agent} ({o.kind})"
        if o.status is None:
            found.append(f"{where}: no answer ({o.error})")
        elif o.error:
            found.append(f"{where}: {o.error}")
        elif o.status not in expected[o.kind]:
            found.append(f"{where}: answered {o.status}: {o.message}")
    return found


def audit_check(rig: ScaleOut, outcomes: list[Outcome], prefix: str, *, within: float = 30.0) -> dict:
    """Requests sent against the audit trail's completion events, by User-Agent (an identical retry
    carries its request's, so a User-Agent may have several requests): once every answered request
    has its completion (waiting at most ``within`` s), the counts and what is wrong: ``missing`` (fewer
    completions than answers), ``extra`` (more), ``wrong`` (other statuses than the answers),
    ``unaudited`` (kubesim received it, the trail has no completion), ``received_only``
    (a RequestReceived without its completion)."""
    sent = Counter(o.agent for o in outcomes)
    answered: dict[str, Counter] = {}
    for o in outcomes:
        if o.status is not None:
            answered.setdefault(o.agent, Counter())[o.status] += 1
    expected = sum(sum(c.values()) for c in answered.values())
    deadline = time.monotonic() + within
    while True:
        rows = rig.audit_rows(prefix)
        completions = [(agent, code) for agent, stage, code, _ in rows if stage == "ResponseComplete"]
        if len(completions) >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    recorded: dict[str, Counter] = {}
    for agent, code in completions:
        recorded.setdefault(agent, Counter())[code] += 1
    count = lambda counter: sum(counter.values())  # noqa: E731
    return {
        "sent": sum(sent.values()),
        "answered": expected,
        "completions": len(completions),
        "missing": sorted(a for a, c in answered.items() if count(recorded.get(a, Counter())) < count(c)),
        "extra": sorted(a for a, c in recorded.items() if count(c) > count(answered.get(a, Counter()))),
        "wrong": sorted(f"{a}: answered {dict(c)}, recorded {dict(recorded.get(a, {}))}" for a, c in answered.items()
                        if a in recorded and count(recorded[a]) == count(c) and recorded[a] != c),
        "unaudited": sorted(rig.forwarded(prefix) - set(recorded)),
        "received_only": sorted({a for a, stage, *_ in rows if stage == "RequestReceived"} - set(recorded)),
    }


AUDIT_PROBLEMS = ("missing", "extra", "wrong", "unaudited", "received_only")


def run_with_load(rig: ScaleOut, prefix: str, scenario) -> tuple[dict, Ledger, dict]:
    """``scenario(ledger)`` while the load runs; the scenario's result, the ledger and each replica's share
    (connections through HAProxy, or requests a worker counted)."""
    before = rig.balancer.connections()
    ledger = Ledger(prefix)
    load = Load(rig, ledger, clients=3).start()
    try:
        result = scenario(ledger)
    finally:
        load.stop()
    after = rig.balancer.connections()
    share = {name: after[name] - before.get(name, 0) for name in after}
    print(result, share, len(ledger.outcomes))
    return result, ledger, share


def assert_served_and_audited(rig: ScaleOut, prefix: str, ledger: Ledger, share: dict) -> None:
    """Every answer the expected one, the load on every replica, one completion per request sent, and
    ``verify_audit`` passing."""
    wrong = problems(ledger.outcomes)
    assert not wrong, "\n".join(wrong[:20])
    assert len(share) == len(rig.balancer.servers) and all(count > 0 for count in share.values()), share
    audit = audit_check(rig, ledger.outcomes, prefix)
    for key in AUDIT_PROBLEMS:
        assert not audit[key], f"{len(audit[key])} {key}: {audit[key][:10]}"
    assert audit["sent"] == audit["answered"] == audit["completions"] == len(ledger.outcomes), audit
    verify = rig.verify_audit()
    assert verify.returncode == 0, verify.stdout + verify.stderr


def latencies(outcomes: list[Outcome], kinds=tuple(EXPECTED)) -> list[float]:
    return sorted(o.seconds for o in outcomes if o.kind in kinds and o.status is not None)


# -- scenarios ----------------------------------------------------------------------------------------

def _admin_create(rig: ScaleOut, path: str, body: dict) -> None:
    trust = ssl.create_default_context(cafile=str(rig.kubesim.ca_file))
    with httpx.Client(base_url=rig.kubesim.url, verify=trust, timeout=10,
                      headers={"Authorization": f"Bearer {rig.kubesim.admin_token}"}) as admin:
        response = admin.post(path, json=body)
        assert response.status_code == 201, response.text


def _deployment(name: str) -> dict:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "main", "image": "busybox"}]}}}}


def _pin_agent(rig: ScaleOut, ledger: Ledger, *, avoid=(), timeout: float = 60.0) -> tuple[httpx.Client, str]:
    return rig.pinned(lambda: rig.agent(timeout=timeout), lambda c: ledger.request(c, "probe", "GET", PROBE),
                      avoid=avoid)


def _pin_api(rig: ScaleOut, *, avoid=(), token=None) -> tuple[httpx.Client, str]:
    make = (lambda: rig.api(token)) if token else rig.api
    return rig.pinned(make, lambda c: c.get("/reviews/"), avoid=avoid)


def _wait_review(api: httpx.Client, name: str, *, other_than=()) -> dict | None:
    """The pending review of the object ``name`` (not one of ``other_than``); None after WAIT."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for review in api.get("/reviews/").json():
            if review["name"] == name and review["id"] not in other_than:
                return review
        time.sleep(0.1)
    return None


def _decide(rig: ScaleOut, review_id: int, *, approve: bool, avoid) -> tuple[str, int]:
    """Approve or deny through a replica not in ``avoid``: (replica, status)."""
    api, replica = _pin_api(rig, avoid=avoid)
    with closing(api):
        action = "approve" if approve else "deny"
        response = api.post(f"/reviews/{review_id}/{action}/", json={"reason": f"scale-out: {action}d via {replica}"})
        assert rig.balancer.replica_of(client_port(response)) == replica  # the same keep-alive connection
        return replica, response.status_code


def hold_open(rig: ScaleOut, ledger: Ledger, n: int) -> dict:
    """A deployment delete held open on one replica, approved through another: forwarded exactly once;
    the identical retry is not let through again."""
    name = f"scale-hold-{n}"
    _admin_create(rig, "/apis/apps/v1/namespaces/shop/deployments", _deployment(name))
    path = f"/apis/apps/v1/namespaces/shop/deployments/{name}"
    found: list[str] = []
    result: dict = {"scenario": "hold open", "object": name, "problems": found}
    agent, held_on = _pin_agent(rig, ledger)
    result["held_on"] = held_on
    reviews = rig.api()
    user_agent = ledger.agent()
    with closing(agent), closing(reviews), ThreadPoolExecutor(2) as pool:
        held = pool.submit(ledger.request, agent, "held", "DELETE", f"/k8s/kubesim{path}", agent=user_agent)
        review = _wait_review(reviews, name)
        if review is None:
            found.append(f"no review of {name} appeared (the delete answered {held.done() and held.result()})")
            return result
        if held.done():
            found.append(f"the held delete answered before its approval: {held.result().status_code}")
        result["approved_on"], status = _decide(rig, review["id"], approve=True, avoid={held_on})
        if status != 200:
            found.append(f"approval answered {status}")
        released = held.result(WAIT)
        result["released"] = released.status_code
        if released.status_code != 200:
            found.append(f"the released delete answered {released.status_code}: {released.text[:200]}")
        events = [e["kind"] for e in reviews.get(f"/reviews/{review['id']}/").json()["events"]]
        if events != ["requested", "approved", "used"]:
            found.append(f"review {review['id']} events {events}")
        # The same request again, through whichever replica: not let through on the used approval.
        again_client = rig.agent(timeout=60)
        again = pool.submit(ledger.request, again_client, "held-again", "DELETE", f"/k8s/kubesim{path}",
                            agent=user_agent)
        deadline = time.monotonic() + WAIT
        while not again.done() and time.monotonic() < deadline:
            fresh = [r for r in reviews.get("/reviews/").json() if r["name"] == name and r["id"] != review["id"]]
            if fresh:  # held for a new review: a reviewer says no
                _decide(rig, fresh[0]["id"], approve=False, avoid=())
                break
            time.sleep(0.1)
        answer = again.result(WAIT)
        again_client.close()
        result["retried"] = answer.status_code
        if answer.status_code != 403:
            found.append(f"the retry after the approval was used answered {answer.status_code}")
    result["forwarded"] = rig.received("DELETE", path)
    if result["forwarded"] != 1:
        found.append(f"kubesim received the delete {result['forwarded']} times")
    return result


def hold_retry(rig: ScaleOut, ledger: Ledger, n: int) -> dict:
    """A delete answered at once (review pending) on replica A, approved through B, retried through C:
    forwarded exactly once, and the next identical retry is not."""
    name = f"held-{n}"
    _admin_create(rig, "/api/v1/namespaces/shop/configmaps", {"metadata": {"name": name}, "data": {"n": str(n)}})
    path = f"{SHOP}/configmaps/{name}"
    found: list[str] = []
    result: dict = {"scenario": "hold retry", "object": name, "problems": found}
    agent, asked_on = _pin_agent(rig, ledger)
    user_agent = ledger.agent()  # the retries are identical requests: the same User-Agent
    with closing(agent):
        pending = ledger.request(agent, "pending", "DELETE", f"/k8s/kubesim{path}", agent=user_agent)
    result["asked_on"] = asked_on
    match = re.search(r"review (\d+) is waiting", pending.text)
    if pending.status_code != 403 or match is None:
        found.append(f"the first delete answered {pending.status_code}: {pending.text[:200]}")
        return result
    result["approved_on"], status = _decide(rig, int(match.group(1)), approve=True, avoid={asked_on})
    if status != 200:
        found.append(f"approval answered {status}")
    agent, result["retried_on"] = _pin_agent(rig, ledger, avoid={asked_on, result["approved_on"]})
    with closing(agent):
        released = ledger.request(agent, "released", "DELETE", f"/k8s/kubesim{path}", agent=user_agent)
        result["released"] = released.status_code
        if released.status_code != 200:
            found.append(f"the retry after the approval answered {released.status_code}: {released.text[:200]}")
    with rig.agent() as agent:
        again = ledger.request(agent, "pending", "DELETE", f"/k8s/kubesim{path}", agent=user_agent)
        result["retried_again"] = again.status_code
        if again.status_code != 403:
            found.append(f"a second retry answered {again.status_code}")
    result["forwarded"] = rig.received("DELETE", path)
    if result["forwarded"] != 1:
        found.append(f"kubesim received the delete {result['forwarded']} times")
    return result


class _Watch:
    def __init__(self, rig: ScaleOut, ledger: Ledger):
        self.agent = ledger.agent()
        self.ledger = ledger
        self.started = time.monotonic()
        self.client = rig.agent(timeout=httpx.Timeout(15.0, read=10.0))
        request = self.client.build_request("GET", f"/k8s/{LEASED}{SHOP}/configmaps?watch=1",
                                            headers={"User-Agent": self.agent})
        self.response = self.client.send(request, stream=True)
        self.port = client_port(self.response)
        self.status = self.response.status_code

    def end(self, deadline: float) -> str:
        """Read to the end: "" when the watch ended with an ERROR event carrying a Status, else why not."""
        last = None
        try:
            for line in self.response.iter_lines():
                if line:
                    last = json.loads(line)
                if time.monotonic() > deadline:
                    return "the watch did not end"
        except httpx.HTTPError as exc:
            return f"the watch was cut ({type(exc).__name__})"
        finally:
            self.response.close()
            self.client.close()
            self.ledger.record(self.agent, "watch", self.status, self.started)
        if not last or last.get("type") != "ERROR" or last["object"].get("kind") != "Status":
            return f"the watch ended without a Status: {last}"
        return "" if "revoked" in last["object"].get("message", "") else f"the watch's Status: {last['object']}"


class _Exec:
    def __init__(self, rig: ScaleOut, ledger: Ledger):
        self.agent = ledger.agent()
        self.ledger = ledger
        self.started = time.monotonic()
        self.ws = wsraw.connect("127.0.0.1", rig.balancer.port, rig.tls.ca_file, f"/k8s/{LEASED}{EXEC}",
                                token=AGENT_TOKEN, subprotocols=[EXEC_PROTOCOL],
                                extra_headers=[(b"user-agent", self.agent.encode())])
        self.status = 101 if isinstance(self.ws, wsraw.RawWebSocket) else self.ws.status
        self.port = self.ws.sock.getsockname()[1] if self.status == 101 else 0

    def end(self, deadline: float) -> str:
        """Read to the close: "" when a Status came on the error channel (3) first, else why not."""
        try:
            session = self.ws.session
            while session.close_code is None and time.monotonic() < deadline:
                session = self.ws.receive(until=lambda _: time.monotonic() > deadline,
                                          timeout=max(0.1, min(5.0, deadline - time.monotonic())))
        finally:
            self.ws.close()
            self.ledger.record(self.agent, "exec", self.status, self.started)
        statuses = [json.loads(m[1:]) for m in session.messages if isinstance(m, bytes) and m[:1] == b"\x03"]
        if session.close_code is None:
            return "the exec session did not end"
        if not statuses:
            return f"the exec session closed ({session.close_code}) without a Status"
        return "" if "revoked" in statuses[-1].get("message", "") else f"the exec session's Status: {statuses[-1]}"


def lease_cut(rig: ScaleOut, ledger: Ledger, per_replica: int = 1) -> dict:
    """Watches and exec sessions under one lease, ``per_replica`` of each on every replica at least,
    all opened through the balancer; the lease revoked through one replica ends every one of them
    with a Status, and the agent's next request is refused."""
    found: list[str] = []
    result: dict = {"scenario": "lease revoked", "problems": found}
    with rig.api(ONCALL_TOKEN) as oncall, rig.api() as reviewer:
        asked = oncall.post("/leases/", json={"connection": LEASED, "subject": "agent-1", "duration": "1h",
                                              "reason": "scale-out: INC-1"})
        assert asked.status_code == 201, asked.text
        lease = asked.json()["id"]
        granted = reviewer.post(f"/leases/{lease}/grant/", json={"reason": "go"})
        assert granted.status_code == 200, granted.text
    result["lease"] = lease
    streams: list = []
    held = {name: {"watch": 0, "exec": 0} for name in rig.balancer.servers}

    def missing(kind: str) -> int:
        return sum(1 for kinds in held.values() if kinds[kind] < per_replica)

    try:
        # The balancer picks the replica (round robin, shared with the background load), so open
        # whichever kind some replica still lacks until every replica holds both.
        for _ in range(len(held) * 2 * per_replica * 8):
            if not missing("watch") and not missing("exec"):
                break
            stream = (_Watch if missing("watch") >= missing("exec") else _Exec)(rig, ledger)
            if stream.status not in (101, 200):
                found.append(f"a {type(stream).__name__} answered {stream.status}")
                continue
            streams.append(stream)
            replica = rig.balancer.replica_of(stream.port)
            if replica is not None:
                held[replica]["watch" if isinstance(stream, _Watch) else "exec"] += 1
        result["streams"] = held
        if not all(count >= per_replica for kinds in held.values() for count in kinds.values()):
            found.append(f"streams did not reach every replica: {held}")
        revoker, result["revoked_on"] = _pin_api(rig)
        with closing(revoker):
            revoked = revoker.post(f"/leases/{lease}/revoke/", json={"reason": "scale-out: incident closed"})
            if revoked.status_code != 200:
                found.append(f"revocation answered {revoked.status_code}: {revoked.text[:200]}")
        revoked_at = time.monotonic()
        deadline = time.monotonic() + WAIT
        with ThreadPoolExecutor(len(streams) or 1) as pool:
            endings = list(pool.map(lambda s: s.end(deadline), streams))
        streams = []
        result["ended_within_s"] = round(time.monotonic() - revoked_at, 2)
        result["ended_with_status"] = sum(1 for e in endings if not e)
        found += [e for e in endings if e]
        with rig.agent() as agent:
            after = ledger.request(agent, "refused", "GET", f"/k8s/{LEASED}{SHOP}/configmaps")
            if after.status_code != 403 or "lease" not in after.text:
                found.append(f"a request after the revocation answered {after.status_code}: {after.text[:200]}")
    finally:
        for stream in streams:  # only when something above failed
            (stream.response.close(), stream.client.close()) if isinstance(stream, _Watch) else stream.ws.close()
    return result
