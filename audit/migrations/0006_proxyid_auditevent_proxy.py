"""Events name the trusted proxy that asserted their user (Impersonate-User/-Group, identity.proxies).

Added with a constant default (no UPDATE, so the append-only triggers of 0002 do not object); the
canonical document carries ``impersonatedUser`` only when a proxy is named, so existing events hash
as before.
"""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0005_auditevent_dry_run'),
    ]

    operations = [
        migrations.AddField(
            model_name='auditevent',
            name='proxy_username',
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='proxy_uid',
            field=models.TextField(blank=True, help_text="The proxy's subject."),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='proxy_issuer',
            field=models.TextField(blank=True),
        ),
    ]
