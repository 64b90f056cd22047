"""Rule moved from the gateway app to the policy app without touching its table, and rights moved with it.

The database is taken back to the last gateway-only state (gateway 0003, no policy migrations),
written there through the historical models (a rule, and users and groups holding gateway.*_rule
permissions), then migrated forward as an existing installation would be.
"""

import pytest
from django.apps import apps as installed
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from policy.cache import load_compiled_rules
from policy.models import Rule

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("gateway", "0003_rule_dry_run_and_review_hold"), ("policy", None)]
RULE = dict(
    order=7, name="keep-web", description="no deleting web", enabled=True, effect="deny", subjects=["agent-*"],
    groups=["agents"], verbs=["delete"], api_groups=["apps"], resources=["deployments"], namespaces=["shop"],
    names=["web"], non_resource_urls=[], dry_run="never", requires_lease=False, review_hold="retry",
    min_approvals=2, reviewer_groups=["sre"], mask_secrets=False, masking_detectors={"disabled": ["jwt"]},
)


def migrate(targets):
    MigrationExecutor(connection).migrate(targets)
    ContentType.objects.clear_cache()


def forward():
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


@pytest.fixture
def before():
    """The historical models of an installation that predates the policy app."""
    migrate(BEFORE)
    loader = MigrationExecutor(connection).loader
    others = [node for node in loader.graph.leaf_nodes() if node[0] not in ("gateway", "policy")]
    yield loader.project_state([*others, BEFORE[0]]).apps
    forward()  # whatever the test did, leave the schema as the other tests expect it


def old_rule(apps):
    Connection = apps.get_model("connections", "Connection")
    conn = Connection.objects.create(name="prod", server_url="https://cluster.test")
    return apps.get_model("gateway", "Rule").objects.create(connection=conn, **RULE)


def old_permission(apps, codename):
    return apps.get_model("auth", "Permission").objects.get(content_type__app_label="gateway", codename=codename)


def test_the_table_and_its_rows_stay_and_the_policy_app_reads_them(before):
    row = old_rule(before)
    created = row.created_at

    forward()

    rule = Rule.objects.get(pk=row.pk)
    assert Rule._meta.db_table == "gateway_rule"
    assert {field: getattr(rule, field) for field in RULE} == RULE
    assert (rule.connection.name, rule.created_at) == ("prod", created)
    assert [(r.id, r.name, r.effect, r.broken) for r in load_compiled_rules("prod")] == [
        (row.pk, "keep-web", "deny", False)]
    rule.order = 8
    rule.save()
    assert Rule.objects.get(pk=row.pk).order == 8


def test_users_and_groups_keep_their_rule_permissions(before):
    apps = before
    editor = apps.get_model("auth", "User").objects.create(username="editor", is_staff=True)
    editor.user_permissions.add(old_permission(apps, "change_rule"))
    viewers = apps.get_model("auth", "Group").objects.create(name="viewers")
    viewers.permissions.add(old_permission(apps, "view_rule"))
    viewer = apps.get_model("auth", "User").objects.create(username="viewer", is_staff=True)
    viewer.groups.add(viewers)

    forward()

    editor, viewer = User.objects.get(username="editor"), User.objects.get(username="viewer")
    assert editor.has_perm("policy.change_rule") and not editor.has_perm("policy.delete_rule")
    assert viewer.has_perm("policy.view_rule") and not viewer.has_perm("policy.change_rule")
    assert not editor.has_perm("gateway.change_rule")
    assert not ContentType.objects.filter(app_label="gateway", model="rule").exists()
    assert ContentType.objects.get_for_model(Rule).app_label == "policy"


def test_rights_move_too_when_the_policy_permissions_already_exist(before):
    """A migrate that stopped after policy 0001 let post_migrate make policy's content type and permissions."""
    apps = before
    editor = apps.get_model("auth", "User").objects.create(username="editor", is_staff=True)
    editor.user_permissions.add(old_permission(apps, "change_rule"), old_permission(apps, "view_rule"))
    migrate([("gateway", "0004_rule_moves_to_policy")])
    create_permissions(installed.get_app_config("policy"), verbosity=0)  # as post_migrate does

    forward()

    editor = User.objects.get(username="editor")
    assert editor.has_perm("policy.change_rule") and editor.has_perm("policy.view_rule")
    assert not editor.has_perm("policy.add_rule")
    assert list(editor.user_permissions.values_list("content_type__app_label", flat=True)) == ["policy", "policy"]
