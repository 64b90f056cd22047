"""The budget stage (gateway.budgets) in the gateway, without sockets: fake agent, fake cluster, a clock
the test turns, the counters in memory."""

import json
from types import SimpleNamespace

import httpx
import pytest

from approvals.hold import HoldOutcome
from gateway.app import GatewayApp
from gateway.budgets import Budgets, Throttled, utc
from gateway.budgetstore import MemoryCounters, StoreUnavailable
from gateway.tests.test_proxy import FakePolicy, FakeRecorder, FakeUpstream, call, status_of
from identity.chain import AuthenticatorChain
from identity.static import StaticTokenAuthenticator
from policy.budgets import Window
from policy.compile import compile_rule
from runtime import metrics

pytestmark = pytest.mark.asyncio
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
PODS = "/k8s/prod/api/v1/namespaces/shop/pods"


class Clock:
    def __init__(self, now=T0):
        self.now = now

    def __call__(self):
        return self.now


def rule(name="agents", effect="allow", budget=None, verbs=("*",), order=10, **extra):
    fields = {"name": name, "effect": effect, "groups": ["agents"], "verbs": list(verbs), "api_groups": ["*"],
              "resources": ["*"], "namespaces": ["*"], "names": ["*"], "order": order, **extra}
    if budget is not None:
        fields["budget"] = budget
    return compile_rule(fields, id=order)


class Cluster:
    """The fake cluster: what it was asked, answering ``code``."""

    def __init__(self, code=200):
        self.code = code
        self.seen = []

    def __call__(self, request):
        self.seen.append((request.method, request.url.path))
        return httpx.Response(self.code, json={"kind": "Status", "apiVersion": "v1", "code": self.code})


def make_app(cluster, *rules, budgets, holder=None, recorder=None):
    async def connections(name):
        return FakeUpstream() if name == "prod" else None

    return GatewayApp(
        prefix="/k8s/", connections=connections,
        authenticator=AuthenticatorChain(static=StaticTokenAuthenticator("agent-tok=agent-1:agents,bob-tok=bob:agents")),
        policy=FakePolicy(*rules), recorder=recorder or FakeRecorder(), max_body=4096,
        transport=httpx.MockTransport(cluster), holder=holder, budgets=budgets,
    )


def throttles(connection, budget):
    return metrics.BUDGET_THROTTLES.labels(connection, budget)._value.get()


async def test_the_eleventh_delete_in_an_hour_is_a_429_naming_the_reset_time():
    clock, cluster, recorder = Clock(), Cluster(), FakeRecorder()
    app = make_app(cluster, rule(budget={"quota": "10/hour"}), budgets=Budgets(clock=clock), recorder=recorder)
    before = throttles("prod", "quota")
    for n in range(10):
        clock.now = T0 + n * 60
        status, _, _ = await call(app, f"{PODS}/web-{n}", method="DELETE")
        assert status == 200
    clock.now = T0 + 1800
    status, headers, content = await call(app, f"{PODS}/web-10", method="DELETE")
    assert status == 429
    body = status_of(content)
    assert body["reason"] == "TooManyRequests" and body["code"] == 429
    assert body["details"]["retryAfterSeconds"] == 1800
    assert body["details"]["causes"] == [{"reason": "quota", "message": "10 per 1 hour"}]
    message = body["message"]
    assert 'rule "agents" (connection prod) allows each agent 10 per 1 hour (quota)' in message
    assert f"resets at {utc(T0 + 3600)} (in 30 min)" in message and utc(T0 + 3600) == "2027-01-15T09:00:00Z"
    assert 'delete pods "web-10" in namespace "shop" was not forwarded' in message
    # An hour away: no Retry-After, so kubectl prints this at once instead of sleeping through it.
    assert "retry-after" not in headers
    assert len(cluster.seen) == 10
    assert throttles("prod", "quota") == before + 1
    completed = [e for e in recorder.events if e["stage"] == "ResponseComplete"]
    assert [e["response_code"] for e in completed][-1] == 429
    assert completed[-1]["response_reason"] == "TooManyRequests" and "(quota)" in completed[-1]["response_message"]
    # The oldest delete leaves the window an hour after it was made: one more fits, then none.
    clock.now = T0 + 3600
    assert (await call(app, f"{PODS}/web-11", method="DELETE"))[0] == 200
    assert (await call(app, f"{PODS}/web-12", method="DELETE"))[0] == 429


async def test_a_short_wait_carries_retry_after_and_each_agent_has_its_own_budget():
    clock, cluster = Clock(), Cluster()
    app = make_app(cluster, rule(budget={"rate": "2/second"}), budgets=Budgets(clock=clock))
    assert [(await call(app, PODS))[0] for _ in range(2)] == [200, 200]
    status, headers, content = await call(app, PODS)
    assert status == 429 and headers["retry-after"] == "1"
    assert "(rate)" in status_of(content)["message"]
    assert (await call(app, PODS, token="bob-tok"))[0] == 200  # bob's budget is bob's
    clock.now += 1
    assert (await call(app, PODS))[0] == 200


