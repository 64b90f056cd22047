"""The dry-run preview: which calls, masking, the diff, and the Holder storing it (cluster: httpx.MockTransport)."""

import asyncio
import dataclasses
import json

import httpx
import pytest
from channels.db import database_sync_to_async

from approvals import preview, reviews
from approvals.hold import Holder, held_request
from approvals.models import PreviewState, Review
from approvals.tests.factories import connection, gateway_request, review_rule
from policy.evaluate import Decision

DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": "web", "namespace": "shop", "managedFields": [{"manager": "kubectl"}]},
              "spec": {"replicas": 2, "template": {"spec": {"containers": [
                  {"name": "web", "env": [{"name": "API_TOKEN", "value": "ghp_0123456789abcdefghijABCDEFGHIJ012345"}]}]}}}}
REVIEW = Decision("review", 1, "hold-writes", "matched", True, False)


def held(path="/k8s/prod/apis/apps/v1/namespaces/shop/deployments/web", *, method="PATCH",
         body=b'{"spec":{"replicas":5}}', query="fieldManager=kubectl-patch",
         content_type="application/strategic-merge-patch+json"):
    request = gateway_request(path, method=method, body=body, query=query, content_type=content_type)
    return held_request(request, REVIEW)


class Upstream:
    name = "prod"
    server_url = "https://cluster.test"
    impersonates = True
    impersonation_user_prefix = "airlock:"

    def auth_headers(self):
        return {"Authorization": "Bearer cluster-credential"}


def cluster(answers, seen):
    def handler(request):
        seen.append(request)
        status, body = answers[request.method]
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler)


def test_dry_run_target_keeps_the_query_as_sent_and_appends_the_switch():
    assert preview.dry_run_target("/p?labelSelector=b&labelSelector=a&dryRun=Bogus") == (
        "/p?labelSelector=b&labelSelector=a&dryRun=Bogus&dryRun=All"
    )
    assert preview.dry_run_target("/p") == "/p?dryRun=All"


def test_plan_refuses_what_it_cannot_preview():
    assert "does not change" in preview.plan(held(method="GET", body=None))
    assert "not available" in preview.plan(held(body=None))
    current, dry = preview.plan(held(method="DELETE", body=None, query=""))
    assert current.target == "/apis/apps/v1/namespaces/shop/deployments/web" and dry.body is None
    assert dry.target.endswith("?dryRun=All")


@pytest.mark.asyncio
async def test_patch_preview_diffs_current_against_the_dry_run_as_the_agent():
    after = json.loads(json.dumps(DEPLOYMENT))
    after["spec"]["replicas"] = 5
    seen = []
    result = await preview.run(held(), Upstream(), transport=cluster({"GET": (200, DEPLOYMENT), "PATCH": (200, after)}, seen))
    assert result.summary == "would change deployments/web" and not result.error
    assert "-  replicas: 2\n+  replicas: 5\n" in result.diff and "managedFields" not in result.diff
    patch = seen[1]
    assert str(patch.url) == ("https://cluster.test/apis/apps/v1/namespaces/shop/deployments/web"
                              "?fieldManager=kubectl-patch&dryRun=All")
    assert patch.headers["content-type"] == "application/strategic-merge-patch+json"
    assert patch.content == b'{"spec":{"replicas":5}}'
    assert patch.headers["impersonate-user"] == "airlock:agent-1" and patch.headers["impersonate-group"] == "agents"


@pytest.mark.asyncio
async def test_secret_values_never_reach_the_diff():
    secret = {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "db"}, "data": {"password": "aHVudGVyMg=="}}
    result = await preview.run(
        held("/k8s/prod/api/v1/namespaces/shop/secrets/db", method="DELETE", body=None, query=""),
        Upstream(), transport=cluster({"GET": (200, secret), "DELETE": (200, secret)}, []),
    )
    assert result.summary == "would delete secrets/db"
    assert "aHVudGVyMg==" not in result.diff and "password" in result.diff


@pytest.mark.asyncio
async def test_refusals_and_unreachable_clusters_are_reported_not_raised():
    invalid = {"kind": "Status", "reason": "Invalid", "message": "spec.replicas: must be >= 0"}
    result = await preview.run(held(), Upstream(), transport=cluster({"GET": (200, DEPLOYMENT), "PATCH": (422, invalid)}, []))
    assert result.summary == "the dry run was refused" and "must be >= 0" in result.error

    def down(request):
        raise httpx.ConnectError("refused")

    result = await preview.run(held(), Upstream(), transport=httpx.MockTransport(down))
    assert result.error == "the cluster could not be asked (ConnectError)"


