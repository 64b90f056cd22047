"""An agent replaying, stretching and disguising approvals, and reviewers stepping out of their role.

The gateway holds ``kubectl scale`` and deletes of deployments for review (hold timeout 1 s, so a
held request answers 403 "still pending" and the agent retries, as an agent would).  Reviewers
decide through the REST API or the dashboard, as the people they pretend to be.  Every attempt
ends by checking what reached kubesim: only the one approved request, exactly once.
"""

import hashlib
import json

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from approvals.models import Review, ReviewerProfile, ReviewState
from approvals.tests.factories import reviewer
from tests.adversarial.leaks import PLACEHOLDER
from tests.e2e_approvals.conftest import wait_for_review
from tests.gateway_harness import make_gateway_app

pytestmark = pytest.mark.django_db(transaction=True)

VIEWER_TOKEN = "viewer-token-2b9d"  # viewer-1, group viewers (tests.gateway_harness.AGENT_TOKENS)
SCALE = "/apis/apps/v1/namespaces/shop/deployments/web/scale"
WEB = "/apis/apps/v1/namespaces/shop/deployments/web"
MERGE = [("Content-Type", "application/merge-patch+json")]


@pytest.fixture
def gateway_app():
    return make_gateway_app(hold={"timeout": 1.0, "poll_interval": 0.1})


@pytest.fixture
def held(gateway):
    """Changes to deployments, pods and secrets are held for review, for agents and viewers."""
    from policy.models import Rule

    Rule.objects.create(connection=gateway.connection, order=4, name="review-changes", effect="review",
                        groups=["agents", "viewers"], verbs=["patch", "delete", "deletecollection", "create"],
                        api_groups=["apps", ""],
                        resources=["deployments", "deployments/scale", "secrets", "pods"], namespaces=["*"],
                        names=["*"])
    return gateway


def api_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def rita():
    return api_client(reviewer("rita"))


def approve(client, review, **data):
    return client.post(f"/approvals/api/reviews/{review.pk}/approve/", {"reason": "ok", **data}, format="json")


def pending_after(response, previous=None) -> Review:
    """The request was held: 403 naming a pending review (a new one unless it is ``previous``)."""
    status = response.status_object()
    assert response.status == 403 and status and "still pending" in status["message"], response.body[:400]
    review = wait_for_review()
    assert f"review {review.pk}" in status["message"]
    if previous is not None:
        assert review.pk != previous.pk, "the request was matched to the earlier review"
    return review


def replicas(body=5) -> bytes:
    return json.dumps({"spec": {"replicas": body}}).encode()


def real_patches(cluster) -> list[tuple[str, str]]:
    """Requests that changed the cluster (the reviewers' dry-run previews excluded)."""
    return [(r["method"], r["path"]) for r in cluster.since()
            if r["method"] not in ("GET", "HEAD") and "dryRun=All" not in r["query"]]


def test_an_approval_is_not_usable_by_another_agent(held, raw, rita, cluster):
    cluster.mark()
    review = pending_after(raw("PATCH", SCALE, MERGE, replicas()))
    assert approve(rita, review).status_code == 200
    pending_after(raw("PATCH", SCALE, MERGE, replicas(), token=VIEWER_TOKEN), previous=review)
    assert real_patches(cluster) == []
    assert raw("PATCH", SCALE, MERGE, replicas()).status == 200
    assert real_patches(cluster) == [("PATCH", SCALE)]


def test_an_approval_is_not_usable_through_another_connection_to_the_same_cluster(held, raw, rita, cluster):
    """A second Connection to the same API server, same rules: the approval names its connection."""
    from connections.models import Connection
    from policy.models import Rule
    from tests.gateway_harness import allow_everything_for

    twin = Connection(name="kubesim-twin", server_url=held.connection.server_url, ca_bundle=held.connection.ca_bundle)
    twin.bearer_token = cluster.kubesim.admin_token
    twin.full_clean()
    twin.save()
    allow_everything_for(twin)
    rule = Rule.objects.get(name="review-changes")
    rule.pk, rule.connection = None, twin
    rule.save()
    cluster.mark()
    review = pending_after(raw("PATCH", SCALE, MERGE, replicas(6)))
    assert approve(rita, review).status_code == 200
    pending_after(raw("PATCH", SCALE, MERGE, replicas(6), connection="kubesim-twin"), previous=review)
    assert real_patches(cluster) == []


def test_a_once_approval_is_spent_after_one_use(held, raw, rita, cluster):
    cluster.mark()
    review = pending_after(raw("PATCH", SCALE, MERGE, replicas(7)))
    assert approve(rita, review).status_code == 200
    assert raw("PATCH", SCALE, MERGE, replicas(7)).status == 200
    replay = raw("PATCH", SCALE, [*MERGE, ("Connection", "keep-alive")], replicas(7))
    pending_after(replay, previous=review)
    assert real_patches(cluster) == [("PATCH", SCALE)]


