"""Events say whether the request was a dry run.

Added with a constant default (no UPDATE, so the append-only triggers of 0002 do not object); the
canonical document carries ``airlock.dryRun`` only when it is true, so existing events hash as before.
"""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0004_anchor_legacy_chain'),
    ]

    operations = [
        migrations.AddField(
            model_name='auditevent',
            name='dry_run',
            field=models.BooleanField(default=False, help_text='kube-apiserver ran the request as a dry run (dryRun=All): it changed nothing.'),
        ),
    ]
