"""The authorize stage with a Holder: held requests are released, denied or time out; leases are required."""

import asyncio
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer
from django.utils import timezone

from approvals import reviews
from approvals.hold import Holder
from approvals.lease_check import LeaseCache
from approvals.models import Lease, LeaseState, Review, ReviewState
from approvals.tests.factories import connection, gateway_request, review_rule, reviewer
from gateway.authz import authorize
from kube.status import GatewayError
from policy.cache import PolicyCache
from policy.evaluate import Decision
from policy.models import Rule

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

DELETE_PATH = "/k8s/prod/apis/apps/v1/namespaces/shop/deployments/web"
DELETE_DECISION = Decision("review", None, "hold-deletes", "matched", True, False)


@pytest.fixture
def setup(db):
    conn = connection()
    review_rule(conn)
    return conn


def delete_request():
    return gateway_request(DELETE_PATH, method="DELETE", body=b"{}")


async def wait_for_review(state=ReviewState.PENDING) -> Review:
    for _ in range(500):
        review = await database_sync_to_async(Review.objects.filter(state=state).first)()
        if review is not None:
            return review
        await asyncio.sleep(0.02)
    raise AssertionError("no review appeared")


async def test_without_a_holder_review_rules_refuse(setup):
    with pytest.raises(GatewayError) as error:
        await authorize(delete_request(), PolicyCache(max_age=0))
    assert error.value.code == 403 and "approval required" in error.value.message


async def test_approval_releases_the_held_request(setup):
    pending = []
    request = delete_request()
    held = asyncio.create_task(
        authorize(request, PolicyCache(max_age=0), Holder(timeout=30, poll_interval=0.1, previews=False), on_pending=pending.append)
    )
    review = await wait_for_review()
    rita = await database_sync_to_async(reviewer)("rita")
    await database_sync_to_async(reviews.decide)(review.pk, rita, approve=True, reason="ok")
    request = await held
    assert request.decision.effect == "review"
    assert (request.review.approved, request.review.review_id, request.review.reviewers) == (True, review.pk, ("rita",))
    assert [p.id for p in pending] == [review.pk]
    assert pending[0].url == f"/approvals/reviews/{review.pk}/"


async def test_denial_is_a_403_with_the_reviewers_reason(setup):
    held = asyncio.create_task(authorize(delete_request(), PolicyCache(max_age=0), Holder(timeout=30, poll_interval=0.1, previews=False)))
    review = await wait_for_review()
    rita = await database_sync_to_async(reviewer)("rita")
    await database_sync_to_async(reviews.decide)(review.pk, rita, approve=False, reason="change freeze")
    with pytest.raises(GatewayError) as error:
        await held
    assert error.value.code == 403
    assert error.value.message == f"airlock: denied by rita (review {review.pk}): change freeze"


async def test_timeout_names_the_review_and_a_retry_after_approval_passes(setup):
    with pytest.raises(GatewayError) as error:
        await authorize(delete_request(), PolicyCache(max_age=0), Holder(timeout=0.3, poll_interval=0.1, previews=False))
    review = await wait_for_review()
    assert error.value.code == 403 and error.value.details["name"] == str(review.pk)
    assert f"review {review.pk} is still pending" in error.value.message
    assert "Retry the same request" in error.value.message
    outcome = await Holder(timeout=0.2, poll_interval=0.1, previews=False).hold(delete_request(), DELETE_DECISION)
    assert (outcome.approved, outcome.state, outcome.review_id) == (False, "timeout", review.pk)
    rita = await database_sync_to_async(reviewer)("rita")
    await database_sync_to_async(reviews.decide)(review.pk, rita, approve=True)
    # A new Holder: as after a gateway restart, only the database knows the review.
    retry = delete_request()
    retry = await authorize(retry, PolicyCache(max_age=0), Holder(timeout=0.3, poll_interval=0.1, previews=False))
    assert retry.review.review_id == review.pk


async def test_client_going_away_leaves_the_review_pending(setup):
    held = asyncio.create_task(authorize(delete_request(), PolicyCache(max_age=0), Holder(timeout=30, poll_interval=0.1, previews=False)))
    review = await wait_for_review()
    held.cancel()
    with pytest.raises(asyncio.CancelledError):
        await held
    await database_sync_to_async(review.refresh_from_db)()
    assert review.state == ReviewState.PENDING


class PartitionedChannelLayer(InMemoryChannelLayer):
    """Every call waits, as on a Redis whose packets are dropped."""

    async def group_add(self, group, channel):
        await asyncio.sleep(3600)

    async def group_discard(self, group, channel):
        await asyncio.sleep(3600)

    async def group_send(self, group, message):
        await asyncio.sleep(3600)

    async def receive(self, channel):
        await asyncio.sleep(3600)