async def test_a_denied_request_spends_nothing():
    clock, cluster = Clock(), Cluster()
    policy_rules = [rule("deletes", effect="deny", budget={"quota": "1/hour"})]
    app = make_app(cluster, budgets=Budgets(clock=clock, loop=None))
    app.policy.rules = tuple(policy_rules)
    for n in range(3):
        assert (await call(app, f"{PODS}/a-{n}", method="DELETE"))[0] == 403
    app.policy.rules = (rule("deletes", budget={"quota": "1/hour"}),)
    assert (await call(app, f"{PODS}/b", method="DELETE"))[0] == 200
    assert (await call(app, f"{PODS}/c", method="DELETE"))[0] == 429


class Holder:
    """Approves every held request (counting them); ``answers`` False: leaves them pending."""

    def __init__(self, approve=True):
        self.approve = approve
        self.held = 0

    async def hold(self, request, decision, *, on_pending=None):
        self.held += 1
        if self.approve:
            return HoldOutcome(approved=True, review_id=self.held, state="approved", reviewers=("rita",))
        return HoldOutcome(approved=False, review_id=self.held, state="pending", url="https://x/")


async def test_a_held_request_spends_when_it_is_forwarded_and_no_review_is_opened_once_the_budget_is_out():
    clock, cluster = Clock(), Cluster()
    pending = Holder(approve=False)
    review = rule("deletes", effect="review", verbs=["delete"], budget={"quota": "2/hour"}, order=1)
    app = make_app(cluster, review, rule(), budgets=Budgets(clock=clock, loop=None), holder=pending)
    for n in range(3):  # answered at once, waiting for a reviewer: nothing spent
        assert (await call(app, f"{PODS}/w-{n}", method="DELETE"))[0] == 403
    assert pending.held == 3
    approving = Holder()
    app.holder = approving
    assert [(await call(app, f"{PODS}/x-{n}", method="DELETE"))[0] for n in range(2)] == [200, 200]
    status, _, content = await call(app, f"{PODS}/x-2", method="DELETE")
    assert status == 429 and "(quota)" in status_of(content)["message"]
    assert approving.held == 2  # the third was refused before a reviewer was asked
    assert [m for m, _ in cluster.seen] == ["DELETE", "DELETE"]


async def test_the_same_refused_request_in_a_tight_loop_is_slowed_with_an_explanation():
    clock, cluster = Clock(), Cluster()
    app = make_app(cluster, rule("no-deletes", effect="deny", verbs=["delete"], order=1), rule(),
                   budgets=Budgets(clock=clock, loop=Window(5, 60)))
    before = throttles("prod", "loop")
    for _ in range(5):
        assert (await call(app, f"{PODS}/web", method="DELETE"))[0] == 403
        clock.now += 1
    status, headers, content = await call(app, f"{PODS}/web", method="DELETE")
    assert status == 429 and headers["retry-after"] == "55"
    message = status_of(content)["message"]
    assert message.startswith('airlock: slowed down (loop detection, rule "no-deletes", connection prod)')
    assert f'refused or failed 5 times within 1 min, so it is not tried again before {utc(T0 + 60)}' in message
    assert throttles("prod", "loop") == before + 1
    # Throttled answers do not count: the loop ends when the oldest repeat leaves the window.
    assert (await call(app, f"{PODS}/web", method="DELETE"))[0] == 429
    assert (await call(app, f"{PODS}/other", method="DELETE"))[0] == 403  # another request is another count
    assert (await call(app, f"{PODS}/web", method="DELETE", token="bob-tok"))[0] == 403  # and another agent
    assert (await call(app, f"{PODS}/web", query=b"x=1", method="DELETE"))[0] == 403
    clock.now = T0 + 60
    assert (await call(app, f"{PODS}/web", method="DELETE"))[0] == 403
    assert cluster.seen == []


async def test_a_failing_request_counts_a_server_error_does_not():
    clock, missing = Clock(), Cluster(404)
    app = make_app(missing, rule(), budgets=Budgets(clock=clock, loop=Window(3, 60)))
    assert [(await call(app, f"{PODS}/gone"))[0] for _ in range(4)] == [404, 404, 404, 429]
    assert len(missing.seen) == 3
    broken = Cluster(500)
    app = make_app(broken, rule(), budgets=Budgets(clock=clock, loop=Window(3, 60)))
    assert [(await call(app, f"{PODS}/web"))[0] for _ in range(5)] == [500] * 5
    off = make_app(Cluster(404), rule(budget={"loop": "off"}), budgets=Budgets(clock=clock, loop=Window(3, 60)))
    assert [(await call(off, f"{PODS}/gone"))[0] for _ in range(5)] == [404] * 5


def request_of(app_request, audit="a"):
    return SimpleNamespace(audit_id=audit, request=app_request, code=200)


