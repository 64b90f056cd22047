"""Keyed chain: each event's HMAC and key id, checkpoints' key id, and signed anchors.

The new columns are added with constant defaults (no UPDATE, so the append-only triggers of 0002
do not object); rows written before this have an empty ``key_id`` (the legacy rule of
verify_chain, and migration 0004).  On PostgreSQL the anchor table gets the same triggers as the
checkpoints: no UPDATE, DELETE or TRUNCATE.
"""

from django.db import migrations, models

TABLE = "audit_anchor"


def install(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"""
CREATE TRIGGER {TABLE}_no_update BEFORE UPDATE ON {TABLE}
  FOR EACH ROW EXECUTE FUNCTION audit_refuse();
CREATE TRIGGER {TABLE}_no_delete BEFORE DELETE ON {TABLE}
  FOR EACH ROW EXECUTE FUNCTION audit_refuse();
CREATE TRIGGER {TABLE}_no_truncate BEFORE TRUNCATE ON {TABLE}
  FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse();
""", params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for suffix in ("no_update", "no_delete", "no_truncate"):
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {TABLE}_{suffix} ON {TABLE}")


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0002_append_only_triggers'),
    ]

    operations = [
        migrations.CreateModel(
            name='Anchor',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('seq', models.BigIntegerField(db_index=True)),
                ('hash', models.CharField(max_length=64)),
                ('created_at', models.DateTimeField()),
                ('reason', models.CharField(choices=[('schedule', 'Schedule'), ('shutdown', 'Shutdown'), ('manual', 'Manual'), ('legacy', 'Legacy')], max_length=16)),
                ('key_id', models.CharField(max_length=16)),
                ('mac', models.CharField(max_length=64)),
            ],
            options={
                'ordering': ['seq', 'id'],
            },
        ),
        migrations.AddField(
            model_name='auditevent',
            name='clamped',
            field=models.JSONField(blank=True, default=list, help_text='Fields whose values arrived out of range or malformed and were clamped.'),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='key_id',
            field=models.CharField(blank=True, max_length=16),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='mac',
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name='checkpoint',
            name='key_id',
            field=models.CharField(blank=True, max_length=16),
        ),
        migrations.RunPython(install, uninstall),
    ]
