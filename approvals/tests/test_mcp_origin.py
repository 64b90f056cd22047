"""Reviews of requests an MCP tool call sent are marked with their origin wherever reviewers look."""

import io

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from approvals import reviews
from approvals.hold import held_request
from approvals.tests.factories import gateway_request, reviewer
from approvals.tests.test_reviews import DELETE_PATH, held, rule  # noqa: F401 (fixture)
from gateway.pipeline import InProcessCaller
from policy.evaluate import evaluate
from policy.models import Rule

pytestmark = pytest.mark.django_db

CALLER = InProcessCaller(origin="mcp", parent_id="0b0f7c9d-8a51-4f39-9c4e-0d0b8b6c0b0f", detail="delete_resource")


def held_from_mcp():
    request = gateway_request(DELETE_PATH, method="DELETE").evolve(caller=CALLER)
    decision = evaluate([r.compile("prod") for r in Rule.objects.all()], request.principal, request.info)
    return held_request(request, decision)


def test_the_origin_is_stored_and_shown_in_the_dashboard_the_api_and_the_command_line(rule, client):  # noqa: F811
    plain, _ = reviews.open_review(held())
    review, _ = reviews.open_review(held_from_mcp())
    assert (plain.origin, review.origin) == ("", "mcp: delete_resource")
    client.force_login(reviewer("sam"))
    queue = client.get("/approvals/").content.decode()
    assert "via mcp: delete_resource" in queue
    page = client.get(f"/approvals/reviews/{review.pk}/").content.decode()
    assert 'id="review-origin"' in page and "mcp: delete_resource" in page
    api = APIClient()
    api.force_authenticate(reviewer("rita"))
    assert api.get(f"/approvals/api/reviews/{review.pk}/").json()["origin"] == "mcp: delete_resource"
    out = io.StringIO()
    call_command("review", "show", str(review.pk), stdout=out)
    assert "Via        mcp: delete_resource" in out.getvalue()
