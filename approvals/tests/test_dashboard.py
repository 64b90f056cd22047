"""Dashboard views and the live WebSocket, without a browser."""

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client

from approvals import leases, reviews
from approvals.models import Lease, Review
from approvals.routing import websocket_application
from approvals.tests.factories import connection, review_rule, reviewer
from approvals.tests.test_reviews import held


@pytest.fixture
def review(db):
    review_rule(connection())
    return reviews.open_review(held())[0]


def signed_in(user, **kwargs):
    client = Client(**kwargs)
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_login_page_offers_sso_only_when_configured(settings):
    page = Client().get("/approvals/login/").content.decode()
    assert 'id="password-login"' in page and "single sign-on" not in page
    assert Client().get("/approvals/oidc/authenticate/").status_code == 404
    settings.OIDC_RP_CLIENT_ID = "dashboard"
    assert "Sign in with single sign-on" in Client().get("/approvals/login/").content.decode()


@pytest.mark.django_db
def test_password_login_then_queue(review):
    reviewer("rita")
    client = Client()
    assert client.get("/approvals/").status_code == 302
    response = client.post("/approvals/login/", {"username": "rita", "password": "pw-rita"})
    assert response.status_code == 302 and response["Location"] == "/approvals/"
    page = client.get("/approvals/").content.decode()
    assert f'id="review-{review.pk}"' in page and "delete deployments" in page


@pytest.mark.django_db
def test_non_reviewers_and_staff_get_403(review):
    for user in (User.objects.create_user("nobody"), User.objects.create_user("admin", is_staff=True)):
        client = signed_in(user)
        assert client.get("/approvals/").status_code == 403
        assert client.get(f"/approvals/reviews/{review.pk}/").status_code == 403
        assert client.post(f"/approvals/reviews/{review.pk}/decide/", {"decision": "approve"}).status_code == 403
    assert Review.objects.get(pk=review.pk).state == "pending"


