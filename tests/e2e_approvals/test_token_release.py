"""Real `kubectl create token` held for review: the reviewer decides whether the agent gets the token.

Withheld: the approved request never reaches the cluster (no token is minted) and kubectl prints
why.  Released: kubectl prints the real token, and the audit trail, the review and its history
hold it nowhere (the recorded response keeps it masked, with a note of who released it).
"""

import json

import jwt
import pytest

from approvals import reviews
from approvals.tests.factories import reviewer
from masking import PLACEHOLDER
from tests.e2e_approvals.conftest import wait_for_review
from tests.e2e_approvals.test_hold_kubectl import finish, wait_for_audit

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN_PATH = "/api/v1/namespaces/shop/serviceaccounts/deployer/token"


@pytest.fixture
def review_tokens(cluster_connection):
    from policy.models import Rule

    return Rule.objects.create(
        connection=cluster_connection, order=4, name="review-serviceaccount-tokens", effect="review",
        groups=["agents"], verbs=["*"], api_groups=[""], resources=["serviceaccounts/token"], namespaces=["*"],
        names=["*"],
    )


def minted(kubesim):
    return [r for r in kubesim.requests() if r["method"] == "POST" and r["path"] == TOKEN_PATH]


def test_a_withheld_token_is_never_minted(agent, kubesim, review_tokens):
    proc = agent.popen("create", "token", "deployer", "-n", "shop")
    review = wait_for_review(rule_name="review-serviceaccount-tokens")
    assert review.is_token_request and review.description.startswith("create serviceaccounts")
    reviews.decide(review.pk, reviewer("rita"), approve=True, reason="not this one")
    code, out, err = finish(proc)
    assert code != 0 and out == ""
    assert (f"review {review.pk} was approved (rita) but the reviewer withheld the ServiceAccount token: "
            "the request was not sent to the cluster and no token was minted") in err
    assert err.startswith("error: failed to create token: airlock: ")
    assert minted(kubesim) == []
    complete = wait_for_audit(stage="ResponseComplete", review_id=str(review.pk))
    assert complete.response_code == 403 and "withheld" in complete.response_message
    review.refresh_from_db()
    assert (review.state, review.release_token) == ("approved", False)
    assert review.events.get(kind="approved").details["release_token"] is False


def test_a_released_token_reaches_the_agent_and_no_record(agent, kubesim, review_tokens):
    from audit.models import AuditEvent

    proc = agent.popen("create", "token", "deployer", "-n", "shop")
    review = wait_for_review(rule_name="review-serviceaccount-tokens")
    reviews.decide(review.pk, reviewer("rita"), approve=True, reason="deploy job", release_token=True)
    code, out, err = finish(proc)
    assert code == 0, err
    token = out.strip()
    assert token != PLACEHOLDER
    assert jwt.decode(token, options={"verify_signature": False})["sub"] == "system:serviceaccount:shop:deployer"
    assert len(minted(kubesim)) == 1

    complete = wait_for_audit(stage="ResponseComplete", review_id=str(review.pk))
    assert complete.response_code == 201
    assert complete.response_message == (f"airlock: the ServiceAccount token was released to the agent by review "
                                         f"{review.pk} (approved by rita); masked here")
    recorded = json.loads(bytes(complete.response_body))
    assert recorded["kind"] == "TokenRequest" and recorded["status"]["token"] == PLACEHOLDER
    assert complete.masking_counts.get("token-request") == 1
    assert complete.bytes_out > len(bytes(complete.response_body))  # the agent got the longer, real token
    review.refresh_from_db()
    assert review.release_token and review.events.get(kind="approved").details["release_token"] is True
    for row in AuditEvent.objects.all():
        stored = json.dumps({f.name: str(getattr(row, f.name)) for f in row._meta.fields})
        assert token not in stored and token.split(".")[2] not in stored
    for row in [review, *review.events.all(), *review.votes.all()]:
        assert token.split(".")[2] not in json.dumps({f.name: str(getattr(row, f.name)) for f in row._meta.fields})


def test_a_rule_that_unmasks_tokens_keeps_them_out_of_the_audit_trail(agent, cluster_connection):
    """Without a review, a rule with maskSecrets false releases the token; the record still masks it."""
    from audit.models import AuditEvent
    from policy.models import Rule

    Rule.objects.create(
        connection=cluster_connection, order=4, name="tokens-unmasked", effect="allow", groups=["agents"],
        verbs=["create"], api_groups=[""], resources=["serviceaccounts/token"], namespaces=["shop"],
        names=["deployer"], mask_secrets=False,
    )
    token = agent("create", "token", "deployer", "-n", "shop").stdout.strip()
    assert token.count(".") == 2 and token != PLACEHOLDER
    complete = wait_for_audit(stage="ResponseComplete", object_subresource="token")
    assert complete.response_message == ('airlock: the ServiceAccount token was released to the agent by rule '
                                         '"tokens-unmasked" (maskSecrets: false); masked here')
    assert json.loads(bytes(complete.response_body))["status"]["token"] == PLACEHOLDER
    assert not [row.pk for row in AuditEvent.objects.all() if token.split(".")[2].encode() in bytes(row.response_body)]
