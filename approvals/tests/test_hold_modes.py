"""How a review rule holds: answered at once with the review's absolute URL, or held open; dry runs never held."""

import asyncio

import pytest
from channels.db import database_sync_to_async

from approvals import reviews
from approvals.hold import Holder, review_url
from approvals.models import Review, ReviewState
from approvals.tests.factories import connection, gateway_request, review_rule, reviewer
from gateway.authz import authorize
from gateway.pipeline import classify_dry_run
from kube.status import GatewayError
from policy.cache import PolicyCache

pytestmark = pytest.mark.django_db(transaction=True)

DELETE_PATH = "/k8s/prod/apis/apps/v1/namespaces/shop/deployments/web"
HOST = ("host", "gateway.example:8443")


def delete_request(body=b"{}"):
    request = gateway_request(DELETE_PATH, method="DELETE", body=body, headers=[HOST])
    return request.evolve(dry_run=classify_dry_run(request))


def holder():
    return Holder(timeout=30, poll_interval=0.1, previews=False)


@pytest.fixture
def answered_at_once(db):
    review_rule(connection(), review_hold="retry")


@pytest.fixture
def held_open(db):
    review_rule(connection())


async def test_a_retry_rule_answers_at_once_with_the_absolute_url_and_the_retry_passes_once_approved(answered_at_once):
    told = []
    with pytest.raises(GatewayError) as error:
        # Well inside the hold's 30 s: an answer at once does not wait for any reviewer.
        await asyncio.wait_for(
            authorize(delete_request(), PolicyCache(max_age=0), holder(), on_pending=told.append), 10)
    review = await Review.objects.aget()
    url = f"https://gateway.example:8443/approvals/reviews/{review.pk}/"
    assert error.value.code == 403 and error.value.details == {"group": "airlock.dev", "kind": "reviews",
                                                                 "name": str(review.pk)}
    assert error.value.message == (
        f'airlock: review {review.pk} is waiting for a reviewer (rule "hold-deletes"): delete deployments "web" in '
        f"namespace \"shop\"; nothing was done. Once a reviewer approves it at {url}, run the same request again"
    )
    assert [(p.id, p.url, p.wait) for p in told] == [(review.pk, url, False)]
    assert review.state == ReviewState.PENDING

    with pytest.raises(GatewayError) as again:  # asked again before a decision: the same review, at once
        await asyncio.wait_for(authorize(delete_request(), PolicyCache(max_age=0), holder()), 10)
    assert f"review {review.pk} is waiting" in again.value.message
    assert await Review.objects.acount() == 1

    rita = await database_sync_to_async(reviewer)("rita")
    await database_sync_to_async(reviews.decide)(review.pk, rita, approve=True)
    retry = delete_request()
    retry = await authorize(retry, PolicyCache(max_age=0), holder())
    assert (retry.review.approved, retry.review.review_id) == (True, review.pk)


async def test_the_configured_public_url_wins_over_the_request_host(answered_at_once, settings):
    settings.AIRLOCK_DASHBOARD_URL = "https://airlock.example.com/"
    with pytest.raises(GatewayError) as error:
        await authorize(delete_request(), PolicyCache(max_age=0), holder())
    review = await Review.objects.aget()
    assert f"at https://airlock.example.com/approvals/reviews/{review.pk}/, run" in error.value.message


def test_review_url_falls_back_to_the_path_without_a_base(settings):
    settings.AIRLOCK_DASHBOARD_URL = ""
    assert review_url(7, "https://gw:8443") == "https://gw:8443/approvals/reviews/7/"
    assert review_url(7, "") == "/approvals/reviews/7/"


async def test_an_open_hold_stops_when_the_client_cannot_be_kept_waiting(held_open):
    """on_pending answering False (an exec without stderr: the note can only end it) ends the hold at once."""
    told = []

    def cannot_wait(pending):
        told.append(pending.wait)
        return False

    with pytest.raises(GatewayError) as error:
        await asyncio.wait_for(
            authorize(delete_request(), PolicyCache(max_age=0), holder(), on_pending=cannot_wait), 10)
    assert told == [True] and "is waiting for a reviewer" in error.value.message


async def test_a_dry_run_is_never_held_and_opens_no_review(held_open):
    body = b'{"propagationPolicy":"Background","dryRun":["All"]}'
    request = delete_request(body)
    assert request.dry_run.honoured
    with pytest.raises(GatewayError) as error:
        await asyncio.wait_for(authorize(request, PolicyCache(max_age=0), holder()), 10)
    assert error.value.code == 403 and "a dry run is never held" in error.value.message
    assert await Review.objects.acount() == 0


async def test_a_request_that_asks_for_a_dry_run_it_does_not_get_is_held_and_says_so(answered_at_once):
    request = delete_request(b'{"propagationPolicy":"Background"}')
    request = request.evolve(query="dryRun=All")
    request = request.evolve(dry_run=classify_dry_run(request))
    with pytest.raises(GatewayError):
        await authorize(request, PolicyCache(max_age=0), holder())
    review = await Review.objects.aget()
    assert "the query's dryRun is ignored when a DELETE has a body" in review.dry_run_note
