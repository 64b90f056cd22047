"""Review logic: matching retries, approval scopes, who may decide, expiry, history."""

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals import reviews
from approvals.hold import held_request
from approvals.models import BodyState, Review, ReviewEventKind, ReviewState
from approvals.tests.factories import AGENT, connection, gateway_request, review_rule, reviewer
from identity.principal import Principal
from policy.evaluate import evaluate
from policy.models import Rule

pytestmark = pytest.mark.django_db

DELETE_PATH = "/k8s/prod/apis/apps/v1/namespaces/shop/deployments/web"


@pytest.fixture
def rule():
    return review_rule(connection())


def held(path=DELETE_PATH, *, method="DELETE", body=b'{"propagationPolicy":"Background"}', query="", principal=AGENT):
    request = gateway_request(path, method=method, body=body, query=query, principal=principal)
    rules = [r.compile("prod") for r in Rule.objects.all()]
    decision = evaluate(rules, request.principal, request.info)
    assert decision.effect == "review"
    return held_request(request, decision)


def kinds(review):
    return [e.kind for e in review.events.all()]


def test_new_request_opens_a_pending_review_with_the_rule_settings(rule):
    rule.min_approvals = 2
    rule.reviewer_groups = ["sre"]
    rule.save()
    review, settlement = reviews.open_review(held())
    assert settlement is None
    assert review.state == ReviewState.PENDING
    assert (review.rule_name, review.min_approvals, review.reviewer_groups) == ("hold-deletes", 2, ["sre"])
    assert (review.verb, review.resource, review.namespace, review.name) == ("delete", "deployments", "shop", "web")
    assert review.description == 'delete deployments "web" in namespace "shop"'
    assert review.body_state == BodyState.STORED and '"propagationPolicy": "Background"' in review.body
    assert kinds(review) == [ReviewEventKind.REQUESTED]


def test_identical_retry_reuses_the_pending_review(rule):
    first, _ = reviews.open_review(held())
    again, settlement = reviews.open_review(held())
    assert settlement is None and again.pk == first.pk
    assert kinds(first) == [ReviewEventKind.REQUESTED, ReviewEventKind.RETRIED]
    other_body, _ = reviews.open_review(held(body=b'{"propagationPolicy":"Foreground"}'))
    assert other_body.pk != first.pk


def test_once_approval_is_used_by_exactly_one_request(rule):
    review, _ = reviews.open_review(held())
    reviews.decide(review.pk, reviewer("rita"), approve=True, reason="planned")
    settlement = reviews.settle(review.pk)
    assert settlement.approved and settlement.reviewers == ("rita",) and settlement.scope == "once"
    assert reviews.settle(review.pk).state == "used"
    again, settlement = reviews.open_review(held())
    assert settlement is None and again.pk != review.pk
    assert kinds(review)[-2:] == [ReviewEventKind.APPROVED, ReviewEventKind.USED]


def test_retry_after_a_timeout_is_matched_to_the_approval(rule):
    review, _ = reviews.open_review(held())
    reviews.record_timeout(review.pk, "audit-1")
    reviews.decide(review.pk, reviewer("rita"), approve=True)
    retried, settlement = reviews.open_review(held())
    assert retried.pk == review.pk and settlement.approved
    assert ReviewEventKind.TIMED_OUT in kinds(review)


def test_window_approval_covers_the_fingerprint_whatever_the_body(rule):
    review, _ = reviews.open_review(held())
    reviews.decide(review.pk, reviewer("rita"), approve=True, scope="window", window_seconds=600)
    assert reviews.settle(review.pk).approved
    for body in (b"{}", b'{"propagationPolicy":"Orphan"}'):
        matched, settlement = reviews.open_review(held(body=body))
        assert matched.pk == review.pk and settlement.approved and settlement.scope == "window"
    other_name, settlement = reviews.open_review(held(DELETE_PATH.replace("/web", "/api")))
    assert settlement is None and other_name.pk != review.pk
    someone_else = Principal("agent-2", "agent-2", ("agents",), "https://idp.test", float("inf"), "t2")
    _, settlement = reviews.open_review(held(principal=someone_else))
    assert settlement is None


