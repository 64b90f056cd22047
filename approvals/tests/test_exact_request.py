"""An approval covers exactly the request the reviewer saw (approvals.fingerprint), approved through the API.

The attacker lets request A wait, a reviewer approves A from what the
dashboard shows, and the agent then sends B, a request that differs from A
in something kube-apiserver reads.  B must be held for a review of its own,
and A's approval must still be there for A.
"""

import pytest
from django.test import Client

from approvals import reviews
from approvals.hold import held_request
from approvals.models import Review, ReviewState
from approvals.tests.factories import connection, gateway_request, review_rule, reviewer
from approvals.tests.test_api import client_for
from policy.evaluate import evaluate
from policy.models import Rule

pytestmark = pytest.mark.django_db

PODS = "/k8s/prod/api/v1/namespaces/shop/pods"
DEPLOYMENT = "/k8s/prod/apis/apps/v1/namespaces/shop/deployments/web"
EXEC = PODS + "/web/exec"
STRATEGIC, MERGE = "application/strategic-merge-patch+json", "application/merge-patch+json"
# The same bytes: a strategic merge keeps the other containers, a merge patch replaces the list.
CONTAINERS_PATCH = b'{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"web:2"}]}}}}'


@pytest.fixture
def rita():
    review_rule(connection(), verbs=["*"], resources=["*", "*/*"])
    return client_for(reviewer("rita"))


def held(path, *, method="GET", query="", body=None, content_type="application/json", headers=(), kind="http"):
    request = gateway_request(path, method=method, query=query, body=body, content_type=content_type,
                              headers=headers, kind=kind)
    decision = evaluate([r.compile("prod") for r in Rule.objects.all()], request.principal, request.info)
    assert decision.effect == "review"
    return held_request(request, decision)


def approve(client, review, **data):
    return client.post(f"/approvals/api/reviews/{review.pk}/approve/", {"reason": "looked at it", **data},
                       format="json")


VARIANTS = {
    "repeated labelSelector swapped (the first one wins)": (
        dict(path=PODS, method="DELETE", query="labelSelector=app%3Dold&labelSelector=app%3Dweb"),
        dict(path=PODS, method="DELETE", query="labelSelector=app%3Dweb&labelSelector=app%3Dold"),
    ),
    "a repeated parameter appended": (
        dict(path=PODS, method="DELETE", query="labelSelector=app%3Dold"),
        dict(path=PODS, method="DELETE", query="labelSelector=app%3Dold&labelSelector=app%3Dweb"),
    ),
    "same patch bytes, merge patch instead of strategic merge": (
        dict(path=DEPLOYMENT, method="PATCH", body=CONTAINERS_PATCH, content_type=STRATEGIC),
        dict(path=DEPLOYMENT, method="PATCH", body=CONTAINERS_PATCH, content_type=MERGE),
    ),
    "exec argv in another order (cp a b, then cp b a)": (
        dict(path=EXEC, kind="websocket", query="command=cp&command=a&command=b&container=app&stdout=true"),
        dict(path=EXEC, kind="websocket", query="command=cp&command=b&command=a&container=app&stdout=true"),
    ),
    "another User-Agent (the default field manager)": (
        dict(path=DEPLOYMENT, method="PATCH", body=b'{"spec":{"replicas":3}}', content_type=MERGE,
             headers=[("user-agent", "kubectl/v1.32.4")]),
        dict(path=DEPLOYMENT, method="PATCH", body=b'{"spec":{"replicas":3}}', content_type=MERGE,
             headers=[("user-agent", "manager-of-my-choice")]),
    ),
    "another Content-Type in front of it (the first one is read)": (
        dict(path=DEPLOYMENT, method="PATCH", body=CONTAINERS_PATCH, content_type=STRATEGIC),
        dict(path=DEPLOYMENT, method="PATCH", body=CONTAINERS_PATCH, content_type=MERGE,
             headers=[("content-type", STRATEGIC)]),
    ),
    "another User-Agent in front of it": (
        dict(path=DEPLOYMENT, method="PATCH", body=b'{"spec":{"replicas":3}}', content_type=MERGE,
             headers=[("user-agent", "kubectl/v1.32.4")]),
        dict(path=DEPLOYMENT, method="PATCH", body=b'{"spec":{"replicas":3}}', content_type=MERGE,
             headers=[("user-agent", "manager-of-my-choice"), ("user-agent", "kubectl/v1.32.4")]),
    ),
}


