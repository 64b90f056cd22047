"""An approval covers exactly what the reviewer saw: real kubectl (raw HTTP where kubectl cannot send the
variant) through the gateway to kubesim, the reviewer deciding through the REST API.

The attacker's move each time: let request A time out, have it approved, then send B, which differs from A
in something the cluster reads.  B must be held for its own review and must not reach the cluster.
"""

import ssl
import time

import httpx
import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from approvals.models import PreviewState, Review
from approvals.tests.factories import reviewer
from tests.e2e_approvals.conftest import wait_for_review
from tests.gateway_harness import AGENT_TOKEN

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def hold_timeout():
    return 1.0


@pytest.fixture
def rules(gateway):
    from policy.models import Rule

    Rule.objects.create(connection=gateway.connection, order=4, name="review-writes", effect="review",
                        groups=["agents"], verbs=["create", "patch", "deletecollection"], api_groups=["*"],
                        resources=["pods", "deployments"], namespaces=["*"], names=["*"])
    Rule.objects.create(connection=gateway.connection, order=4, name="review-exec", effect="review",
                        groups=["agents"], verbs=["get", "create"], api_groups=[""], resources=["pods/exec"],
                        namespaces=["*"], names=["*"])
    return gateway


@pytest.fixture
def agent(rules, kubectl):
    def run(*args, **kwargs):
        return kubectl(*args, kubeconfig=rules.kubeconfig(), check=False, **kwargs)

    return run


@pytest.fixture
def approve():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=reviewer('rita')).key}")

    def decide(review, **data):
        return client.post(f"/approvals/api/reviews/{review.pk}/approve/", {"reason": "seen it", **data},
                           format="json")

    return decide


def held_once(result, previous=None) -> Review:
    """The request was held and timed out: the newest pending review is its own (not ``previous``)."""
    assert result.returncode != 0 and "is still pending" in result.stderr, result.stderr
    review = wait_for_review()
    assert previous is None or review.pk != previous.pk
    assert f"review {review.pk} is still pending" in result.stderr
    return review


PATCH = '{"spec":{"template":{"spec":{"containers":[{"name":"api","image":"ghcr.io/example/payments-api:1.9.1"}]}}}}'


def containers(kubectl):
    return kubectl("get", "deployment", "api", "-n", "payments", "-o",
                   "jsonpath={.spec.template.spec.containers[*].name}").stdout.split()


def test_the_same_patch_bytes_as_a_merge_patch_are_held_again(agent, approve, kubectl):
    strategic = ("patch", "deployment", "api", "-n", "payments", "--type", "strategic", "-p", PATCH)
    review = held_once(agent(*strategic))
    assert approve(review).status_code == 200

    merge = agent("patch", "deployment", "api", "-n", "payments", "--type", "merge", "-p", PATCH)
    held_once(merge, previous=review)
    assert containers(kubectl) == ["api", "metrics"], "the merge patch dropped a container"
    assert ["content-type", "application/merge-patch+json"] in wait_for_review().headers
    review.refresh_from_db()
    assert ["content-type", "application/strategic-merge-patch+json"] in review.headers

    assert agent(*strategic).returncode == 0
    assert containers(kubectl) == ["api", "metrics"]


def test_exec_argv_in_another_order_is_held_again(agent, approve, kubesim):
    sandbox = kubesim.sandbox_dir("payments", "debug-shell")
    sandbox.mkdir(parents=True, exist_ok=True)
    (sandbox / "a").write_text("reviewed\n")
    (sandbox / "b").write_text("precious\n")
    copy_a_to_b = ("exec", "debug-shell", "-n", "payments", "--", "cp", "a", "b")
    review = held_once(agent(*copy_a_to_b))
    assert review.query.startswith("command=cp&command=a&command=b&")
    assert approve(review).status_code == 200

    held_once(agent("exec", "debug-shell", "-n", "payments", "--", "cp", "b", "a"), previous=review)
    assert (sandbox / "a").read_text() == "reviewed\n"

    assert agent(*copy_a_to_b).returncode == 0
    assert (sandbox / "b").read_text() == "reviewed\n"


def pods_with(kubectl, selector):
    return kubectl("get", "pods", "-n", "shop", "-l", selector, "-o", "name").stdout.split()