def test_a_window_that_has_ended_covers_nothing(held, raw, rita, cluster):
    from datetime import timedelta

    from django.utils import timezone

    cluster.mark()
    review = pending_after(raw("PATCH", SCALE, MERGE, replicas(3)))
    assert approve(rita, review, scope="window", window_seconds=60).status_code == 200
    assert raw("PATCH", SCALE, MERGE, replicas(4)).status == 200  # inside the window: any body
    Review.objects.filter(pk=review.pk).update(valid_until=timezone.now() - timedelta(seconds=1))
    pending_after(raw("PATCH", SCALE, MERGE, replicas(5)), previous=review)
    assert real_patches(cluster) == [("PATCH", SCALE)]


def test_a_denied_request_retried_identically_is_held_again(held, raw, rita, cluster, kubectl):
    cluster.mark()
    review = pending_after(raw("DELETE", WEB))
    denied = rita.post(f"/approvals/api/reviews/{review.pk}/deny/", {"reason": "no"}, format="json")
    assert denied.status_code == 200
    retry = raw("DELETE", WEB)
    assert retry.status == 403
    review.refresh_from_db()
    assert review.state == ReviewState.DENIED
    assert approve(rita, review).status_code == 409, "a denied review was turned into an approval"
    assert real_patches(cluster) == []
    kubectl("get", "deployment", "web", "-n", "shop")


