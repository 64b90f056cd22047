"""Migration 0005 on rows stored before it: exec command words in the stored query get masked."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE, AFTER = ("approvals", "0004_review_preview"), ("approvals", "0005_review_exact_request")


def migrate(target):
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    return executor.loader.project_state([target]).apps


@pytest.fixture(autouse=True)
def back_to_the_latest_schema():
    """Later tests need every migration applied, not only those up to AFTER."""
    yield
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_0005_masks_stored_exec_commands_and_keeps_the_content_type():
    old = migrate(BEFORE).get_model("approvals", "Review")
    row = old.objects.create(
        connection="prod", rule_name="r", principal_subject="a", principal_username="a", method="GET", verb="get",
        path="/api/v1/namespaces/shop/pods/web/exec", description="d", fingerprint="f" * 64, exact="e" * 64,
        query="command=mysql&command=--password&command=Hunter2-Sup3r&container=app",
        content_type="application/json",
    )
    new = migrate(AFTER).get_model("approvals", "Review").objects.get(pk=row.pk)
    assert new.query == "command=mysql&command=--password&command=%2A%2AAIRLOCK-MASKED%2A%2A&container=app"
    assert new.headers == [["content-type", "application/json"]] and new.window_key == "f" * 64