def test_swapped_repeated_label_selectors_are_held_again(rules, approve, kubectl, kubesim):
    """kubectl sends one labelSelector; an agent's own client can repeat it, and the cluster reads the first."""
    web, cart = pods_with(kubectl, "app=web"), pods_with(kubectl, "app=cart")
    assert web and cart
    client = httpx.Client(verify=ssl.create_default_context(cafile=str(rules.ca_file)), timeout=30,
                          headers={"Authorization": f"Bearer {AGENT_TOKEN}"})
    pods = rules.server_url() + "/api/v1/namespaces/shop/pods"
    first = client.delete(pods + "?labelSelector=app%3Dcart&labelSelector=app%3Dweb")
    assert first.status_code == 403
    review = wait_for_review()
    assert review.query == "labelSelector=app%3Dcart&labelSelector=app%3Dweb"
    assert approve(review).status_code == 200

    for variant in ("labelSelector=app%3Dweb&labelSelector=app%3Dcart",
                    "labelSelector=app%3Dcart&labelSelector=app%3Dweb&labelSelector=app%3Dweb"):
        swapped = client.delete(pods + "?" + variant)
        assert swapped.status_code == 403 and "is still pending" in swapped.json()["message"], variant
        assert wait_for_review().pk != review.pk
    # A dry run of it is a request of its own, never held: the review rule denies it.
    dry = client.delete(pods + "?labelSelector=app%3Dcart&labelSelector=app%3Dweb&dryRun=All")
    assert dry.status_code == 403 and "a dry run is never held" in dry.json()["message"]
    assert pods_with(kubectl, "app=web") == web

    released = client.delete(pods + "?labelSelector=app%3Dcart&labelSelector=app%3Dweb")
    assert released.status_code == 200
    assert {item["metadata"]["labels"]["app"] for item in released.json()["items"]} == {"cart"}
    assert pods_with(kubectl, "app=web") == web
    client.close()
    # What reached the cluster: the approved query as held (the dry runs only append the switch).
    deletes = [r["query"] for r in kubesim.requests() if r["method"] == "DELETE"]
    assert [q for q in deletes if "dryRun" not in q] == ["labelSelector=app%3Dcart&labelSelector=app%3Dweb"]
    assert "labelSelector=app%3Dcart&labelSelector=app%3Dweb&dryRun=All" in deletes


POD = """apiVersion: v1
kind: Pod
metadata: {name: nginx, namespace: shop}
spec:
  containers: [{name: nginx, image: "nginx:1.27"}]
"""
EVIL = """apiVersion: v1
kind: Pod
metadata: {name: evil, namespace: shop}
spec:
  hostPID: true
  containers:
  - name: shell
    image: busybox:1.37
    securityContext: {privileged: true}
    volumeMounts: [{name: host, mountPath: /host}]
  volumes: [{name: host, hostPath: {path: /}}]
"""
GENERATED = """apiVersion: v1
kind: Pod
metadata: {generateName: job-, namespace: shop}
spec:
  containers: [{name: job, image: "busybox:1.37"}]
"""


def test_a_window_for_one_create_does_not_cover_another_pod(agent, approve, kubectl):
    review = held_once(agent("create", "-f", "-", input=POD))
    assert approve(review, scope="window", window_seconds=900).status_code == 200
    assert agent("create", "-f", "-", input=POD).returncode == 0

    held_once(agent("create", "-f", "-", input=EVIL), previous=review)
    missing = kubectl("get", "pod", "evil", "-n", "shop", check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr
    review.refresh_from_db()
    assert review.description == 'create pods "nginx" in namespace "shop"'


def test_a_create_with_only_generate_name_cannot_get_a_window(agent, approve):
    review = held_once(agent("create", "-f", "-", input=GENERATED))
    refused = approve(review, scope="window", window_seconds=900)
    assert refused.status_code == 400
    assert refused.json()["detail"] == (
        f"review {review.pk} cannot be approved for a time window: the create has no fixed metadata.name "
        "(generateName, or a body the gateway cannot read), so a window would cover creating any object; "
        "approve it once (exactly this request)"
    )
    review.refresh_from_db()
    assert review.state == "pending" and not review.votes.exists()


def test_the_preview_of_a_held_delete_deletes_nothing(gateway, review_deletes, kubectl):
    """kubectl sends DeleteOptions in the body, so the cluster ignores a dryRun in the query."""
    proc = kubectl.popen("delete", "deployment", "web", "-n", "shop", "--wait=false", kubeconfig=gateway.kubeconfig())
    review = wait_for_review()
    deadline = time.monotonic() + 30
    while review.preview_state != PreviewState.DONE:
        assert time.monotonic() < deadline, "no preview"
        time.sleep(0.1)
        review.refresh_from_db()
    assert review.preview_summary == "would delete deployments/web", review.preview_error
    kubectl("get", "deployment", "web", "-n", "shop")
    proc.communicate(timeout=30)