@pytest.mark.asyncio
async def test_an_answer_equal_to_the_current_object_is_reported_as_such_never_as_no_change():
    scale = {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": "web", "namespace": "shop"},
             "spec": {"replicas": 2}, "status": {"replicas": 2}}
    request = held("/k8s/prod/apis/apps/v1/namespaces/shop/deployments/web/scale", body=b'{"spec":{"replicas":3}}',
                   content_type="application/merge-patch+json")
    result = await preview.run(request, Upstream(), transport=cluster({"GET": (200, scale), "PATCH": (200, scale)}, []))
    assert result.summary == "the cluster's dry-run answer equals the current deployments/web"
    assert "no change" not in result.summary and not result.diff


def test_deletecollection_lists_the_names():
    info = held("/k8s/prod/api/v1/namespaces/shop/pods", method="DELETE", body=None).info
    result = preview.describe(info, None, {"items": [{"metadata": {"name": "b"}}, {"metadata": {"name": "a"}}]})
    assert result.summary == "would delete 2 object(s): a, b"


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_first_holder_stores_the_preview_once():
    conn = await database_sync_to_async(connection)()
    await database_sync_to_async(review_rule)(conn)

    async def upstream(name):
        return Upstream()

    seen = []
    holder = Holder(connections=upstream, transport=cluster({"GET": (200, DEPLOYMENT), "DELETE": (200, DEPLOYMENT)}, seen))
    request = held(method="DELETE", body=b"{}", query="", content_type="application/json")
    review, _ = await database_sync_to_async(reviews.open_review)(request)
    task = await holder.start_preview(request, review.pk)
    assert await holder.start_preview(request, review.pk) is None
    await asyncio.wait_for(task, 10)
    stored = await Review.objects.aget(pk=review.pk)
    assert stored.preview_state == PreviewState.DONE and stored.preview_summary == "would delete deployments/web"
    assert "-  replicas: 2" in stored.preview_diff and "API_TOKEN" in stored.preview_diff
    assert "ghp_0123456789" not in stored.preview_diff
    assert [r.method for r in seen] == ["GET", "DELETE"] and not holder._background


@pytest.mark.asyncio
async def test_a_delete_with_delete_options_asks_for_the_dry_run_in_its_body():
    """kube-apiserver reads DeleteOptions from a non-empty body and then ignores the query: ``?dryRun=All``
    next to kubectl's ``{"propagationPolicy":"Background"}`` would delete for real while the review waits."""
    seen = []
    request = held(method="DELETE", body=b'{"propagationPolicy":"Background"}', query="gracePeriodSeconds=0",
                   content_type="application/json")
    await preview.run(request, Upstream(), transport=cluster({"GET": (200, DEPLOYMENT), "DELETE": (200, {})}, seen))
    dry = seen[1]
    assert dry.method == "DELETE" and json.loads(dry.content) == {"propagationPolicy": "Background", "dryRun": ["All"]}
    assert dry.headers["content-type"] == "application/json"
    assert "not JSON" in preview.plan(held(method="DELETE", body=b"dryRun: []", content_type="application/yaml"))


@pytest.mark.asyncio
async def test_the_dry_run_is_the_held_request_with_only_the_switch_added():
    seen = []
    request = held(query="fieldManager=a&labelSelector=x&fieldManager=b", content_type="application/merge-patch+json")
    await preview.run(request, Upstream(), transport=cluster({"GET": (200, DEPLOYMENT), "PATCH": (200, DEPLOYMENT)}, seen))
    patch = seen[1]
    assert patch.url.raw_path.decode().endswith("?fieldManager=a&labelSelector=x&fieldManager=b&dryRun=All")
    assert patch.headers.get_list("content-type") == ["application/merge-patch+json"]


async def test_the_dry_run_sends_header_bytes_as_the_gateway_forwards_them():
    seen = []
    request = gateway_request("/k8s/prod/apis/apps/v1/namespaces/shop/deployments/web", method="PATCH",
                              body=b'{"spec":{"replicas":5}}', content_type="application/merge-patch+json",
                              headers=[("user-agent", "kübectl/v1.33 (linux/amd64)")])
    request = request.evolve(principal=dataclasses.replace(request.principal, username="josé"))
    result = await preview.run(held_request(request, REVIEW), Upstream(),
                               transport=cluster({"GET": (200, DEPLOYMENT), "PATCH": (200, DEPLOYMENT)}, seen))
    assert not result.error and len(seen) == 2
    assert (b"user-agent", "kübectl/v1.33 (linux/amd64)".encode()) in seen[1].headers.raw
    assert (b"Impersonate-User", "airlock:josé".encode()) in seen[1].headers.raw
