"""Webhook payloads and delivery decisions (the real worker runs in tests/e2e_approvals/test_celery_worker.py)."""

import httpx
import pytest

from approvals import notify, reviews, tasks
from approvals.tests.factories import connection, review_rule
from approvals.tests.test_reviews import held

SECRET_URL = "https://hooks.slack.example/services/T000/B000/secret-token"


def test_slack_payload_escapes_and_links():
    doc = {"id": 3, "state": "pending", "connection": "prod", "rule": "r", "principal": "a<b>",
           "request": 'delete pods "x"', "url": "https://airlock.example/approvals/reviews/3/", "decided_by": "",
           "reason": ""}
    body = notify.payload("slack", "review.requested", doc)
    assert body["text"] == 'Airlock review 3 needs a decision: a&lt;b&gt; wants to delete pods "x" on prod (rule r)'
    assert body["blocks"][1]["elements"][0]["text"] == "<https://airlock.example/approvals/reviews/3/|Open in Airlock>"
    assert len(notify.payload("slack", "review.requested", {**doc, "url": "/approvals/reviews/3/"})["blocks"]) == 1
    assert notify.payload("json", "review.requested", doc) == {"event": "review.requested", "review": doc}


def test_invalid_webhooks_are_ignored(settings, caplog):
    settings.AIRLOCK_NOTIFY_WEBHOOKS = [{"url": SECRET_URL, "format": "xml"}, "nope", {"url": SECRET_URL}]
    assert notify.webhooks() == [{"url": SECRET_URL, "format": "json"}]
    assert SECRET_URL not in caplog.text


@pytest.fixture
def review(db, settings):
    settings.AIRLOCK_NOTIFY_WEBHOOKS = [{"url": SECRET_URL, "format": "json"}]
    review_rule(connection())
    return reviews.open_review(held())[0]


@pytest.mark.parametrize("status, retried", [(200, False), (400, False), (404, False), (429, True), (500, True)])
def test_what_is_retried(review, monkeypatch, status, retried):
    monkeypatch.setattr(tasks.httpx, "post", lambda url, **kwargs: httpx.Response(status))
    if retried:
        with pytest.raises(tasks.WebhookFailed) as error:
            tasks.deliver_webhook.run(0, "review.requested", review.pk)
        assert SECRET_URL not in str(error.value) and str(status) in str(error.value)
    else:
        assert tasks.deliver_webhook.run(0, "review.requested", review.pk) == status


def test_network_errors_are_retried_without_the_url(review, monkeypatch):
    def down(url, **kwargs):
        raise httpx.ConnectError(f"cannot reach {url}")

    monkeypatch.setattr(tasks.httpx, "post", down)
    with pytest.raises(tasks.WebhookFailed) as error:
        tasks.deliver_webhook.run(0, "review.requested", review.pk)
    assert str(error.value) == "webhook 0: ConnectError" and error.value.__cause__ is None


def test_nothing_to_send_for_unknown_webhooks_or_objects(review):
    assert tasks.deliver_webhook.run(5, "review.requested", review.pk) is None
    assert tasks.deliver_webhook.run(0, "review.requested", 999999) is None