def test_window_ends(rule):
    review, _ = reviews.open_review(held())
    reviews.decide(review.pk, reviewer("rita"), approve=True, scope="window", window_seconds=600)
    Review.objects.filter(pk=review.pk).update(valid_until=timezone.now() - timedelta(seconds=1))
    _, settlement = reviews.open_review(held(body=b"{}"))
    assert settlement is None


def test_denial_carries_the_reason_and_needs_one(rule):
    review, _ = reviews.open_review(held())
    rita = reviewer("rita")
    with pytest.raises(reviews.ApprovalError) as error:
        reviews.decide(review.pk, rita, approve=False, reason="  ")
    assert error.value.status == 400
    reviews.decide(review.pk, rita, approve=False, reason="not during the freeze")
    settlement = reviews.settle(review.pk)
    assert (settlement.approved, settlement.state, settlement.reason, settlement.reviewers) == (
        False, "denied", "not during the freeze", ("rita",)
    )
    with pytest.raises(reviews.ApprovalError) as error:
        reviews.decide(review.pk, reviewer("sam"), approve=True)
    assert error.value.status == 409


def test_min_approvals_need_distinct_reviewers(rule):
    rule.min_approvals = 2
    rule.save()
    review, _ = reviews.open_review(held())
    rita = reviewer("rita")
    reviews.decide(review.pk, rita, approve=True, scope="window", window_seconds=900, unmask=True)
    assert reviews.settle(review.pk) is None
    with pytest.raises(reviews.ApprovalError) as error:
        reviews.decide(review.pk, rita, approve=True)
    assert error.value.status == 409
    reviews.decide(review.pk, reviewer("sam"), approve=True, unmask=True)
    review.refresh_from_db()
    # The most restrictive choice wins: sam asked for "once".
    assert (review.state, review.scope, review.unmask, review.decided_by) == ("approved", "once", True, "rita, sam")
    assert kinds(review)[1:] == [ReviewEventKind.APPROVAL, ReviewEventKind.APPROVED]


def test_nobody_approves_their_own_request(rule):
    review, _ = reviews.open_review(held())
    same_name = reviewer("agent-1")
    with pytest.raises(reviews.ApprovalError) as error:
        reviews.decide(review.pk, same_name, approve=True)
    assert error.value.status == 403 and "own request" in error.value.message


def test_reviewer_role_and_reviewer_groups(rule):
    rule.reviewer_groups = ["sre"]
    rule.save()
    review, _ = reviews.open_review(held())
    for user in (reviewer("outsider", "sre", role=False), reviewer("dev-reviewer", "dev")):
        with pytest.raises(reviews.ApprovalError) as error:
            reviews.decide(review.pk, user, approve=True)
        assert error.value.status == 403
    staff = reviewer("admin-not-reviewer", role=False)
    staff.is_staff = True
    staff.save()
    with pytest.raises(reviews.ApprovalError):
        reviews.decide(review.pk, staff, approve=True)
    reviews.decide(review.pk, reviewer("sre-reviewer", "sre"), approve=True)
    assert reviews.settle(review.pk).approved


def test_secret_values_are_masked_in_the_stored_body(rule):
    review, _ = reviews.open_review(
        held("/k8s/prod/api/v1/namespaces/shop/secrets", method="POST",
             body=b'{"kind":"Secret","metadata":{"name":"db"},"data":{"password":"aHVudGVyMg=="}}')
    )
    assert review.body_state == BodyState.STORED and review.body_sha256
    assert "aHVudGVyMg==" not in review.body and '"password"' in review.body and '"name": "db"' in review.body


def test_bodies_not_seen_or_too_large_are_not_stored(rule):
    unknown, _ = reviews.open_review(held(body=None))
    assert unknown.body_state == BodyState.UNKNOWN and unknown.body == ""
    large, _ = reviews.open_review(held(body=b"{" + b" " * reviews.MAX_STORED_BODY + b"}"))
    assert large.body_state == BodyState.WITHHELD and large.body == ""


