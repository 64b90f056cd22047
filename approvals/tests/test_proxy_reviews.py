"""A held request of a user a trusted proxy asserted (identity.proxies): the review names both, the
reviewer sees both, and the approval is that user's through that proxy only."""

import io

import pytest
from django.core.management import call_command
from django.urls import reverse

from approvals import reviews
from approvals.hold import held_request
from approvals.tests.factories import connection, gateway_request, review_rule, reviewer
from identity.principal import Principal
from identity.proxies import ProxyGrant, act_for
from policy.evaluate import evaluate
from policy.models import Rule

pytestmark = pytest.mark.django_db

IDP = "https://idp.test"
PATH = "/k8s/prod/apis/apps/v1/namespaces/shop/deployments/web"
PROXY = Principal(subject="mcp-server", username="mcp-server", groups=("mcp-proxies",), issuer=IDP,
                  expires_at=float("inf"), token_id="t-proxy")
OTHER_PROXY = Principal(subject="other-mcp", username="other-mcp", groups=("mcp-proxies",), issuer=IDP,
                        expires_at=float("inf"), token_id="t-other")
GRANTS = (ProxyGrant(name="mcp", issuer=IDP, group="mcp-proxies", users=("*@example.com",), groups=("agents",)),)
ALICE_HERSELF = Principal(subject="alice@example.com", username="alice@example.com", groups=("agents",), issuer=IDP,
                          expires_at=float("inf"), token_id="t-alice")


def through(proxy):
    return act_for(proxy, [("impersonate-user", "alice@example.com"), ("impersonate-group", "agents")], GRANTS, "prod")


def held(principal):
    request = gateway_request(PATH, method="DELETE", body=b"{}", principal=principal)
    rules = [r.compile("prod") for r in Rule.objects.all()]
    return held_request(request, evaluate(rules, request.principal, request.info))


@pytest.fixture
def rule():
    return review_rule(connection())


def test_the_review_names_the_end_user_and_the_proxy(rule, client):
    review, _ = reviews.open_review(held(through(PROXY)))
    assert (review.principal_username, review.principal_issuer) == ("alice@example.com", f"{IDP}#proxy=mcp-server")
    assert (review.proxy_username, review.proxy_subject, review.proxy_issuer) == ("mcp-server", "mcp-server", IDP)

    client.force_login(reviewer("rita"))
    page = client.get(reverse("approvals:detail", args=[review.pk])).content.decode()
    assert 'id="review-proxy">trusted proxy mcp-server' in page and "alice@example.com" in page
    queue = client.get(reverse("approvals:queue")).content.decode()
    assert "alice@example.com via proxy mcp-server on prod" in queue
    api = client.get(f"/approvals/api/reviews/{review.pk}/").json()
    assert (api["principal_username"], api["proxy_username"], api["proxy_subject"]) == (
        "alice@example.com", "mcp-server", "mcp-server")
    out = io.StringIO()
    call_command("review", "show", str(review.pk), stdout=out)
    assert f"trusted proxy mcp-server (mcp-server), issuer {IDP}" in out.getvalue()


def test_an_approval_covers_that_user_through_that_proxy_only(rule):
    review, _ = reviews.open_review(held(through(PROXY)))
    reviews.decide(review.pk, reviewer("rita"), approve=True)
    # Neither alice with her own token nor alice through another proxy is what the reviewer saw.
    for principal in (ALICE_HERSELF, through(OTHER_PROXY)):
        other, settlement = reviews.open_review(held(principal))
        assert settlement is None and other.pk != review.pk
    again, settlement = reviews.open_review(held(through(PROXY)))
    assert again.pk == review.pk and settlement.approved


def test_the_end_user_cannot_approve_what_a_proxy_asked_for_them(rule):
    review, _ = reviews.open_review(held(through(PROXY)))
    with pytest.raises(reviews.ApprovalError) as error:
        reviews.decide(review.pk, reviewer("alice@example.com"), approve=True)
    assert error.value.status == 403 and "own request" in error.value.message
