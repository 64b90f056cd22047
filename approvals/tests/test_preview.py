"""The dry-run preview: which calls, masking, and the diff (the cluster is an httpx.MockTransport)."""

import json
from types import SimpleNamespace

import httpx
import pytest

from approvals import preview
from approvals.models import BodyState

DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": "web", "namespace": "shop", "managedFields": [{"manager": "kubectl"}]},
              "spec": {"replicas": 2}}


def review(**fields):
    values = dict(verb="patch", method="PATCH", resource="deployments", subresource="", name="web",
                  path="/apis/apps/v1/namespaces/shop/deployments/web", query="fieldManager=kubectl-patch",
                  body='{"spec": {"replicas": 5}}', body_state=BodyState.STORED,
                  content_type="application/strategic-merge-patch+json", principal_username="agent-1",
                  principal_groups=["agents"])
    values.update(fields)
    return SimpleNamespace(**values)


class Upstream:
    name = "prod"
    server_url = "https://cluster.test"
    impersonates = False
    impersonation_user_prefix = "airlock:"

    def auth_headers(self):
        return {"Authorization": "Bearer cluster-credential"}


def cluster(answers, seen):
    def handler(request):
        seen.append((request.method, str(request.url), request.headers.get("content-type"), request.content))
        status, body = answers[request.method]
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler)


def test_dry_run_target_replaces_any_dry_run():
    assert preview.dry_run_target("/p", "dryRun=Bogus&fieldManager=x") == "/p?fieldManager=x&dryRun=All"


def test_plan_refuses_what_it_cannot_preview():
    assert "does not change" in preview.plan(review(verb="get"))
    assert "not stored" in preview.plan(review(body_state=BodyState.WITHHELD))
    current, dry = preview.plan(review(verb="delete", method="DELETE", body="", body_state=BodyState.NONE))
    assert current.target == "/apis/apps/v1/namespaces/shop/deployments/web" and dry.body is None


@pytest.mark.asyncio
async def test_patch_preview_diffs_current_against_the_dry_run():
    after = json.loads(json.dumps(DEPLOYMENT))
    after["spec"]["replicas"] = 5
    seen = []
    result = await preview.run(review(), Upstream(), transport=cluster({"GET": (200, DEPLOYMENT), "PATCH": (200, after)}, seen))
    assert result.summary == "would change deployments/web" and not result.error
    assert "-  replicas: 2\n+  replicas: 5\n" in result.diff and "managedFields" not in result.diff
    assert seen[1][:3] == ("PATCH", "https://cluster.test/apis/apps/v1/namespaces/shop/deployments/web"
                                    "?fieldManager=kubectl-patch&dryRun=All", "application/strategic-merge-patch+json")


@pytest.mark.asyncio
async def test_secret_values_never_reach_the_diff():
    secret = {"kind": "Secret", "metadata": {"name": "db"}, "data": {"password": "aHVudGVyMg=="}}
    seen = []
    result = await preview.run(
        review(verb="delete", method="DELETE", resource="secrets", name="db", body="", body_state=BodyState.NONE,
               path="/api/v1/namespaces/shop/secrets/db"),
        Upstream(), transport=cluster({"GET": (200, secret), "DELETE": (200, secret)}, seen),
    )
    assert result.summary == "would delete secrets/db"
    assert "aHVudGVyMg==" not in result.diff and "password: '*** (masked)'" in result.diff


@pytest.mark.asyncio
async def test_refusals_and_unreachable_clusters_are_reported_not_raised():
    invalid = {"kind": "Status", "reason": "Invalid", "message": "spec.replicas: must be >= 0"}
    result = await preview.run(review(), Upstream(), transport=cluster({"GET": (200, DEPLOYMENT), "PATCH": (422, invalid)}, []))
    assert result.summary == "the dry run was refused" and "must be >= 0" in result.error

    def down(request):
        raise httpx.ConnectError("refused")

    result = await preview.run(review(), Upstream(), transport=httpx.MockTransport(down))
    assert result.error == "the cluster could not be asked (ConnectError)"


def test_deletecollection_lists_the_names():
    result = preview.describe(review(verb="deletecollection", name=""), None,
                              {"items": [{"metadata": {"name": "b"}}, {"metadata": {"name": "a"}}]})
    assert result.summary == "would delete 2 object(s): a, b"