def test_pending_reviews_and_unused_approvals_expire(rule, settings):
    review, _ = reviews.open_review(held())
    Review.objects.filter(pk=review.pk).update(created_at=timezone.now() - timedelta(hours=2))
    assert reviews.settle(review.pk).state == "expired"
    fresh, settlement = reviews.open_review(held())
    assert settlement is None and fresh.pk != review.pk
    reviews.decide(fresh.pk, reviewer("rita"), approve=True)
    Review.objects.filter(pk=fresh.pk).update(valid_until=timezone.now() - timedelta(seconds=1))
    assert reviews.expire_stale() == 1
    fresh.refresh_from_db()
    assert fresh.state == ReviewState.EXPIRED and kinds(fresh)[-1] == ReviewEventKind.EXPIRED


@pytest.mark.parametrize("scope, window", [("forever", None), ("window", 5), ("window", "soon"), ("window", 10**9)])
def test_bad_scope_or_window_is_400(rule, scope, window):
    review, _ = reviews.open_review(held())
    with pytest.raises(reviews.ApprovalError) as error:
        reviews.decide(review.pk, reviewer("rita"), approve=True, scope=scope, window_seconds=window)
    assert error.value.status == 400


def test_history_is_offered_to_the_audit_hook(rule, django_capture_on_commit_callbacks):
    from approvals.history import approval_event

    seen = []

    def receiver(sender, event, **kwargs):
        seen.append(event)

    approval_event.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            review, _ = reviews.open_review(held())
        with django_capture_on_commit_callbacks(execute=True):
            reviews.decide(review.pk, reviewer("rita"), approve=False, reason="no")
    finally:
        approval_event.disconnect(receiver)
    assert [(e["object"], e["id"], e["kind"], e["actor"]) for e in seen] == [
        ("review", review.pk, "requested", "agent-1"), ("review", review.pk, "denied", "rita"),
    ]
    assert seen[1]["reason"] == "no" and seen[1]["details"]["rule"] == "hold-deletes"


TOKEN_PATH = "/k8s/prod/api/v1/namespaces/shop/serviceaccounts/deployer/token"
TOKEN_BODY = b'{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{}}'


def test_only_a_token_request_offers_the_token_choice(rule):
    token_review, _ = reviews.open_review(held(TOKEN_PATH, method="POST", body=TOKEN_BODY))
    delete_review, _ = reviews.open_review(held())
    assert token_review.is_token_request and not delete_review.is_token_request
    rita = reviewer("rita")
    for review, choice, message in (
        (delete_review, {"release_token": True}, "release_token applies only to a ServiceAccount token request"),
        (token_review, {"unmask": True}, "for a ServiceAccount token request choose release_token"),
    ):
        with pytest.raises(reviews.ApprovalError) as error:
            reviews.decide(review.pk, rita, approve=True, **choice)
        assert error.value.status == 400 and message in error.value.message
    reviews.decide(delete_review.pk, rita, approve=False, reason="no", release_token=True)  # a denial has no token
    assert Review.objects.get(pk=delete_review.pk).state == "denied"


def test_a_token_is_released_only_if_every_approver_releases_it(rule):
    rule.min_approvals = 2
    rule.save()
    review, _ = reviews.open_review(held(TOKEN_PATH, method="POST", body=TOKEN_BODY))
    reviews.decide(review.pk, reviewer("rita"), approve=True, release_token=True)
    reviews.decide(review.pk, reviewer("sam"), approve=True)
    settlement = reviews.settle(review.pk)
    assert (settlement.approved, settlement.release_token) == (True, False)
    assert review.events.get(kind="approved").details["release_token"] is False

    released, _ = reviews.open_review(held(TOKEN_PATH, method="POST", body=TOKEN_BODY + b" "))
    reviews.decide(released.pk, reviewer("tom"), approve=True, release_token=True)
    reviews.decide(released.pk, reviewer("uma"), approve=True, release_token=True)
    assert reviews.settle(released.pk).release_token is True
    assert [v.release_token for v in released.votes.all()] == [True, True]