SPARE = json.dumps({
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "spare", "namespace": "shop"},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "spare"}},
             "template": {"metadata": {"labels": {"app": "spare"}},
                          "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})


SPELLINGS = (WEB + "/", WEB.replace("/web", "/w%65b"), WEB.replace("/web", "/Web"),
             WEB.replace("/apps/v1/", "/apps/v1//"), WEB + "?dryRun=None", WEB.replace("/shop/", "/%73hop/"))


def test_path_spellings_do_not_inherit_an_approval(held, raw, rita, cluster, kubectl):
    """Approve DELETE .../spare, then send it spelled otherwise: refused or held anew, never forwarded under it."""
    kubectl("apply", "-f", "-", input=SPARE)
    cluster.mark()
    review = pending_after(raw("DELETE", WEB.replace("/web", "/spare")))
    assert approve(rita, review).status_code == 200
    for variant in SPELLINGS:
        spelled = variant.replace("/web", "/spare").replace("/w%65b", "/sp%61re").replace("/Web", "/Spare")
        other = raw("DELETE", spelled)
        assert other.status in (400, 403, 404), (spelled, other.body[:300])
        if other.status == 403:
            pending_after(other, previous=review)
    assert [w for w in real_patches(cluster) if w[0] == "DELETE"] == []
    review.refresh_from_db()
    assert review.consumed_at is None
    kubectl("get", "deployment", "spare", "-n", "shop")


def test_method_override_headers_do_not_turn_a_post_into_a_delete(held, raw, cluster, kubectl):
    from policy.models import Rule

    Rule.objects.filter(name="review-changes").update(verbs=["delete", "patch"])  # creates pass unreviewed
    cluster.mark()
    for override in ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"):
        answer = raw("POST", WEB, [(override, "DELETE"), ("Content-Type", "application/json")], b"{}")
        assert answer.status in (400, 403, 404, 405, 409, 422), answer.body[:300]
    assert not [r for r in cluster.since() if r["method"] == "DELETE"]
    kubectl("get", "deployment", "web", "-n", "shop")


YAML_MERGED = b"""\
base: &base {name: nginx}
apiVersion: v1
kind: Pod
metadata:
  <<: *base
  name: evil
spec:
  containers: [{name: c, image: busybox}]
"""
YAML_ONLY_MERGED = b"""\
apiVersion: v1
kind: Pod
metadata:
  <<: {name: evil}
spec:
  containers: [{name: c, image: busybox}]
"""


def test_yaml_merge_keys_do_not_stretch_a_window(held, raw, rita, cluster):
    """A window for pod nginx; YAML that the cluster reads as another pod gets no part of it."""
    yaml_type = [("Content-Type", "application/yaml")]
    nginx = b"apiVersion: v1\nkind: Pod\nmetadata: {name: nginx}\nspec:\n  containers: [{name: c, image: nginx}]\n"
    cluster.mark()
    review = pending_after(raw("POST", "/api/v1/namespaces/shop/pods", yaml_type, nginx))
    assert approve(rita, review, scope="window", window_seconds=900).status_code == 200
    for body in (YAML_MERGED, YAML_ONLY_MERGED):
        answer = raw("POST", "/api/v1/namespaces/shop/pods", yaml_type, body)
        if answer.status == 403:
            other = pending_after(answer, previous=review)
            assert other.name in ("evil", ""), other.name
        else:
            assert answer.status >= 400, "a pod was created under the nginx window"
    assert not [w for w in real_patches(cluster) if w[0] == "POST"]


def test_a_reviewer_cannot_approve_an_agent_that_is_themselves(held, raw, cluster):
    """The agent's identity shows up on a reviewer's second account: as its e-mail in another case,
    or as its subject from another issuer."""
    cluster.mark()
    review = pending_after(raw("PATCH", SCALE, MERGE, replicas(9)))
    twin_email = reviewer("rita-2")
    twin_email.email = "AGENT-1"
    twin_email.save()
    twin_subject = reviewer("rita-3")
    ReviewerProfile.objects.create(user=twin_subject, issuer="https://another-idp.example", subject="agent-1")
    for user in (twin_email, twin_subject):
        refused = approve(api_client(user), review)
        assert refused.status_code == 403 and "their own request" in refused.json()["detail"], user.username
    review.refresh_from_db()
    assert review.state == ReviewState.PENDING and not review.votes.exists()
    assert real_patches(cluster) == []


def test_cross_site_and_out_of_role_decisions_are_refused(held, raw, cluster):
    from policy.models import Rule

    Rule.objects.filter(name="review-changes").update(reviewer_groups=["sre"])
    cluster.mark()
    review = pending_after(raw("PATCH", SCALE, MERGE, replicas(2)))
    sre = reviewer("sam", "sre")
    forged = Client(enforce_csrf_checks=True, HTTP_ORIGIN="https://evil.example")
    forged.force_login(sre)
    assert forged.post(f"/approvals/api/reviews/{review.pk}/approve/", {"reason": "csrf"},
                       content_type="application/json").status_code == 403
    assert forged.post(f"/approvals/reviews/{review.pk}/decide/",
                       {"decision": "approve", "reason": "csrf", "scope": "once"}).status_code == 403

    outsider = reviewer("olga")  # a reviewer, but not in the rule's reviewer groups
    assert approve(api_client(outsider), review).status_code == 403
    page = Client()
    page.force_login(outsider)
    page.post(f"/approvals/reviews/{review.pk}/decide/", {"decision": "approve", "reason": "x", "scope": "once"})

    watcher = User.objects.create_user("vic", password="pw")
    watcher.user_permissions.add(Permission.objects.get(codename="view_review"))
    assert approve(api_client(watcher), review).status_code == 403
    assert approve(api_client(sre), review, scope="window", window_seconds=10 ** 9).status_code == 400
    review.refresh_from_db()
    assert review.state == ReviewState.PENDING and not review.votes.exists()
    assert real_patches(cluster) == []


def test_a_reviewer_cannot_recover_a_held_secret_from_its_digest(held, agent, cluster, secrets):
    """A held Secret create shows its body masked next to a digest of the exact bytes.  A curious
    reviewer rebuilds the bytes around each guess (kubectl sends compact JSON with sorted keys and a
    newline) and compares, offline, as often as they like."""
    weak = "Winter2025!"
    secrets.add(weak)
    manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "held", "namespace": "shop"},
                "stringData": {"password": weak}}
    agent("create", "-f", "-", input=json.dumps(manifest), check=False)
    review = wait_for_review()
    curious = reviewer("curious")
    shown = api_client(curious).get(f"/approvals/api/reviews/{review.pk}/").json()
    assert json.loads(shown["body"])["stringData"]["password"] == PLACEHOLDER
    page = Client()
    page.force_login(curious)
    assert shown["body_sha256"] in page.get(f"/approvals/reviews/{review.pk}/").content.decode()
    for guess in ("password", "hunter2", "Summer2024!", weak, "Winter2026!"):
        candidate = json.loads(shown["body"])
        candidate["stringData"]["password"] = guess
        rebuilt = json.dumps(candidate, separators=(",", ":"), sort_keys=True).encode()
        for form in (rebuilt, rebuilt + b"\n"):
            assert hashlib.sha256(form).hexdigest() != shown["body_sha256"], f"the digest confirms {guess!r}"
    assert real_patches(cluster) == []


def test_a_held_query_shows_reviewers_no_password(held, raw, cluster, secrets):
    """Reviewers read the held query: a password or token in a selector or option is masked there too."""
    secrets.add("Hunter2-held-7e1a")
    query = ("labelSelector=app%3Dweb%2Cpassword%3DHunter2-held-7e1a&fieldSelector=metadata.namespace%3Dshop"
             "&access_token=Hunter2-held-7e1a")
    cluster.mark()
    review = pending_after(raw("DELETE", f"/api/v1/namespaces/shop/pods?{query}"))
    assert review.query.startswith("labelSelector=") and "&fieldSelector=metadata.namespace%3Dshop&" in review.query
    shown = api_client(reviewer("rita")).get(f"/approvals/api/reviews/{review.pk}/").json()
    assert "Hunter2" not in shown["query"] and "AIRLOCK-MASKED" in shown["query"]
    assert real_patches(cluster) == []
