"""The token-authenticated REST API for reviews and leases."""

import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from approvals import reviews
from approvals.models import Lease, Review
from approvals.tests.factories import connection, review_rule, reviewer
from approvals.tests.test_reviews import held

pytestmark = pytest.mark.django_db


def client_for(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def review():
    review_rule(connection())
    return reviews.open_review(held())[0]


@pytest.fixture
def rita():
    return client_for(reviewer("rita"))


def test_anonymous_and_non_reviewers_are_refused(review):
    assert APIClient().get("/approvals/api/reviews/").status_code == 401
    nobody = client_for(User.objects.create_user("nobody"))
    assert nobody.get("/approvals/api/reviews/").status_code == 403
    assert nobody.post(f"/approvals/api/reviews/{review.pk}/approve/").status_code == 403
    staff = User.objects.create_user("staff", is_staff=True)
    assert client_for(staff).post(f"/approvals/api/reviews/{review.pk}/approve/").status_code == 403


def test_list_pending_and_detail(review, rita):
    listed = rita.get("/approvals/api/reviews/").json()
    assert [r["id"] for r in listed] == [review.pk]
    assert listed[0]["description"] == 'delete deployments "web" in namespace "shop"'
    assert listed[0]["url"] == f"http://testserver/approvals/reviews/{review.pk}/" and "body" not in listed[0]
    detail = rita.get(f"/approvals/api/reviews/{review.pk}/").json()
    assert detail["events"][0]["kind"] == "requested" and '"propagationPolicy"' in detail["body"]
    assert rita.get("/approvals/api/reviews/?state=approved").json() == []
    assert rita.get("/approvals/api/reviews/?state=bogus").status_code == 400
    assert rita.get("/approvals/api/reviews/999999/").status_code == 404


def test_approve_with_a_window(review, rita):
    response = rita.post(
        f"/approvals/api/reviews/{review.pk}/approve/",
        {"reason": "incident 42", "scope": "window", "window_seconds": 600}, format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["state"], body["scope"], body["decided_by"], body["reason"]) == (
        "approved", "window", "rita", "incident 42"
    )
    again = rita.post(f"/approvals/api/reviews/{review.pk}/approve/", {}, format="json")
    assert again.status_code == 409 and "already approved" in again.json()["detail"]


def test_a_token_request_is_approved_with_or_without_its_token(rita):
    from approvals.tests.test_reviews import TOKEN_BODY, TOKEN_PATH

    review_rule(connection())
    withheld = reviews.open_review(held(TOKEN_PATH, method="POST", body=TOKEN_BODY))[0]
    released = reviews.open_review(held(TOKEN_PATH, method="POST", body=TOKEN_BODY + b" "))[0]
    listed = {r["id"]: r for r in rita.get("/approvals/api/reviews/").json()}
    assert listed[withheld.pk]["token_request"] is True and listed[withheld.pk]["release_token"] is False
    response = rita.post(f"/approvals/api/reviews/{withheld.pk}/approve/", {"reason": "not needed"}, format="json")
    assert response.status_code == 200 and response.json()["release_token"] is False
    response = rita.post(f"/approvals/api/reviews/{released.pk}/approve/", {"release_token": True}, format="json")
    assert response.status_code == 200 and response.json()["release_token"] is True
    detail = rita.get(f"/approvals/api/reviews/{released.pk}/").json()
    assert detail["votes"][0]["release_token"] is True


def test_deny_needs_a_reason(review, rita):
    assert rita.post(f"/approvals/api/reviews/{review.pk}/deny/", {}, format="json").status_code == 400
    response = rita.post(f"/approvals/api/reviews/{review.pk}/deny/", {"reason": "no"}, format="json")
    assert response.status_code == 200 and response.json()["state"] == "denied"


def test_bad_input_is_400_not_500(review, rita):
    for data in ({"scope": "forever"}, {"window_seconds": "x", "scope": "window"}, {"unmask": "maybe"},
                 {"scope": "window", "window_seconds": 10}, {"release_token": True}):
        response = rita.post(f"/approvals/api/reviews/{review.pk}/approve/", data, format="json")
        assert response.status_code == 400, data
    assert Review.objects.get(pk=review.pk).state == "pending"


def test_self_approval_is_refused(review):
    agent = client_for(reviewer("agent-1"))
    response = agent.post(f"/approvals/api/reviews/{review.pk}/approve/", {}, format="json")
    assert response.status_code == 403 and "own request" in response.json()["detail"]


def test_session_auth_needs_csrf(review):
    user = reviewer("sam")
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post(f"/approvals/api/reviews/{review.pk}/approve/", {}, format="json").status_code == 403
    assert Review.objects.get(pk=review.pk).state == "pending"


# -- leases ------------------------------------------------------------------------------------------------


@pytest.fixture
def requester():
    user = User.objects.create_user("ops-bot")
    user.user_permissions.add(Permission.objects.get(codename="request_lease"))
    return client_for(user)


def test_lease_request_grant_revoke(requester, rita):
    connection()
    response = requester.post(
        "/approvals/api/leases/",
        {"connection": "prod", "subject": "agent-1", "duration": "30m", "reason": "INC-7"}, format="json",
    )
    assert response.status_code == 201, response.content
    lease = response.json()
    assert (lease["state"], lease["duration_seconds"], lease["requested_by"]) == ("requested", 1800, "ops-bot")
    granted = rita.post(f"/approvals/api/leases/{lease['id']}/grant/", {"reason": "ok"}, format="json").json()
    assert granted["state"] == "granted" and granted["granted_by"] == "rita" and granted["expires_at"]
    assert [row["id"] for row in rita.get("/approvals/api/leases/?state=granted").json()] == [lease["id"]]
    assert rita.post(f"/approvals/api/leases/{lease['id']}/revoke/", {}, format="json").status_code == 400
    revoked = rita.post(f"/approvals/api/leases/{lease['id']}/revoke/", {"reason": "done"}, format="json").json()
    assert revoked["state"] == "revoked" and revoked["revoked_by"] == "rita"
    assert [e["kind"] for e in revoked["events"]] == ["requested", "granted", "revoked"]


def test_lease_request_validation(requester):
    connection()
    for data in (
        {"connection": "prod", "subject": "agent-1", "duration": "forever", "reason": "x"},
        {"connection": "prod", "subject": "agent-1", "duration": "10s", "reason": "x"},
        {"connection": "prod", "subject": "agent-1", "group": "agents", "duration": "1h", "reason": "x"},
        {"connection": "prod", "duration": "1h", "reason": "x"},
        {"connection": "nope", "subject": "agent-1", "duration": "1h", "reason": "x"},
        {"connection": "prod", "subject": "agent-1", "duration": "1h", "reason": "x", "rules": ["no-such-rule"]},
        {"connection": "prod", "subject": "agent-1", "duration": "1h"},
    ):
        assert requester.post("/approvals/api/leases/", data, format="json").status_code == 400, data
    assert not Lease.objects.exists()


def test_nobody_grants_their_own_lease(rita):
    connection()
    lease = rita.post("/approvals/api/leases/",
                      {"connection": "prod", "group": "agents", "duration": "1h", "reason": "x"}, format="json").json()
    response = rita.post(f"/approvals/api/leases/{lease['id']}/grant/", {}, format="json")
    assert response.status_code == 403
    for_herself = client_for(reviewer("sam")).post(
        "/approvals/api/leases/", {"connection": "prod", "subject": "rita", "duration": "1h", "reason": "x"},
        format="json",
    ).json()
    assert rita.post(f"/approvals/api/leases/{for_herself['id']}/grant/", {}, format="json").status_code == 403


def test_agents_without_the_permission_cannot_request(rita):
    connection()
    nobody = client_for(User.objects.create_user("nobody"))
    data = {"connection": "prod", "subject": "agent-1", "duration": "1h", "reason": "x"}
    assert nobody.post("/approvals/api/leases/", data, format="json").status_code == 403
