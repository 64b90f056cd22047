"""Reviews say when a held request asks for a dry run that is not one (the reviewer approves the change itself)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('approvals', '0006_review_release_token'),
    ]

    operations = [
        migrations.AddField(
            model_name='review',
            name='dry_run_note',
            field=models.TextField(blank=True, help_text='Why a request that asks for a dry run is held as the change itself (gateway.dryrun).'),
        ),
    ]
