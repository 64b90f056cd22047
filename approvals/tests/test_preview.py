"""The dry-run preview: which calls, masking, the diff, and the Holder storing it (cluster: httpx.MockTransport)."""

import asyncio
import json

import httpx
import pytest
from channels.db import database_sync_to_async

from approvals import preview, reviews
from approvals.hold import Holder, held_request
from approvals.models import PreviewState, Review
from approvals.tests.factories import connection, gateway_request, review_rule
from gateway.policy import Decision

DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": "web", "namespace": "shop", "managedFields": [{"manager": "kubectl"}]},
              "spec": {"replicas": 2, "template": {"spec": {"containers": [
                  {"name": "web", "env": [{"name": "API_TOKEN", "value": "ghp_0123456789abcdefghijABCDEFGHIJ012345"}]}]}}}}
REVIEW = Decision("review", 1, "hold-writes", "matched", True, False)


def held(path="/k8s/prod/apis/apps/v1/namespaces/shop/deployments/web", *, method="PATCH",
         body=b'{"spec":{"replicas":5}}', query="fieldManager=kubectl-patch"):
    request = gateway_request(path, method=method, body=body, query=query,
                              content_type="application/strategic-merge-patch+json")
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


def test_dry_run_target_replaces_any_dry_run():
    assert preview.dry_run_target("/p", "dryRun=Bogus&fieldManager=x") == "/p?fieldManager=x&dryRun=All"


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


def test_deletecollection_lists_the_names():
    info = held("/k8s/prod/api/v1/namespaces/shop/pods", method="DELETE", body=None).info
    result = preview.describe(info, None, {"items": [{"metadata": {"name": "b"}}, {"metadata": {"name": "a"}}]})
    assert result.summary == "would delete 2 object(s): a, b"


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_first_holder_stores_the_preview_once(monkeypatch):
    from approvals import hold

    conn = await database_sync_to_async(connection)()
    await database_sync_to_async(review_rule)(conn)

    async def upstream(name):
        return Upstream()

    monkeypatch.setattr("connections.registry.get_upstream", upstream)
    seen = []
    holder = Holder(transport=cluster({"GET": (200, DEPLOYMENT), "DELETE": (200, DEPLOYMENT)}, seen))
    request = held(method="DELETE", body=b"{}", query="")
    review, _ = await database_sync_to_async(reviews.open_review)(request)
    task = await holder.start_preview(request, review.pk)
    assert await holder.start_preview(request, review.pk) is None
    await asyncio.wait_for(task, 10)
    stored = await Review.objects.aget(pk=review.pk)
    assert stored.preview_state == PreviewState.DONE and stored.preview_summary == "would delete deployments/web"
    assert "-  replicas: 2" in stored.preview_diff and "API_TOKEN" in stored.preview_diff
    assert "ghp_0123456789" not in stored.preview_diff
    assert [r.method for r in seen] == ["GET", "DELETE"] and not hold._background
