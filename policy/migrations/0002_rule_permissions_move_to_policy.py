"""The Rule content type moves from the gateway app to the policy app, and its permissions with it.

Users and groups that held ``gateway.view_rule`` (add, change, delete) hold ``policy.view_rule``
afterwards: the content type row is relabelled, so its permissions (and the admin's log entries)
follow.  A fresh database has no such row yet; Django's post_migrate creates the policy one.
"""

from django.db import migrations

MODEL = "rule"


def move(source: str, target: str):
    def run(apps, schema_editor):
        ContentType = apps.get_model("contenttypes", "ContentType")
        Permission = apps.get_model("auth", "Permission")
        using = schema_editor.connection.alias
        old = ContentType.objects.using(using).filter(app_label=source, model=MODEL).first()
        if old is None:
            return
        new = ContentType.objects.using(using).filter(app_label=target, model=MODEL).first()
        if new is None:
            old.app_label = target
            old.save(update_fields=["app_label"])
            return
        # post_migrate already made the target's content type (a migrate that stopped in between):
        # hand each permission's holders to its twin there, or move the permission itself.
        for permission in Permission.objects.using(using).filter(content_type=old):
            twin = Permission.objects.using(using).filter(content_type=new, codename=permission.codename).first()
            if twin is None:
                permission.content_type = new
                permission.save(update_fields=["content_type"])
                continue
            twin.group_set.add(*permission.group_set.all())
            twin.user_set.add(*permission.user_set.all())
            permission.delete()

    return run


class Migration(migrations.Migration):

    dependencies = [
        ("policy", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(move("gateway", "policy"), move("policy", "gateway"))]