@pytest.mark.django_db
def test_detail_shows_the_request_and_decides_with_csrf(review):
    client = signed_in(reviewer("rita"), enforce_csrf_checks=True)
    page = client.get(f"/approvals/reviews/{review.pk}/").content.decode()
    assert "agent-1" in page and "review-deployment" not in page and "hold-deletes" in page
    assert "propagationPolicy" in page and 'id="approve"' in page and "No preview for this request" in page
    url = f"/approvals/reviews/{review.pk}/decide/"
    assert client.post(url, {"decision": "approve"}).status_code == 403  # no CSRF token
    token = client.cookies["csrftoken"].value
    response = client.post(url, {"decision": "approve", "scope": "window", "window_minutes": "30",
                                 "reason": "ok", "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    review.refresh_from_db()
    assert (review.state, review.scope, review.decided_by) == ("approved", "window", "rita")
    page = client.get(f"/approvals/reviews/{review.pk}/").content.decode()
    assert "Your decision is recorded" in page or "your decision is recorded" in page
    assert 'id="approve"' not in page


@pytest.mark.django_db
def test_a_token_request_offers_withholding_or_releasing_the_token(db):
    from approvals.tests.test_reviews import TOKEN_BODY, TOKEN_PATH

    review_rule(connection())
    review, _ = reviews.open_review(held(TOKEN_PATH, method="POST", body=TOKEN_BODY))
    client = signed_in(reviewer("rita"))
    page = client.get(f"/approvals/reviews/{review.pk}/").content.decode()
    assert 'id="token-choice"' in page and 'id="id_unmask"' not in page
    assert 'value="withhold" id="id_token_0" checked>' in page  # withheld unless the reviewer says otherwise
    assert 'value="release" id="id_token_1">' in page
    client.post(f"/approvals/reviews/{review.pk}/decide/", {"decision": "approve", "token": "release"})
    review.refresh_from_db()
    assert (review.state, review.release_token) == ("approved", True)
    page = client.get(f"/approvals/reviews/{review.pk}/").content.decode()
    assert 'id="token-decision">token released to the agent' in page

    other, _ = reviews.open_review(held("/k8s/prod/apis/apps/v1/namespaces/shop/deployments/api", method="DELETE"))
    page = client.get(f"/approvals/reviews/{other.pk}/").content.decode()
    assert 'id="token-choice"' not in page and 'id="id_unmask"' in page


@pytest.mark.django_db
def test_refusals_are_messages_not_errors(review):
    client = signed_in(reviewer("agent-1"))
    response = client.post(f"/approvals/reviews/{review.pk}/decide/", {"decision": "approve"}, follow=True)
    assert response.status_code == 200 and "nobody may approve or deny their own request" in response.content.decode()
    assert "cannot decide this review" in response.content.decode()
    bad = client.post(f"/approvals/reviews/{review.pk}/decide/", {"decision": "maybe"}, follow=True)
    assert bad.status_code == 200 and "invalid" in bad.content.decode()
    assert client.post("/approvals/reviews/999999/decide/", {"decision": "deny", "reason": "x"}).status_code == 404


@pytest.mark.django_db
def test_secret_values_are_not_shown(db):
    review_rule(connection())
    review, _ = reviews.open_review(held("/k8s/prod/api/v1/namespaces/shop/secrets", method="POST",
                                         body=b'{"kind":"Secret","data":{"password":"aHVudGVyMg=="}}'))
    reviews.save_preview(review.pk, "would create secrets/db", "+data:\n+  password: '**AIRLOCK-MASKED**'\n", "")
    page = signed_in(reviewer("rita")).get(f"/approvals/reviews/{review.pk}/").content.decode()
    assert "aHVudGVyMg==" not in page and "password" in page
    assert 'id="preview-summary"><strong>would create secrets/db' in page


@pytest.mark.django_db
def test_lease_page_grants_and_revokes(db):
    connection()
    lease = leases.request_lease(connection="prod", subject="agent-1", duration="1h", reason="INC-1",
                                 requested_by="ops")
    client = signed_in(reviewer("rita"))
    assert f'id="lease-{lease.pk}"' in client.get("/approvals/leases/").content.decode()
    client.post(f"/approvals/leases/{lease.pk}/", {"action": "grant", "reason": "ok"})
    assert Lease.objects.get(pk=lease.pk).state == "granted"
    page = client.post(f"/approvals/leases/{lease.pk}/", {"action": "revoke"}, follow=True).content.decode()
    assert "a revocation needs a reason" in page
    client.post(f"/approvals/leases/{lease.pk}/", {"action": "revoke", "reason": "done"})
    assert Lease.objects.get(pk=lease.pk).state == "revoked"


# -- live updates --------------------------------------------------------------------------------------


def communicator(user=None, origin=b"http://localhost"):
    from django.contrib.auth.models import AnonymousUser

    comm = WebsocketCommunicator(websocket_application, "/ws/approvals/", headers=[(b"origin", origin)])
    comm.scope["user"] = user or AnonymousUser()
    return comm


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_queue_updates_live_when_a_review_arrives_and_is_decided():
    await database_sync_to_async(lambda: review_rule(connection()))()
    rita = await database_sync_to_async(reviewer)("rita")
    comm = communicator(rita)
    connected, _ = await comm.connect()
    assert connected
    review, _ = await database_sync_to_async(lambda: reviews.open_review(held()))()
    html = await comm.receive_from(timeout=5)
    assert 'id="pending" hx-swap-oob="true"' in html and f'id="review-{review.pk}"' in html
    sam = await database_sync_to_async(reviewer)("sam")
    await database_sync_to_async(reviews.decide)(review.pk, sam, approve=False, reason="freeze")
    html = await comm.receive_from(timeout=5)
    assert f'id="review-{review.pk}"' not in html.split("</div>")[0]
    assert f'id="review-{review.pk}-status" hx-swap-oob="true"' in html and "freeze" in html
    assert 'id="decision" hx-swap-oob="true"' in html
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_socket_refuses_strangers_and_other_origins():
    comm = communicator()
    connected, code = await comm.connect()
    assert not connected
    nobody = await database_sync_to_async(User.objects.create_user)("nobody")
    connected, _ = await communicator(nobody).connect()
    assert not connected
    rita = await database_sync_to_async(reviewer)("rita")
    connected, _ = await communicator(rita, origin=b"https://evil.example").connect()
    assert not connected
    other = WebsocketCommunicator(websocket_application, "/ws/other/")
    connected, _ = await other.connect()
    assert not connected


@pytest.mark.django_db
def test_admin_shows_reviews_read_only(review, admin_client):
    page = admin_client.get(f"/admin/approvals/review/{review.pk}/change/")
    assert page.status_code == 200 and "delete deployments" in page.content.decode()
    assert admin_client.get("/admin/approvals/review/add/").status_code == 403
    assert admin_client.get("/admin/approvals/lease/").status_code == 200