@pytest.mark.parametrize("a, b", VARIANTS.values(), ids=VARIANTS.keys())
def test_a_once_approval_does_not_cover_a_request_that_differs_in_what_the_cluster_reads(rita, a, b):
    review, _ = reviews.open_review(held(**a))
    assert approve(rita, review).status_code == 200

    other, settlement = reviews.open_review(held(**b))
    assert settlement is None, "B was released under A's approval"
    assert other.pk != review.pk and other.state == ReviewState.PENDING

    retried, settlement = reviews.open_review(held(**a))
    assert retried.pk == review.pk and settlement.approved, "A's approval is still A's"


def test_repeats_of_a_single_value_header_are_held_as_the_cluster_reads_them(rita):
    """kube-apiserver reads the first User-Agent and Content-Type, and the gateway forwards only those:
    a request that repeats them after the first is the request the reviewer approved, and shows as it."""
    plain = dict(path=DEPLOYMENT, method="PATCH", body=CONTAINERS_PATCH, content_type=STRATEGIC,
                 headers=[("user-agent", "kubectl/v1.32.4")])
    repeated = dict(plain, headers=[("user-agent", "kubectl/v1.32.4"), ("content-type", MERGE),
                                    ("user-agent", "manager-of-my-choice")])
    review, _ = reviews.open_review(held(**repeated))
    shown = rita.get(f"/approvals/api/reviews/{review.pk}/").json()
    assert shown["headers"] == [["content-type", STRATEGIC], ["user-agent", "kubectl/v1.32.4"]]
    assert approve(rita, review).status_code == 200
    same, settlement = reviews.open_review(held(**plain))
    assert same.pk == review.pk and settlement.approved


def test_the_reviewer_sees_the_query_in_order_and_the_content_type(rita):
    review, _ = reviews.open_review(held(**VARIANTS["repeated labelSelector swapped (the first one wins)"][0]))
    shown = rita.get(f"/approvals/api/reviews/{review.pk}/").json()
    assert shown["query"] == "labelSelector=app%3Dold&labelSelector=app%3Dweb"
    patch, _ = reviews.open_review(held(path=DEPLOYMENT, method="PATCH", body=CONTAINERS_PATCH, content_type=MERGE,
                                        headers=[("user-agent", "kubectl/v1.32.4")]))
    shown = rita.get(f"/approvals/api/reviews/{patch.pk}/").json()
    assert shown["headers"] == [["content-type", MERGE], ["user-agent", "kubectl/v1.32.4"]]
    page = signed_in_page(patch)
    assert f"content-type: {MERGE}" in page and 'id="body-sha256"' in page
    page = signed_in_page(review)
    assert "<li><code>labelSelector</code> = <code>app=old</code></li><li><code>labelSelector</code>" in page


def signed_in_page(review) -> str:
    client = Client()
    client.force_login(reviewer(f"page-{review.pk}"))
    return client.get(f"/approvals/reviews/{review.pk}/").content.decode()


SECRET_ARGV = "command=mysql&command=--password&command=Hunter2-Sup3r&command=ghp_0123456789abcdefghijABCDEFGHIJ012345"


def test_exec_command_words_are_stored_and_shown_masked_and_the_approval_still_matches(rita):
    request = dict(path=EXEC, kind="websocket", query=SECRET_ARGV + "&container=app&stdout=true")
    review, _ = reviews.open_review(held(**request))
    row = Review.objects.filter(pk=review.pk).values().get()
    assert not any("Hunter2" in str(v) or "ghp_0123" in str(v) for v in row.values())
    assert review.query == ("command=mysql&command=--password&command=%2A%2AAIRLOCK-MASKED%2A%2A"
                            "&command=%2A%2AAIRLOCK-MASKED%2A%2A&container=app&stdout=true")
    assert "Hunter2" not in rita.get(f"/approvals/api/reviews/{review.pk}/").content.decode()
    assert "Hunter2" not in signed_in_page(review)
    assert approve(rita, review).status_code == 200
    retried, settlement = reviews.open_review(held(**request))
    assert retried.pk == review.pk and settlement.approved
    other = dict(request, query=request["query"].replace("Hunter2", "Hunter3"))
    assert reviews.open_review(held(**other))[1] is None, "a different masked word is another request"


