"""The "reviewers" role: a Django group, separate from staff and admin."""

from django.db import migrations

GROUP = "reviewers"
# (model, codename, name): the same rows Django's post_migrate would create later.
PERMISSIONS = [
    ("review", "decide_review", "Can approve or deny held requests"),
    ("review", "view_review", "Can view review"),
    ("lease", "grant_lease", "Can grant, deny and revoke leases"),
    ("lease", "view_lease", "Can view lease"),
]


def create_group(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    group, _ = Group.objects.get_or_create(name=GROUP)
    for model, codename, name in PERMISSIONS:
        content_type, _ = ContentType.objects.get_or_create(app_label="approvals", model=model)
        permission, _ = Permission.objects.get_or_create(
            content_type=content_type, codename=codename, defaults={"name": name}
        )
        group.permissions.add(permission)


def remove_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_group, remove_group)]
