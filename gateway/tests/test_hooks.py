"""The hook points of a request's path (gateway.hooks): which events an addon sees, in which order."""

import asyncio

import httpx
import pytest

from approvals.hold import HoldOutcome, PendingReview
from gateway.hooks import EVENTS, Hooks
from policy.compile import compile_rule
from gateway.tests.test_proxy import ALLOW_AGENTS, FakePolicy, FakeRecorder, call, make_app

pytestmark = pytest.mark.asyncio


class Trace:
    """An addon with every event: what it saw, in order, with the response code known at the time."""

    def __init__(self):
        self.seen = []

    async def parsed(self, exchange):
        self.seen.append(("parsed", exchange.request is not None))

    async def decided(self, exchange):
        self.seen.append(("decided", exchange.request.decision.effect))

    async def held(self, exchange, pending):
        self.seen.append(("held", pending.id))

    async def forwarded(self, exchange):
        self.seen.append(("forwarded", exchange.code))

    async def completed(self, exchange):
        self.seen.append(("completed", exchange.code))


def ok(request):
    return httpx.Response(200, json={"kind": "PodList", "items": []})


def traced(handler=ok, **options):
    trace = Trace()
    return make_app(handler, addons=[trace], **options), trace


async def test_an_allowed_request_is_parsed_decided_forwarded_and_completed():
    app, trace = traced()
    status, _, _ = await call(app, "/k8s/prod/api/v1/pods")
    assert status == 200
    assert trace.seen == [("parsed", True), ("decided", "allow"), ("forwarded", 0), ("completed", 200)]


async def test_a_refused_request_skips_forwarding():
    app, trace = traced(policy=FakePolicy())  # no rule: the default deny
    status, _, _ = await call(app, "/k8s/prod/api/v1/pods")
    assert status == 403
    assert trace.seen == [("parsed", True), ("decided", "deny"), ("completed", 403)]
    app, trace = traced()
    status, _, _ = await call(app, "/k8s/prod/api/v1/../pods")  # refused by the parser
    assert status == 400 and trace.seen == [("parsed", False), ("completed", 400)]


class ApprovingHolder:
    """Tells the request it waits for review 7, then approves it."""

    async def hold(self, request, decision, *, on_pending=None):
        await on_pending(PendingReview(7, "https://airlock.test/approvals/reviews/7/", "delete", decision.rule_name, 1))
        return HoldOutcome(approved=True, review_id=7, state="approved", reviewers=("rita",))


REVIEW_DELETES = compile_rule(
    {"name": "hold-deletes", "effect": "review", "groups": ["agents"], "verbs": ["delete"], "api_groups": ["*"],
     "resources": ["*"], "namespaces": ["*"], "names": ["*"], "order": 0},
    id=2,
)


async def test_a_held_request_is_held_between_its_decision_and_forwarding():
    recorder = FakeRecorder()
    app, trace = traced(policy=FakePolicy(REVIEW_DELETES, ALLOW_AGENTS), holder=ApprovingHolder(), recorder=recorder)
    status, _, _ = await call(app, "/k8s/prod/api/v1/namespaces/shop/pods/web", method="DELETE")
    assert status == 200
    assert trace.seen == [("parsed", True), ("decided", "review"), ("held", 7), ("forwarded", 0), ("completed", 200)]
    # The recording addon runs first: the hold was committed with its review id before the trace saw it.
    assert [(e["stage"], e.get("review_id")) for e in recorder.events] == [
        ("RequestReceived", "7"), ("RequestReceived", "7"), ("ResponseComplete", "7")]


async def test_a_stream_completes_once_it_ends():
    async def events():
        yield b'{"type":"ADDED","object":{}}\n'
        await asyncio.sleep(0)
        yield b'{"type":"DELETED","object":{}}\n'

    def watch(request):
        return httpx.Response(200, headers={"content-type": "application/json"}, content=events())

    app, trace = traced(watch)
    status, _, content = await call(app, "/k8s/prod/api/v1/pods", query=b"watch=1")
    assert status == 200 and content.count(b"\n") == 2
    assert trace.seen == [("parsed", True), ("decided", "allow"), ("forwarded", 0), ("completed", 200)]


async def test_an_addon_without_a_method_costs_no_handler():
    class OnlyCompleted:
        async def completed(self, exchange):
            pass

    addon = OnlyCompleted()
    hooks = Hooks([addon])
    assert hooks.completed == addon.completed
    assert all(getattr(hooks, event) is getattr(Hooks(), event) for event in EVENTS if event != "completed")
