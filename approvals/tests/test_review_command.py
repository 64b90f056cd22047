"""manage.py review list|show|approve|deny and manage.py api_token: the dashboard's decisions from a shell."""

import io
import json

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from approvals import reviews
from approvals.models import Review
from approvals.tests.factories import connection, review_rule, reviewer
from approvals.tests.test_reviews import TOKEN_BODY, TOKEN_PATH, held

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def review():
    review_rule(connection())
    review = reviews.open_review(held())[0]
    reviews.save_preview(review.pk, "would delete deployments/web", "--- web (current)\n+++ web (after)\n-  replicas: 2\n",
                         "")
    return review


def test_list_and_show_print_what_the_dashboard_shows(review):
    [line] = run("review", "list").splitlines()
    assert line.split()[:2] == [str(review.pk), "pending"]
    assert 'agent-1: delete deployments "web" in namespace "shop" [rule hold-deletes, 0/1 approvals]' in line
    assert run("review", "list", "--state", "approved") == "no approved reviews\n"
    assert [r["id"] for r in json.loads(run("review", "list", "--json"))] == [review.pk]

    shown = run("review", "show", str(review.pk))
    assert shown.startswith(f'Review {review.pk}: delete deployments "web" in namespace "shop"\n')
    for expected in (
        "Request    DELETE /apis/apps/v1/namespaces/shop/deployments/web (http; exactly as it will be forwarded",
        "Headers    content-type: application/json",
        '  "propagationPolicy": "Background"',
        f"Digest     {review.body_sha256} ",
        "Effect (server-side dry run)\n  would delete deployments/web\n  --- web (current)\n  +++ web (after)\n  -  replicas: 2",
        "Approve    once (default), or --window MINUTES",
        "History\n  ",
    ):
        assert expected in shown, expected
    detail = json.loads(run("review", "show", str(review.pk), "--json"))
    assert (detail["preview_summary"], detail["body_sha256"]) == ("would delete deployments/web", review.body_sha256)
    with pytest.raises(CommandError, match="review 999999 not found"):
        run("review", "show", "999999")


def test_approve_and_deny_record_the_user_and_the_reason(review):
    reviewer("rita")
    out = run("review", "approve", str(review.pk), "--by", "rita", "--reason", "planned cleanup", "--window", "30")
    assert out.startswith(f"review {review.pk} approved (Time window") and "DELETE /apis/apps/v1/namespaces/shop/deployments/web" in out
    review.refresh_from_db()
    assert (review.state, review.scope, review.decided_by, review.reason) == ("approved", "window", "rita",
                                                                              "planned cleanup")
    [vote] = review.votes.all()
    assert (vote.reviewer.username, vote.reason, vote.window_seconds) == ("rita", "planned cleanup", 1800)
    assert review.events.last().actor == "rita"

    other = reviews.open_review(held("/k8s/prod/apis/apps/v1/namespaces/shop/deployments/api"))[0]
    with pytest.raises(CommandError):
        run("review", "deny", str(other.pk), "--by", "rita")  # argparse: --reason is required
    assert run("review", "deny", str(other.pk), "--by", "rita", "--reason", "no") == f"review {other.pk} denied: no\n"


@pytest.mark.parametrize(("user", "message"), [
    ("nobody", "no user named 'nobody'"),
    ("plain", "you do not have the reviewer role"),
    ("agent-1", "nobody may approve or deny their own request"),
])
def test_the_dashboards_rules_apply(review, user, message):
    User.objects.create_user("plain")
    reviewer("agent-1")
    with pytest.raises(CommandError, match=message):
        run("review", "approve", str(review.pk), "--by", user)
    assert Review.objects.get(pk=review.pk).state == "pending"


def test_a_token_request_is_approved_with_release_token():
    review_rule(connection())
    review = reviews.open_review(held(TOKEN_PATH, method="POST", body=TOKEN_BODY))[0]
    assert "Token      this request mints a ServiceAccount token" in run("review", "show", str(review.pk))
    reviewer("rita")
    run("review", "approve", str(review.pk), "--by", "rita", "--release-token")
    assert Review.objects.get(pk=review.pk).release_token
    assert "token released to the agent" in run("review", "show", str(review.pk))


def test_api_token_prints_a_working_key(review):
    reviewer("rita")
    key = run("api_token", "rita").strip()
    assert key == Token.objects.get(user__username="rita").key
    assert run("api_token", "rita").strip() == key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert [r["id"] for r in client.get("/approvals/api/reviews/").json()] == [review.pk]
    assert run("api_token", "rita", "--reset").strip() != key
    assert client.get("/approvals/api/reviews/").status_code == 401
    User.objects.create_user("plain")
    with pytest.raises(CommandError, match="may not use the approvals API"):
        run("api_token", "plain")
    assert not Token.objects.filter(user__username="plain").exists()
