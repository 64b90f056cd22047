"""Rule admin: list, validation in the form, YAML export action, preset and import views."""

import json

import pytest
import yaml
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from connections.models import Connection
from policy import presets, rulesets
from policy.models import Rule

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:policy_rule_changelist"


def new_connection(name):
    conn = Connection(name=name, server_url="https://k8s.example", bearer_token="not-a-real-token")
    conn.save()
    return conn


@pytest.fixture
def prod():
    return new_connection("prod")


def test_changelist_lists_rules_and_tools(admin_client, prod):
    presets.apply_preset(prod, "read-only")
    response = admin_client.get(reverse(CHANGELIST), {"connection__id__exact": prod.pk, "effect__exact": "deny"})
    assert response.status_code == 200
    body = response.content.decode()
    assert "no-exec-attach-portforward" in body
    assert "read-all" not in body
    assert reverse("admin:policy_rule_apply_preset") in body
    assert reverse("admin:policy_rule_import") in body


def test_add_form_validates_rules(admin_client, prod):
    url = reverse("admin:policy_rule_add")
    form = admin_client.get(url)
    assert form.status_code == 200
    data = {
        "connection": prod.pk, "order": 10, "name": "exec", "description": "", "enabled": "on",
        "effect": "allow", "subjects": '["*"]', "groups": "[]", "verbs": '["exec"]', "api_groups": '[""]',
        "resources": '["pods"]', "namespaces": '["*"]', "names": '["*"]', "non_resource_urls": "[]",
        "mask_secrets": "on", "min_approvals": 1, "reviewer_groups": "[]", "dry_run": "any", "review_hold": "open",
    }
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert "pods/exec" in response.content.decode()
    assert not Rule.objects.exists()
    response = admin_client.post(url, data | {"verbs": '["create"]', "resources": '["pods/exec"]'})
    assert response.status_code == 302
    assert Rule.objects.get().resources == ["pods/exec"]


def test_export_action(admin_client, prod):
    presets.apply_preset(prod, "read-only")
    selected = list(prod.rules.filter(effect="deny").values_list("pk", flat=True))
    response = admin_client.post(
        reverse(CHANGELIST), {"action": "export_yaml", "_selected_action": selected}
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/yaml")
    assert 'filename="prod-rules.yaml"' in response["Content-Disposition"]
    document = yaml.safe_load(response.content)
    assert [r["name"] for r in document["rules"]] == [
        "no-exec-attach-portforward", "no-proxy", "no-serviceaccount-tokens", "read-only-no-writes",
    ]
    staging = new_connection("staging")
    rulesets.import_text(staging, response.content)
    assert staging.rules.count() == 4


def test_export_action_needs_one_connection(admin_client, prod):
    presets.apply_preset(prod, "read-only")
    presets.apply_preset(new_connection("staging"), "read-only")
    response = admin_client.post(
        reverse(CHANGELIST),
        {"action": "export_yaml", "_selected_action": list(Rule.objects.values_list("pk", flat=True))},
        follow=True,
    )
    assert "Select rules of exactly one connection" in response.content.decode()


def test_apply_preset_view(admin_client, prod):
    url = reverse("admin:policy_rule_apply_preset")
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, {"connection": prod.pk, "preset": "production-guardrails", "everyone": "on"})
    assert response.status_code == 302
    assert prod.rules.count() == len(presets.PRODUCTION_GUARDRAILS["rules"])
    response = admin_client.post(url, {"connection": prod.pk, "preset": "read-only", "everyone": "on"})
    assert response.status_code == 200
    assert "already has a rule with this name" in response.content.decode()
    assert not prod.rules.filter(name="read-only-no-writes").exists()
    response = admin_client.post(url, {"connection": prod.pk, "preset": "read-only", "everyone": "on", "replace": "on"})
    assert response.status_code == 302
    assert prod.rules.filter(name="read-only-no-writes").exists()
    assert not prod.rules.filter(name="review-writes").exists()


def test_import_view(admin_client, prod):
    url = reverse("admin:policy_rule_import")
    good = json.dumps(presets.READ_ONLY).encode()  # JSON is YAML
    response = admin_client.post(
        url, {"connection": prod.pk, "file": SimpleUploadedFile("rules.yaml", good)}
    )
    assert response.status_code == 302
    assert prod.rules.count() == len(presets.READ_ONLY["rules"])
    bad = good.replace(b'"effect": "deny"', b'"effect": "block"')
    response = admin_client.post(
        url, {"connection": prod.pk, "file": SimpleUploadedFile("rules.yaml", bad), "replace": "on"}
    )
    assert response.status_code == 200
    assert "rule 2 &quot;no-exec-attach-portforward&quot;: effect:" in response.content.decode()
    assert prod.rules.count() == len(presets.READ_ONLY["rules"])


def test_tools_need_add_permission(client, prod):
    viewer = User.objects.create_user("viewer", password="pw-for-tests-only", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_rule"))
    client.force_login(viewer)
    assert client.get(reverse(CHANGELIST)).status_code == 200
    for name in ("admin:policy_rule_apply_preset", "admin:policy_rule_import"):
        assert client.post(reverse(name), {"connection": prod.pk, "preset": "read-only"}).status_code == 403
    assert not Rule.objects.exists()


def test_replace_needs_delete_permission(client, prod):
    editor = User.objects.create_user("editor", password="pw-for-tests-only", is_staff=True)
    editor.user_permissions.add(*Permission.objects.filter(codename__in=["view_rule", "add_rule"]))
    client.force_login(editor)
    url = reverse("admin:policy_rule_apply_preset")
    assert client.post(url, {"connection": prod.pk, "preset": "read-only", "everyone": "on", "replace": "on"}).status_code == 403
    assert client.post(url, {"connection": prod.pk, "preset": "read-only", "everyone": "on"}).status_code == 302
    assert prod.rules.count() == len(presets.READ_ONLY["rules"])
