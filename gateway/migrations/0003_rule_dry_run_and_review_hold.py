"""Rules match dry runs on purpose (dry_run) and say how a review holds a request (review_hold).

Existing rules match dry runs as before and keep holding requests open."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('gateway', '0002_rule_masking_detectors'),
    ]

    operations = [
        migrations.AddField(
            model_name='rule',
            name='dry_run',
            field=models.CharField(choices=[('any', 'Dry runs and real requests alike'), ('only', 'Dry runs only (dryRun=All, kubectl diff)'), ('never', 'Real requests only')], default='any', help_text='Which requests the rule matches: dry runs (dryRun=All, as kube-apiserver reads it), real requests, or both. A dry run is never held: a review rule that matches one denies it.', max_length=8),
        ),
        migrations.AddField(
            model_name='rule',
            name='review_hold',
            field=models.CharField(choices=[('open', 'Hold the request open until a decision (up to AIRLOCK_REVIEW_HOLD_SECONDS)'), ('retry', 'Answer at once; the agent retries once approved')], default='open', help_text='Review rules: hold the request open until a decision, or answer at once with a Status naming the review (the agent runs it again once approved). kubectl prints nothing while a request is held open (exec and attach with stderr show a note there); the presets answer writes at once.', max_length=8),
        ),
    ]
