"""Reviewers see plainly when a held request asks for a dry run it does not get: approving it makes the change."""

import dataclasses

import pytest
from django.test import Client

from approvals import reviews
from approvals.tests.factories import connection, review_rule, reviewer
from approvals.tests.test_reviews import held

pytestmark = pytest.mark.django_db

NOTE = ("the delete options in the body hold no dryRun (the query's dryRun is ignored when a DELETE has a body)")


def test_the_queue_the_page_and_the_api_say_it_is_not_a_dry_run():
    review_rule(connection())
    review, _ = reviews.open_review(dataclasses.replace(held(query="dryRun=All"), dry_run_note=NOTE))
    plain, _ = reviews.open_review(held())
    client = Client()
    client.force_login(reviewer("rita"))
    queue = client.get("/approvals/").content.decode()
    assert queue.count("asks for a dry run but is NOT one") == 1
    page = client.get(f"/approvals/reviews/{review.pk}/").content.decode()
    assert "NOT a dry run: approving it makes the change." in page and "is ignored when a DELETE has a body" in page
    assert "NOT a dry run" not in client.get(f"/approvals/reviews/{plain.pk}/").content.decode()
    api = client.get(f"/approvals/api/reviews/{review.pk}/").json()
    assert api["dry_run_note"] == NOTE