@pytest.fixture
def partitioned_channel_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": f"{__name__}.PartitionedChannelLayer"}}
    settings.AIRLOCK_CHANNEL_LAYER_TIMEOUT_SECONDS = 0.2


async def test_a_partitioned_channel_layer_delays_neither_approval_nor_release(setup, partitioned_channel_layer):
    request = delete_request()
    held = asyncio.create_task(
        authorize(request, PolicyCache(max_age=0), Holder(timeout=30, poll_interval=0.2, previews=False))
    )
    review = await asyncio.wait_for(wait_for_review(), 10)
    rita = await database_sync_to_async(reviewer)("rita")
    await asyncio.wait_for(database_sync_to_async(reviews.decide)(review.pk, rita, approve=True), 5)
    request = await asyncio.wait_for(held, 5)  # by the database poll: no message can arrive
    assert (request.review.approved, request.review.review_id) == (True, review.pk)


# -- leases ------------------------------------------------------------------------------------------------


@pytest.fixture
def lease_rule(db):
    conn = connection()
    Rule.objects.create(
        connection=conn, order=1, name="prod-writes", effect="allow", groups=["agents"], verbs=["delete"],
        api_groups=["apps"], resources=["deployments"], namespaces=["*"], names=["*"], requires_lease=True,
    )
    return conn


def grant(subject="agent-1", group="", rules=(), expires_in=600):
    now = timezone.now()
    return Lease.objects.create(
        connection="prod", subject=subject, group=group, rules=list(rules), duration_seconds=600, reason="incident",
        requested_by="agent-1", state=LeaseState.GRANTED, granted_by="rita", granted_at=now, starts_at=now,
        expires_at=now + timedelta(seconds=expires_in),
    )


async def test_a_lease_gated_rule_needs_an_active_lease(lease_rule):
    with pytest.raises(GatewayError) as error:
        await authorize(delete_request(), PolicyCache(max_age=0), leases=LeaseCache())
    assert error.value.code == 403
    assert 'rule "prod-writes" (connection prod) requires an active lease' in error.value.message
    assert "manage.py lease request --connection prod" in error.value.message
    lease = await database_sync_to_async(grant)()
    request = delete_request()
    request = await authorize(request, PolicyCache(max_age=0), leases=LeaseCache())
    assert request.lease.id == lease.pk


@pytest.mark.parametrize("subject, group, rules, covered", [
    ("agent-1", "", [], True),
    ("", "agents", [], True),
    ("agent-2", "", [], False),
    ("", "sre", [], False),
    ("agent-1", "", ["prod-writes"], True),
    ("agent-1", "", ["other-rule"], False),
])
async def test_who_and_what_a_lease_covers(lease_rule, subject, group, rules, covered):
    await database_sync_to_async(grant)(subject, group, rules)
    request = delete_request()
    if covered:
        await authorize(request, PolicyCache(max_age=0), leases=LeaseCache())
    else:
        with pytest.raises(GatewayError):
            await authorize(request, PolicyCache(max_age=0), leases=LeaseCache())


async def test_expiry_is_exact_even_while_cached(lease_rule):
    lease = await database_sync_to_async(grant)()
    now = [timezone.now().timestamp()]
    loads = []

    def loader(name):
        from approvals.lease_check import load_active_leases

        loads.append(name)
        return load_active_leases(name)

    cache = LeaseCache(max_age=3600, loader=loader, clock=lambda: now[0])
    await authorize(delete_request(), PolicyCache(max_age=0), leases=cache)
    now[0] = lease.expires_at.timestamp()
    with pytest.raises(GatewayError):
        await authorize(delete_request(), PolicyCache(max_age=0), leases=cache)
    assert loads == ["prod"]


async def test_saving_a_lease_invalidates_this_process_at_once(lease_rule):
    cache = LeaseCache(max_age=3600)
    with pytest.raises(GatewayError):
        await authorize(delete_request(), PolicyCache(max_age=0), leases=cache)
    lease = await database_sync_to_async(grant)()
    await authorize(delete_request(), PolicyCache(max_age=0), leases=cache)
    lease.state = LeaseState.REVOKED
    await database_sync_to_async(lease.save)()
    with pytest.raises(GatewayError):
        await authorize(delete_request(), PolicyCache(max_age=0), leases=cache)


async def test_a_failing_approvals_store_is_a_503_not_a_traceback(setup):
    from django.db import OperationalError

    class BrokenHolder:
        async def hold(self, request, decision, *, on_pending=None):
            raise OperationalError("database is locked")

    with pytest.raises(GatewayError) as error:
        await authorize(delete_request(), PolicyCache(max_age=0), BrokenHolder())
    assert error.value.code == 503 and "approvals are unavailable" in error.value.message
    assert "locked" not in error.value.message