POD = b'{"apiVersion":"v1","kind":"Pod","metadata":{"name":"%s"},"spec":{"containers":[{"name":"c","image":"nginx"}]}}'
EVIL = (b'{"apiVersion":"v1","kind":"Pod","metadata":{"name":"evil"},"spec":{"hostPID":true,"containers":[{"name":"c",'
        b'"image":"busybox","securityContext":{"privileged":true},"volumeMounts":[{"name":"root","mountPath":"/host"}]}],'
        b'"volumes":[{"name":"root","hostPath":{"path":"/"}}]}}')


def test_a_window_for_one_create_covers_that_name_only(rita):
    review, _ = reviews.open_review(held(PODS, method="POST", body=POD % b"nginx"))
    assert approve(rita, review, scope="window", window_seconds=900).status_code == 200

    evil, settlement = reviews.open_review(held(PODS, method="POST", body=EVIL))
    assert settlement is None and evil.pk != review.pk, "a privileged pod was created under the nginx window"
    review.refresh_from_db()
    assert review.description == 'create pods "nginx" in namespace "shop"' and review.name == "nginx"
    generated = POD.replace(b'"name":"%s"', b'"generateName":"nginx-"')
    assert reviews.open_review(held(PODS, method="POST", body=generated))[1] is None
    again, settlement = reviews.open_review(held(PODS, method="POST", body=POD % b"nginx"))
    assert again.pk == review.pk and settlement.approved and settlement.scope == "window"


@pytest.mark.parametrize("body, content_type", [
    (b'{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"job-"},"spec":{}}', "application/json"),
    (b'{"metadata":{"name":"nginx"},"metadata":{"name":"evil"}}', "application/json"),
    (b'{"metadata":{"name":7}}', "application/json"),
    (b"metadata: {name: nginx}\nmetadata: {name: evil}\n", "application/yaml"),
    (b"\x0a\x03k8s", "application/cbor"),
])
def test_a_create_without_one_fixed_name_can_only_be_approved_once(rita, body, content_type):
    review, _ = reviews.open_review(held(PODS, method="POST", body=body, content_type=content_type))
    assert review.window_key == ""
    refused = approve(rita, review, scope="window", window_seconds=900)
    assert refused.status_code == 400
    assert "cannot be approved for a time window" in refused.json()["detail"]
    assert "approve it once" in refused.json()["detail"]
    assert rita.get(f"/approvals/api/reviews/{review.pk}/").json()["window_refusal"].startswith("the create has no")
    page = signed_in_page(review)
    assert 'id="window-refused"' in page and 'name="scope" value="once"' in page and "id_scope" not in page
    assert approve(rita, review).status_code == 200


def test_a_yaml_create_is_bound_to_its_name():
    review_rule(connection(), verbs=["*"], resources=["*"])
    yaml_pod = b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: nginx\n"
    review, _ = reviews.open_review(held(PODS, method="POST", body=yaml_pod, content_type="application/yaml"))
    json_pod, _ = reviews.open_review(held(PODS, method="POST", body=POD % b"nginx"))
    assert review.name == "nginx" and review.window_key == json_pod.window_key != ""


def test_a_deletecollection_cannot_be_approved_for_a_window(rita):
    review, _ = reviews.open_review(held(PODS, method="DELETE", query="labelSelector=app%3Dold"))
    refused = approve(rita, review, scope="window", window_seconds=900)
    assert refused.status_code == 400 and "deletes every object its query selects" in refused.json()["detail"]


def test_a_window_for_a_patch_does_not_cover_a_subresource(rita):
    review, _ = reviews.open_review(held(DEPLOYMENT, method="PATCH", body=b'{"spec":{"replicas":3}}',
                                         content_type=MERGE))
    assert approve(rita, review, scope="window", window_seconds=900).status_code == 200
    scale, settlement = reviews.open_review(held(DEPLOYMENT + "/scale", method="PATCH",
                                                 body=b'{"spec":{"replicas":300}}', content_type=MERGE))
    assert settlement is None and scale.pk != review.pk
    same, settlement = reviews.open_review(held(DEPLOYMENT, method="PATCH", body=b'{"spec":{"replicas":4}}',
                                                content_type=MERGE))
    assert same.pk == review.pk and settlement.approved