async def test_sessions_at_once_hold_a_slot_until_they_end_or_their_process_is_gone():
    clock = Clock()
    budgets = Budgets(clock=clock, slot_seconds=60)
    captured = []

    class Capture:
        async def completed(self, exchange):
            captured.append(exchange.request)

    app = make_app(Cluster(), rule(budget={"concurrent": 2}), budgets=Budgets(clock=clock))
    app.hooks = type(app.hooks)([Capture()])
    await call(app, PODS)
    request = captured[0]
    await budgets.spend(request, "s1")
    await budgets.spend(request, "s2")
    with pytest.raises(Throttled) as refused:
        await budgets.spend(request, "s3")
    assert refused.value.code == 429 and refused.value.budget == "concurrent"
    assert "allows each agent 2 at once (concurrent), and agent-1 has 2 open" in refused.value.message
    assert b"retry-after" not in dict(refused.value.headers())  # nobody knows when a session ends
    await budgets.completed(request_of(request, "s1"))  # a session ended (or was cut): its slot is free
    await budgets.spend(request, "s3")
    # s2 and s3 belong to a process that died: nobody renews or releases them; they expire.
    budgets._slots.clear()
    clock.now += 61
    await budgets.spend(request, "s4")
    await budgets.spend(request, "s5")
    await budgets.aclose()


class Unavailable(MemoryCounters):
    async def hit(self, *args):
        raise StoreUnavailable("down")

    peek = acquire = hit


async def test_without_its_counters_a_budgeted_request_is_refused_and_loop_detection_lets_others_on():
    cluster = Cluster()
    app = make_app(cluster, rule("deletes", verbs=["delete"], budget={"quota": "10/hour"}, order=1), rule(),
                   budgets=Budgets(Unavailable(), loop=Window(2, 60)))
    refused_before = metrics.BUDGET_STORE_FAILURES.labels("refused")._value.get()
    status, _, content = await call(app, f"{PODS}/web", method="DELETE")
    assert status == 503
    assert "budget store is unavailable" in status_of(content)["message"]
    assert cluster.seen == []
    assert metrics.BUDGET_STORE_FAILURES.labels("refused")._value.get() == refused_before + 1
    assert [(await call(app, PODS))[0] for _ in range(3)] == [200, 200, 200]


async def test_a_throttle_is_a_429_status_with_retry_after_for_http_and_websocket_refusals_alike():
    error = Throttled("airlock: slowed down", budget="loop", rule="r", retry_after=5, header=True, limit="2 per 1 min")
    headers = dict(error.headers())
    assert headers[b"retry-after"] == b"5"
    body = json.loads(error.body())
    assert body["reason"] == "TooManyRequests" and body["details"]["retryAfterSeconds"] == 5


class Counting(MemoryCounters):
    """Counters shared by several Budgets (as Redis is by several processes), counting what they are asked."""

    def __init__(self, clock):
        super().__init__(clock)
        self.calls = 0

    async def peek(self, *args):
        self.calls += 1
        return await super().peek(*args)

    async def hit(self, *args):
        self.calls += 1
        return await super().hit(*args)


async def test_a_loop_spread_over_two_processes_is_one_count_and_healthy_requests_cost_no_count():
    clock = Clock()
    shared = Counting(clock)
    cluster = Cluster(404)
    a, b = (make_app(cluster, rule(), budgets=Budgets(shared, clock=clock, loop=Window(4, 60))) for _ in range(2))
    healthy = make_app(Cluster(200), rule(), budgets=Budgets(shared, clock=clock, loop=Window(4, 60)))
    assert [(await call(healthy, PODS))[0] for _ in range(20)] == [200] * 20
    assert shared.calls == 0  # nothing failed: the shared counters were never asked
    answers = [(await call(app, f"{PODS}/gone"))[0] for app in (a, b, a, b, a, b)]
    assert answers == [404, 404, 404, 404, 429, 429]
    assert len(cluster.seen) == 4


async def test_a_refusal_is_counted_before_the_agent_has_it():
    """The agent may send the request again as soon as it reads the refusal, through another process."""
    clock = Clock()
    shared = Counting(clock)
    app = make_app(Cluster(), rule("no-deletes", effect="deny", verbs=["delete"], order=1),
                   budgets=Budgets(shared, clock=clock, loop=Window(2, 60)))
    counted_when_answered = []
    scope = {"type": "http", "method": "DELETE", "path": f"{PODS}/web", "raw_path": f"{PODS}/web".encode(),
             "query_string": b"", "headers": [(b"authorization", b"Bearer agent-tok")], "client": ("127.0.0.1", 1)}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            counted_when_answered.append(shared.calls)

    await app(scope, receive, send)
    await app(scope, receive, send)
    assert counted_when_answered == [1, 3]  # the first refusal's count, then the second's check and count


async def test_no_reviewer_is_asked_for_a_session_beyond_the_ones_allowed_at_once():
    clock = Clock()
    budgets = Budgets(clock=clock)
    approving = Holder()
    review = rule("sessions", effect="review", budget={"concurrent": 1}, order=1)
    app = make_app(Cluster(), review, budgets=budgets, holder=approving)
    app.hooks = type(app.hooks)([])  # the first request's session stays open: its completion never comes
    assert (await call(app, PODS))[0] == 200 and approving.held == 1
    status, headers, content = await call(app, PODS)
    assert status == 429 and "retry-after" not in headers
    assert "allows each agent 1 at once (concurrent)" in status_of(content)["message"]
    assert approving.held == 1  # refused before a reviewer was asked
    await budgets.aclose()
